"""Factorizations and triangular/structured solves: exact per-element structure.

Each rule states, for output element ``(i, j)`` of a batch matrix, which elements
``(a, c)`` of an input matrix it depends on, as a condition on the four indices
(:func:`by_index`).  The conditions follow the algorithms and match autograd's
view, which is sometimes wider than the algorithm's: a Cholesky factor reads one
triangle, yet autograd returns a symmetric gradient, so both triangles count.

* ``cholesky``: ``L[i, j]`` (``j <= i``) depends on ``A[a, c]`` for ``a, c`` in
  ``{0..j} | {i}``, except ``A[i, i]`` when ``i > j``; ``upper=True`` transposes.
* ``cholesky_inverse``: ``out[i, j]`` depends on ``L[:, c]`` for ``c >= min(i, j)``.
* triangular solves ``T X = B``: row ``r`` of ``X`` depends on the rows of ``B`` and
  the part of ``T`` from ``r`` to the end of the substitution (``r <= a <= c`` for
  an upper ``T``), without the diagonal for unit triangles; ``B``'s columns stay apart.
* LU with partial pivoting: for ``B = A[perm]``, ``LU[i, j]`` depends on ``B[r, c]``
  with ``r <= min(i, j)`` or ``r == i``, and ``c < min(i, j)`` or ``c == j``.  The
  pivoting is a choice made by the values: global mode keeps every row, local mode
  follows the pivots.
* QR: ``Q[:, j]`` depends on ``A[:, :j + 1]`` (the last column of a square-or-wide
  ``Q`` is fixed by the others), ``R[i, j]`` (``i <= j``) on ``A[:, :i + 1]`` and
  ``A[:, j]``.
* Householder products (``householder_product``, ``ormqr``): column ``j`` of ``Q``
  depends on the reflectors ``0..j`` (the strictly lower part of those columns of the
  input) and ``tau[0..j]``.
* SVD with ``full_matrices``: the vectors beyond ``min(m, n)`` have no derivative.
* Statistics outputs of solves and determinants (``LU``, ``pivots``, the residuals
  of ``lstsq``, the sign of ``slogdet``) have no derivative, as in autograd.

Rules cost one boolean of size ``out_matrix x in_matrix`` plus the pattern; above
``MAX_MASK`` elements they fall back to dense-per-matrix (sound, not tight).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..provenance import Provenance, scatter
from .linalg import batch_dense
from .registry import rule
from .shapes import bcast, codes, reduce, union_opt

aten = torch.ops.aten

MAX_MASK = 1 << 24


def _grid(mo, no, mi, ni, device):
    i = torch.arange(mo, device=device).view(-1, 1, 1, 1)
    j = torch.arange(no, device=device).view(1, -1, 1, 1)
    a = torch.arange(mi, device=device).view(1, 1, -1, 1)
    c = torch.arange(ni, device=device).view(1, 1, 1, -1)
    return i, j, a, c


def by_index(call, t, o, cond: Callable, row_map: Optional[torch.Tensor] = None,
             shape=None) -> Optional[Provenance]:
    """Output ``o[..., i, j]`` depends on input ``t[..., a, c]`` where ``cond(i, j, a, c)``.

    ``cond`` gets broadcastable index grids and returns a boolean mask broadcastable to
    ``(mo, no, mi, ni)``, or ``(batch, mo, no, mi, ni)`` when it differs per matrix.
    ``row_map`` ``(batch, mi)``: row ``a`` of the condition is row ``row_map[b, a]`` of the tensor
    (pivoting).  ``shape``: read ``t`` as this shape (same elements, row-major).  Batch dims
    broadcast.
    """
    p = call.prov(t) if isinstance(t, torch.Tensor) else None
    if p is None or o.numel() == 0 or t.numel() == 0:
        return None
    shape = tuple(t.shape) if shape is None else tuple(shape)
    mo, no = o.shape[-2], o.shape[-1]
    mi, ni = shape[-2], shape[-1]
    if mo * no * mi * ni > MAX_MASK:
        return dense(call, t, o, shape=shape)
    device = o.device
    batch = tuple(o.shape[:-2])
    nb = 1
    for d in batch:
        nb *= d
    in_batch = codes(shape[:-2], device).expand(batch).reshape(-1)
    mask = cond(*_grid(mo, no, mi, ni, device))
    if mask.dim() <= 4:
        mask = torch.broadcast_to(mask, (mo, no, mi, ni))
        oi, oj, ia, ic = mask.nonzero(as_tuple=True)
        bi = torch.arange(nb, device=device).repeat_interleave(oi.numel())
        oi, oj, ia, ic = (v.repeat(nb) for v in (oi, oj, ia, ic))
    else:
        mask = torch.broadcast_to(mask.reshape((-1,) + tuple(mask.shape[-4:])), (nb, mo, no, mi, ni))
        bi, oi, oj, ia, ic = mask.nonzero(as_tuple=True)
    if row_map is not None:
        ia = row_map.reshape(-1, mi).expand(nb, mi)[bi, ia]
    out_rows = bi * (mo * no) + oi * no + oj
    in_rows = in_batch[bi] * (mi * ni) + ia * ni + ic
    return scatter(p, out_rows, o.numel(), in_rows)


def dense(call, t, o, t_core: int = 2, o_core: int = 2, shape=None) -> Optional[Provenance]:
    """Every element of ``o``'s matrix (last ``o_core`` dims) depends on every element of the
    matching matrix of ``t`` (last ``t_core`` dims); batch dims broadcast."""
    p = call.prov(t) if isinstance(t, torch.Tensor) else None
    if p is None or o.numel() == 0:
        return None
    shape = tuple(t.shape) if shape is None else tuple(shape)
    t_core, o_core = min(t_core, len(shape)), min(o_core, o.dim())
    red = reduce(p, shape, list(range(len(shape) - t_core, len(shape))))
    bt = shape[:len(shape) - t_core]
    nb_o = o.dim() - o_core
    bt = bt[max(len(bt) - nb_o, 0):]
    as_shape = (1,) * (nb_o - len(bt)) + tuple(bt) + (1,) * o_core
    return bcast(red, as_shape, o.shape)


def _union(o, *parts):
    return union_opt(list(parts), o.numel(), o.device)


def _mT(cond):
    """The condition for the transposed output and input."""
    return lambda i, j, a, c: cond(j, i, c, a)


# -- Cholesky ----------------------------------------------------------------------------
def _chol_lower(i, j, a, c):
    in_s = lambda x: (x <= j) | (x == i)  # noqa: E731
    return (j <= i) & in_s(a) & in_s(c) & ~((a == i) & (c == i) & (i > j))


@rule(aten.cholesky, aten.linalg_cholesky_ex)
def cholesky(call):
    a, o = call.bound["self"], call.outs[0]
    cond = _mT(_chol_lower) if call.bound.get("upper") else _chol_lower
    return by_index(call, a, o, cond)


@rule(aten.cholesky_inverse)
def cholesky_inverse(call):
    t, o = call.bound["self"], call.outs[0]
    if call.bound.get("upper"):
        return [by_index(call, t, o, lambda i, j, a, c: a >= torch.minimum(i, j))]
    return [by_index(call, t, o, lambda i, j, a, c: c >= torch.minimum(i, j))]


def _columns(i, j, a, c):
    return c == j


def _rows(i, j, a, c):
    return a == i


def _everything(i, j, a, c):
    return torch.ones((), dtype=torch.bool, device=i.device)


@rule(aten.cholesky_solve)
def cholesky_solve(call):
    b, f, o = call.bound["self"], call.bound["input2"], call.outs[0]
    return [_union(o, by_index(call, b, o, _columns), by_index(call, f, o, _everything))]


# -- triangular solves ---------------------------------------------------------------------
def _tri_solve(upper: bool, unit: bool, transpose: bool):
    """Conditions for ``op(T) X = B`` (``op`` = transpose or not): on ``T`` and on ``B``."""
    eff_upper = upper != transpose

    def on_t(i, j, a, c):
        if transpose:          # op(T)[a, c] = T[c, a]
            a, c = c, a
        cond = (i <= a) & (a <= c) if eff_upper else (c <= a) & (a <= i)
        return cond & (a != c) if unit else cond

    def on_b(i, j, a, c):
        return (c == j) & ((a >= i) if eff_upper else (a <= i))
    return on_t, on_b


@rule(aten.triangular_solve)
def triangular_solve(call):
    """``triangular_solve(b, A, upper, transpose, unitriangular) -> (X, A.clone())``."""
    b, t = call.bound["self"], call.bound["A"]
    x, clone = call.outs[0], call.outs[1]
    on_t, on_b = _tri_solve(call.bound.get("upper", True), call.bound.get("unitriangular", False),
                            call.bound.get("transpose", False))
    pc = call.prov(t)
    return [_union(x, by_index(call, t, x, on_t), by_index(call, b, x, on_b)),
            None if pc is None else _bcast_to(pc, t, clone)]


def _bcast_to(p, t, o):
    return bcast(p, t.shape, o.shape)


@rule(aten.linalg_solve_triangular)
def solve_triangular(call):
    """``linalg_solve_triangular(A, B, upper, left, unitriangular)``; ``left=False``: ``X A = B``."""
    t, b, x = call.bound["self"], call.bound["B"], call.outs[0]
    upper, unit = call.bound["upper"], call.bound.get("unitriangular", False)
    if call.bound.get("left", True):
        on_t, on_b = _tri_solve(upper, unit, False)
    else:                      # A^T X^T = B^T: transposed problem, transposed output and B
        ct, cb = _tri_solve(upper, unit, True)
        on_t = lambda i, j, a, c: ct(j, i, a, c)  # noqa: E731
        on_b = _mT(cb)
    return [_union(x, by_index(call, t, x, on_t), by_index(call, b, x, on_b))]


# -- general solves ---------------------------------------------------------------------------
def _is_vector_rhs(a, b) -> bool:
    return b.dim() == 1 or (b.dim() == a.dim() - 1 and tuple(b.shape) == tuple(a.shape[:-1]))


@rule(aten.linalg_solve, aten._linalg_solve_ex)
def solve(call):
    """``linalg_solve``/``_linalg_solve_ex(A, B, left)``: ``X`` depends on all of ``A`` and on the
    matching column of ``B`` (row, for ``left=False``); ``LU``/``pivots``/``info`` have none."""
    a, b, x = call.bound["A"], call.bound["B"], call.outs[0]
    vec = _is_vector_rhs(a, b)
    pa = dense(call, a, x, 2, 1 if vec else 2)
    if vec:
        pb = dense(call, b, x, 1, 1)
    else:
        pb = by_index(call, b, x, _columns if call.bound.get("left", True) else _rows)
    return _union(x, pa, pb)


# -- LU --------------------------------------------------------------------------------------
def _lu_cond(global_rows: bool):
    def cond(i, j, r, c):
        k = torch.minimum(i, j)
        cols = (c < k) | (c == j)
        return cols if global_rows else cols & ((r <= k) | (r == i))
    return cond


def _perm(pivots: torch.Tensor, m: int) -> torch.Tensor:
    """Row ``r`` of ``P^T A`` is row ``perm[..., r]`` of ``A`` (LAPACK 1-based sequential swaps)."""
    piv = pivots.reshape(-1, pivots.shape[-1]).to(torch.int64) - 1
    perm = torch.arange(m, device=piv.device).repeat(piv.shape[0], 1)
    rows = torch.arange(piv.shape[0], device=piv.device)
    for t in range(piv.shape[1]):
        a, b = perm[:, t].clone(), perm[rows, piv[:, t]].clone()
        perm[:, t] = b
        perm[rows, piv[:, t]] = a
    return perm


@rule(aten.linalg_lu_factor_ex)
def lu_factor(call):
    """``linalg_lu_factor_ex(A, pivot) -> (LU, pivots, info)``."""
    a, lu = call.bound["A"], call.outs[0]
    pivoted = call.bound.get("pivot", True)
    row_map, cond = None, _lu_cond(False)
    if pivoted:
        if not call.varies(a):
            row_map = _perm(call.outs[1], a.shape[-2])
        else:
            cond = _lu_cond(True)
    return by_index(call, a, lu, cond, row_map)


@rule(aten.linalg_lu)
def linalg_lu(call):
    """``linalg_lu(A, pivot) -> (P, L, U)``: ``L`` is the strictly lower part of the packed LU
    (unit diagonal), ``U`` the upper part."""
    a = call.bound["A"]
    _, low, up = call.outs
    row_map, cond = None, _lu_cond(False)
    if call.bound.get("pivot", True):
        if not call.varies(a):       # P^T A = A[perm]: row r of P^T is e_perm[r]
            row_map = call.outs[0].transpose(-2, -1).argmax(-1).reshape(-1, a.shape[-2])
        else:                                          # the pivoting is a choice made by the values
            cond = _lu_cond(True)
    return [None,
            by_index(call, a, low, lambda i, j, r, c: (i > j) & cond(i, j, r, c), row_map),
            by_index(call, a, up, lambda i, j, r, c: (i <= j) & cond(i, j, r, c), row_map)]


@rule(aten.lu_unpack)
def lu_unpack(call):
    """``lu_unpack(LU, pivots) -> (P, L, U)``: ``L``/``U`` are parts of ``LU`` (data movement)."""
    lu = call.bound["LU_data"]
    _, low, up = call.outs
    return [None,
            by_index(call, lu, low, lambda i, j, a, c: (i > j) & (a == i) & (c == j)),
            by_index(call, lu, up, lambda i, j, a, c: (i <= j) & (a == i) & (c == j))]


@rule(aten.linalg_lu_solve)
def lu_solve(call):
    """``linalg_lu_solve(LU, pivots, B, left, adjoint)`` with ``A = P L U``.

    ``A X = B``: ``X[r]`` depends on the strictly lower part of ``LU`` and the upper part from
    row ``r`` on.  ``A^H X = B``: ``X[perm[s]]`` depends on the upper part and the strictly
    lower part from column ``s`` on.  ``B``: the matching column.  Right-hand forms transpose.
    """
    lu, b, x = call.bound["LU"], call.bound["B"], call.outs[0]
    left, adjoint = call.bound.get("left", True), call.bound.get("adjoint", False)
    transposed = not left
    solve_adjoint = adjoint != transposed   # X A = B  <=>  A^T X^T = B^T
    if not solve_adjoint:
        def on_lu(i, j, a, c):
            return (a > c) | ((a <= c) & (a >= i))
    else:
        pivots = call.bound["pivots"]
        if not call.varies(pivots):
            perm = _perm(call.value(pivots), lu.shape[-2])          # X[perm[s]] = v[s]
            inv = torch.argsort(perm, dim=-1)                       # s = inv[r]

            def on_lu(i, j, a, c):
                s = inv[:, i]                                       # (batch,) + i.shape
                return (a <= c) | ((a > c) & (c >= s))
        else:
            def on_lu(i, j, a, c):
                return (a <= c) | (a > c)
    if transposed:
        on_lu_t = on_lu
        on_lu = lambda i, j, a, c: on_lu_t(j, i, a, c)  # noqa: E731
    pb = by_index(call, b, x, _rows if transposed else _columns)
    return [_union(x, by_index(call, lu, x, on_lu), pb)]


# -- QR and Householder -------------------------------------------------------------------------
@rule(aten.linalg_qr)
def qr(call):
    """``linalg_qr(A, mode) -> (Q, R)``."""
    a = call.bound["A"]
    q, r = call.outs
    m = a.shape[-2]
    k = min(a.shape[-2], a.shape[-1])

    def on_q(i, j, ra, c):
        return torch.where(j < k, c <= torch.clamp(j, max=m - 2), torch.ones_like(c, dtype=torch.bool))

    def on_r(i, j, ra, c):
        return (i <= j) & ((c <= torch.clamp(i, max=m - 2)) | (c == j))
    return [by_index(call, a, q, on_q) if q.numel() else None, by_index(call, a, r, on_r)]


def _reflector_cols(j, k):
    """Reflectors that column ``j`` of ``H_0 ... H_{k-1}`` goes through: ``0..min(j, k-1)``."""
    return torch.clamp(j, max=k - 1)


@rule(aten.linalg_householder_product)
def householder_product(call):
    """``Q = H_0 ... H_{k-1}`` (first ``n`` columns), ``H_c = I - tau_c v_c v_c^H``,
    ``v_c = (0, .., 1, A[c+1:, c])``.  Column ``j`` goes through reflectors ``0..c*``,
    ``c* = min(j, k-1)``; with ``c* = 0`` it is ``e_j - tau_0 v_0 v_0[j]`` (elementwise)."""
    a, tau, q = call.bound["input"], call.bound["tau"], call.outs[0]
    k = tau.shape[-1]

    def on_a(i, j, r, c):
        cs = _reflector_cols(j, k)
        many = (cs >= 1) & (c <= cs) & (r > c)
        first = (cs == 0) & (c == 0) & (((r == i) & (i > 0)) | ((r == j) & (j > 0)))
        return many | first

    def on_tau(i, j, a_, c):   # tau as a (1, k) matrix
        return c <= _reflector_cols(j, k)
    ptau = by_index(call, tau, q, on_tau, shape=tuple(tau.shape[:-1]) + (1, k))
    return [_union(q, by_index(call, a, q, on_a), ptau)]


@rule(aten.ormqr)
def ormqr(call):
    """``ormqr(A, tau, C, left, transpose)``: ``op(Q) C`` or ``C op(Q)`` with ``Q`` the full
    product of the reflectors in ``A``."""
    a, tau, cmat, o = call.bound["self"], call.bound["input2"], call.bound["input3"], call.outs[0]
    left, transpose = call.bound.get("left", True), call.bound.get("transpose", False)
    k = tau.shape[-1]
    # Q^T C reads column i of Q for row i of the result, C Q column l for column l; Q C and
    # C Q^T read whole rows of Q, which go through every reflector.
    pick = (lambda i, j: i) if left and transpose else (lambda i, j: j) if not left and not transpose else None

    def on_a(i, j, r, c):
        top = k - 1 if pick is None else _reflector_cols(pick(i, j), k)
        return (c <= top) & (r > c)

    def on_tau(i, j, a_, c):
        return c <= (k - 1 if pick is None else _reflector_cols(pick(i, j), k))
    on_c = _columns if left else _rows
    ptau = by_index(call, tau, o, on_tau, shape=tuple(tau.shape[:-1]) + (1, k))
    return [_union(o, by_index(call, a, o, on_a), ptau, by_index(call, cmat, o, on_c))]


# -- SVD, pinv, lstsq, determinants -------------------------------------------------------------
@rule(aten._linalg_svd)
def svd(call):
    """``_linalg_svd(A, full_matrices) -> (U, S, Vh)``: vectors beyond ``min(m, n)`` have none."""
    a = call.bound["A"]
    k = min(a.shape[-2], a.shape[-1])
    u, s, vh = call.outs
    res = [
        by_index(call, a, u, lambda i, j, r, c: j < k) if u.numel() else None,
        dense(call, a, s, 2, 1),
        by_index(call, a, vh, lambda i, j, r, c: i < k) if vh.numel() else None,
    ]
    return res


@rule(aten.linalg_pinv)
def pinv(call):
    """``linalg_pinv``: dense, except that in local mode a matrix whose singular values are all
    cut off is the constant zero."""
    a, o = call.bound["self"], call.outs[0]
    p = dense(call, a, o)
    if p is None or not call.local:
        return [p]
    v = call.value(a)
    sv = torch.linalg.eigvalsh(v).abs() if call.bound.get("hermitian") else torch.linalg.svdvals(v)
    smax = sv.amax(-1, keepdim=True) if sv.numel() else sv
    atol, rtol = _tol(call.bound.get("atol"), call), _tol(call.bound.get("rtol"), call)
    if rtol is None:
        rtol = torch.finfo(v.dtype).eps * max(v.shape[-2:]) if atol is None or _all_zero(atol) else 0.0
    atol = 0.0 if atol is None else atol
    cut = torch.maximum(torch.as_tensor(atol, dtype=sv.dtype), torch.as_tensor(rtol, dtype=sv.dtype) * smax)
    kept = (sv > cut).any(-1)                                   # per batch matrix
    if bool(kept.all()):
        return [p]
    keep = kept.reshape(tuple(o.shape[:-2]) + (1, 1)).expand(o.shape).reshape(-1)
    return [p.gather(torch.where(keep, torch.arange(o.numel(), device=o.device), -1))]


def _tol(v, call):
    if isinstance(v, torch.Tensor):
        v = call.value(v)
        return v.unsqueeze(-1) if v.dim() else v
    return v


def _all_zero(v):
    return bool((torch.as_tensor(v) == 0).all())


@rule(aten.linalg_lstsq)
def lstsq(call):
    """``linalg_lstsq(A, B) -> (solution, residuals, rank, singular_values)``: the solution and the
    residual of column ``l`` depend on all of ``A`` and on column ``l`` of ``B``; ``rank`` and the
    singular values have no derivative (autograd)."""
    a, b = call.bound["self"], call.bound["b"]
    x, res, _, sv = call.outs
    vec = _is_vector_rhs(a, b)
    pb = dense(call, b, x, 1, 1) if vec else by_index(call, b, x, _columns)
    px = _union(x, dense(call, a, x, 2, 1 if vec else 2), pb)
    pr = None
    if res.numel():
        rshape = tuple(res.shape[:-1]) + (1, res.shape[-1]) if not vec else tuple(res.shape) + (1,)
        view = torch.empty(rshape, device=res.device)   # residuals as a (1, k) row per matrix
        pr = _union(res, dense(call, a, view, 2, 2),
                    dense(call, b, view, 1, 2) if vec else by_index(call, b, view, _columns))
    return [px, pr, None, None]


@rule(aten._linalg_det, aten.linalg_inv_ex)
def first_only(call):
    """Determinants and friends: the value is dense in its matrix; ``LU``/``pivots``/``sign``
    outputs have no derivative (autograd)."""
    return batch_dense(call)[0]


@rule(aten._linalg_slogdet)
def slogdet(call):
    return [None, batch_dense(call)[1]]
