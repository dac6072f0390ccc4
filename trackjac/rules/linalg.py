"""Linear algebra.

Products contract first and broadcast second: ``(A @ B)[i, j]`` depends on the
union of row ``i`` of ``A`` and column ``j`` of ``B``, so the work is
proportional to the result's pattern, never to ``m * n * k`` pairs.
Factorizations and solvers are dense within each batch matrix.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..provenance import Provenance, scatter, union
from ..dtypes import DIFFERENTIABLE
from .registry import register, rule
from .shapes import bcast, codes, reduce, union_opt

aten = torch.ops.aten


def _contract(prov: Optional[Provenance], shape, dims, as_shape, out_shape) -> Optional[Provenance]:
    """Reduce ``dims`` of an operand, view the result as ``as_shape``, broadcast to ``out_shape``."""
    if prov is None:
        return None
    return bcast(reduce(prov, shape, dims), as_shape, out_shape)


def _scaled_out(call):
    """``beta * self + alpha * product``: ``beta == 0`` ignores ``self`` (documented: not even its
    nan/inf propagate), ``alpha == 0`` the product."""
    return call.bound.get("beta", 1) == 0, call.bound.get("alpha", 1) == 0


def _live(call, a) -> torch.Tensor:
    """Entries that connect the other factor: nonzero, carrying provenance, or varying (a tensor
    computed from tracked values without a derivative, or drawn at random: a zero here is not one
    at another point).  In a tensor that carries provenance, an entry without any is structurally
    constant (``softmax`` of a constant ``-inf``)."""
    if call.varies(a) and call.prov(a) is None:   # a mask made from tracked values, or at random
        return torch.ones(a.shape, dtype=torch.bool, device=a.device)
    live = call.value(a) != 0
    p = call.prov(a)
    if p is not None:
        live |= (p.lengths() > 0).reshape(live.shape)
    return live


def _is_sparse(a) -> bool:
    return isinstance(a, torch.Tensor) and a.layout != torch.strided


def _stored(call, a, shape3) -> tuple:
    """``(t, i, k)`` of the entries of a sparse operand that connect the other factor: its stored
    entries (entries that are not stored are constant zeros), less the stored exact zeros when
    ``call.drops_zeros``.  ``shape3``: the operand viewed as ``(batch, rows, cols)``."""
    c = a.to_sparse_coo() if a.layout != torch.sparse_coo else a
    c = c.coalesce()
    if c.dense_dim() == 0:
        idx, vals = c.indices(), c.values()
        if call.drops_zeros:
            idx = idx[:, vals != 0]
        flat = torch.zeros(idx.shape[1], dtype=torch.int64, device=idx.device)
        for d, s in enumerate(a.shape):
            flat = flat * s + idx[d]
    else:   # hybrid: stored blocks as a dense mask
        ones = torch.sparse_coo_tensor(c.indices(), c.values() != 0 if call.drops_zeros
                                       else torch.ones_like(c.values(), dtype=torch.bool), c.shape)
        flat = ones.to_dense().reshape(-1).nonzero().reshape(-1)
    bt, m, k = shape3
    return flat // (m * k), (flat // k) % m, flat % k


def _value_aware_product(call, a, b, o):
    """``(A @ B)[i, j]`` depends on ``B[k, j]`` only where ``A[i, k]`` is live, and vice versa.
    A sparse operand's live entries are its stored entries (see :func:`_stored`).

    Work is one pair per live entry of a factor times the other dimension (``nnz(A) * n``).
    """
    A3 = (a.shape[:-1] if a.dim() > 1 else (1,)) + (a.shape[-1],)
    A3 = (1,) * (3 - len(A3)) + tuple(A3)
    B3 = (b.shape[-2], b.shape[-1]) if b.dim() > 1 else (b.shape[0], 1)
    B3 = (A3[0],) + tuple(B3) if b.dim() < 3 else tuple(b.shape)
    bt, m, k = A3
    n = B3[2]
    dev = o.device
    parts = []
    pb, pa = call.prov(b), call.prov(a)
    ar_n, ar_m = torch.arange(n, device=dev), torch.arange(m, device=dev)
    if pb is not None:
        t, i, kk = _stored(call, a, A3) if _is_sparse(a) else _live(call, a).reshape(A3).nonzero(as_tuple=True)
        out_rows = ((t * m + i) * n)[:, None] + ar_n
        in_rows = ((t * k + kk) * n)[:, None] + ar_n
        parts.append(scatter(pb, out_rows.reshape(-1), o.numel(), in_rows.reshape(-1)))
    if pa is not None:
        t, kk, j = _stored(call, b, B3) if _is_sparse(b) else _live(call, b).reshape(B3).nonzero(as_tuple=True)
        out_rows = (t * m * n + j)[:, None] + ar_m * n
        in_rows = (t * m * k + kk)[:, None] + ar_m * k
        parts.append(scatter(pa, out_rows.reshape(-1), o.numel(), in_rows.reshape(-1)))
    return parts


def _product(call, a_name, b_name, add_name=None):
    a, b = call.bound[a_name], call.bound[b_name]
    o = call.outs[0]
    out = tuple(o.shape)
    no_self, no_prod = _scaled_out(call)
    if no_prod:
        parts = []
        c = call.bound[add_name]
        if isinstance(c, torch.Tensor) and not no_self:
            parts.append(bcast(call.prov(c), c.shape, out))
        return union_opt(parts, o.numel(), o.device)
    if _is_sparse(a) or _is_sparse(b):   # a constant sparse operand: only its stored entries connect
        parts = _value_aware_product(call, a, b, o)
    elif call.drops_zeros and not (_live(call, a).all() and _live(call, b).all()):
        parts = _value_aware_product(call, a, b, o)
    elif a.dim() == 1 and b.dim() == 1:                       # dot
        parts = [_contract(call.prov(a), a.shape, [0], (), out),
                 _contract(call.prov(b), b.shape, [0], (), out)]
    elif b.dim() == 1:                                       # mv
        parts = [_contract(call.prov(a), a.shape, [a.dim() - 1], a.shape[:-1], out),
                 _contract(call.prov(b), b.shape, [0], (), out)]
    else:                                                    # mm / bmm (batch dims already equal)
        nb = a.dim() - 2
        parts = [_contract(call.prov(a), a.shape, [a.dim() - 1], tuple(a.shape[:-1]) + (1,), out),
                 _contract(call.prov(b), b.shape, [b.dim() - 2], tuple(b.shape[:nb]) + (1, b.shape[-1]), out)]
    if add_name is not None and not no_self:
        c = call.bound[add_name]
        if isinstance(c, torch.Tensor):
            parts.append(bcast(call.prov(c), c.shape, out))
    return union_opt(parts, o.numel(), o.device)


@rule(aten.mm, aten.bmm)
def mm(call):
    return _product(call, "self", "mat2")


@rule(aten.mv)
def mv(call):
    return _product(call, "self", "vec")


@rule(aten.dot)
def dot(call):
    return _product(call, "self", "tensor")


@rule(aten.vdot)
def vdot(call):
    return _product(call, "self", "other")


@rule(aten.addmm, aten._addmm_activation, aten._sparse_addmm)
def addmm(call):
    return _product(call, "mat1", "mat2", "self")


@rule(aten._sparse_mm)
def sparse_mm(call):
    """``_sparse_mm(sparse, dense)``; the ``reduce`` overload (``sum``, ``mean``, ``amax`` ...) reads
    the same entries: ``amax``/``amin`` pick one of them, so every stored entry is a candidate."""
    return _product(call, "sparse", "dense")


@rule(aten.baddbmm)
def baddbmm(call):
    return _product(call, "batch1", "batch2", "self")


@rule(aten.addmv)
def addmv(call):
    return _product(call, "mat", "vec", "self")


@rule(aten.addbmm)
def addbmm(call):
    """``self + sum_b batch1[b] @ batch2[b]``."""
    a, b, c = call.bound["batch1"], call.bound["batch2"], call.bound["self"]
    o = call.outs[0]
    out = tuple(o.shape)
    no_self, no_prod = _scaled_out(call)
    parts = [] if no_prod else [_contract(call.prov(a), a.shape, [0, 2], (a.shape[1], 1), out),
                                _contract(call.prov(b), b.shape, [0, 1], (1, b.shape[2]), out)]
    if not no_self:
        parts.append(bcast(call.prov(c), c.shape, out))
    return [union_opt(parts, o.numel(), o.device)]


@rule(aten.addr)
def addr(call):
    """``self + outer(vec1, vec2)``."""
    v1, v2, c = call.bound["vec1"], call.bound["vec2"], call.bound["self"]
    o = call.outs[0]
    out = tuple(o.shape)
    no_self, no_prod = _scaled_out(call)
    parts = [] if no_prod else [bcast(call.prov(v1), (v1.shape[0], 1), out),
                                bcast(call.prov(v2), (1, v2.shape[0]), out)]
    if not no_self:
        parts.append(bcast(call.prov(c), c.shape, out))
    return [union_opt(parts, o.numel(), o.device)]


def batch_dense(call):
    """Each output element depends on every element of the same batch matrix of every input."""
    tensors = [a for a in call.tensor_args() if a.dtype in DIFFERENTIABLE]
    if not tensors:
        return [None] * len(call.outs)
    first = tensors[0]
    nbatch = max(first.dim() - 2, 0)
    res = []
    for o in call.outs:
        if o.dtype not in DIFFERENTIABLE or o.numel() == 0:
            res.append(None)
            continue
        ob = min(nbatch, o.dim())
        parts = []
        for a in tensors:
            p = call.prov(a)
            if p is None:
                continue
            ab = min(nbatch, a.dim())
            red = reduce(p, a.shape, list(range(ab, a.dim())))
            bshape = tuple(a.shape[:ab])
            # align batch dims to the output's (right-aligned), core dims broadcast
            as_shape = (1,) * (ob - ab) + bshape + (1,) * (o.dim() - ob)
            parts.append(bcast(red, as_shape, tuple(o.shape)))
        res.append(union_opt(parts, o.numel(), o.device))
    return res


# dense within each batch matrix; factorizations and structured solves: see .factorizations
register([aten._linalg_eigh, aten.linalg_matrix_exp, aten.geqrf, aten.logdet, aten.det,
          aten.linalg_eig, aten._linalg_eigvals, aten.linalg_ldl_factor_ex, aten.linalg_ldl_solve,
          aten.inverse], batch_dense)


@rule(aten.trace)
def trace(call):
    x = call.bound["self"]
    p = call.prov(x)
    if p is None:
        return [None]
    diag = codes(x.shape, p.device).diagonal().reshape(-1)
    return [scatter(p, torch.zeros_like(diag), 1, diag)]


@rule(aten.linalg_cross, aten.cross)
def cross(call):
    """Cross product along ``dim``: component ``k`` depends on the two other components of each input."""
    o = call.outs[0]
    dim = call.bound.get("dim")
    if dim is None:
        dim = next(i for i, s in enumerate(o.shape) if s == 3)
    dim %= o.dim()
    oc = codes(o.shape, o.device)
    parts = []
    for a in (call.bound["self"], call.bound["other"]):
        p = bcast(call.prov(a), a.shape, o.shape)
        if p is None:
            continue
        others = [oc.roll(-1, dim), oc.roll(-2, dim)]   # component k reads k+1 and k+2 (mod 3)
        parts += [p.gather(idx.reshape(-1)) for idx in others]
    return [union_opt(parts, o.numel(), o.device)]


@rule(aten._cdist_forward)
def cdist(call):
    """``out[..., i, j] = ||x1[..., i, :] - x2[..., j, :]||_p``: rows ``i`` of ``x1`` and ``j`` of ``x2``.
    ``p = 0`` counts nonzeros (no derivative); ``p = inf`` in local mode keeps the components
    whose difference is the maximum."""
    x1, x2, o = call.bound["x1"], call.bound["x2"], call.outs[0]
    p_ = call.bound["p"]
    if p_ == 0:
        return [None]
    batch = tuple(o.shape[:-2])
    R = o.shape[-1]
    if call.local and p_ == float("inf"):
        a, b = call.value(x1), call.value(x2)
        full = tuple(o.shape) + (a.shape[-1],)
        m = ((a.unsqueeze(-2) - b.unsqueeze(-3)).abs() == o.unsqueeze(-1)).expand(full)
        oc = codes(o.shape, o.device).unsqueeze(-1).expand(full)[m]
        parts = []
        for t, ax in ((x1, -2), (x2, -3)):
            pt = call.prov(t)
            if pt is not None:
                shape = batch + tuple(t.shape[-2:])
                src = codes(shape, o.device).unsqueeze(ax).expand(full)[m]
                parts.append(scatter(bcast(pt, t.shape, shape), oc, o.numel(), src))
        return [union_opt(parts, o.numel(), o.device)]
    parts = [_contract(call.prov(x1), x1.shape, [x1.dim() - 1], tuple(x1.shape[:-1]) + (1,), o.shape),
             _contract(call.prov(x2), x2.shape, [x2.dim() - 1], tuple(x2.shape[:-2]) + (1, R), o.shape)]
    return [union_opt(parts, o.numel(), o.device)]


@rule(aten._pdist_forward)
def pdist(call):
    """``pdist``: pair ``(i, j)``, ``i < j``, depends on rows ``i`` and ``j`` (``p = 0``: none;
    ``p = inf`` in local mode: the components whose difference is the maximum)."""
    x, o = call.bound["self"], call.outs[0]
    p_ = call.bound.get("p", 2.0)
    px = call.prov(x)
    if px is None or p_ == 0 or o.numel() == 0:
        return [None]
    n, m = x.shape
    i, j = torch.triu_indices(n, n, 1, device=o.device)
    if call.local and p_ == float("inf"):
        v = call.value(x)
        mask = (v[i] - v[j]).abs() == o.unsqueeze(-1)                      # (pairs, m)
        rows = torch.arange(o.numel(), device=o.device).unsqueeze(-1).expand(-1, m)[mask]
        ci = codes((n, m), o.device)
        return [union([scatter(px, rows, o.numel(), ci[i][mask]),
                       scatter(px, rows, o.numel(), ci[j][mask])], o.numel())]
    r = reduce(px, x.shape, [1])
    return [union([r.gather(i), r.gather(j)], o.numel())]


@rule(aten._trilinear)
def trilinear(call):
    """``_trilinear`` (``bilinear``): each input, unsqueezed at its ``expand`` dims, multiplies the
    others and ``sumdim`` is summed away: an input's elements reach the outputs whose kept
    coordinates they share, through the whole summed range."""
    o = call.outs[0]
    parts = []
    sumdim = sorted(set(call.bound["sumdim"]))
    for name, ex in (("i1", "expand1"), ("i2", "expand2"), ("i3", "expand3")):
        t = call.bound[name]
        pt = call.prov(t)
        if pt is None:
            continue
        shape = list(t.shape)
        for d in sorted(call.bound[ex]):
            shape.insert(d, 1)
        kept = tuple(s for d, s in enumerate(shape) if d not in sumdim)
        parts.append(bcast(reduce(pt, shape, sumdim), kept, o.shape) if sumdim else bcast(pt, kept, o.shape))
    return [union_opt(parts, o.numel(), o.device)]
