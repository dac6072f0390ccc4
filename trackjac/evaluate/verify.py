"""Verification: compare a sparse Jacobian with plain autograd on random rows and columns."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .products import SameDraws, vjp_rows
from .structure import Spec, bind, diff_positions, output_specs


class JacobianCheckError(AssertionError):
    """The Jacobian disagrees with plain autograd (wrong pattern or wrong derivative)."""


_TOL = {torch.float64: (1e-7, 1e-9), torch.float32: (1e-4, 1e-6)}


def compare(f: Callable, args: Sequence[Any], jac: Any, *, rows: int = 8, cols: int = 8,
            rtol: Optional[float] = None, atol: Optional[float] = None, seed: int = 0,
            draws: Optional[SameDraws] = None, diff_pos: Optional[Sequence[int]] = None) -> None:
    """Compare random rows (vjp of basis vectors) and columns (jvp) of ``jac`` with autograd.

    Raises :class:`JacobianCheckError` naming the first disagreeing entry; the options
    are those of :func:`trackjac.check_jacobian`. ``draws``: the RNG state ``jac`` was
    evaluated from, so that a random ``f`` (dropout) is compared with the same draw;
    by default the state at entry, so that rows and columns at least share one draw.
    ``diff_pos``: the differentiated arguments (default: every floating tensor).
    """
    pos = diff_positions(args) if diff_pos is None else list(diff_pos)
    if draws is None:
        draws = SameDraws(args[pos[0]].device if pos else torch.device("cpu"))
    out_specs, out_tuple = output_specs(f, args)
    in_specs = [Spec.of(args[p]) for p in pos]
    blocks = _jac_grid(jac, len(out_specs), len(pos), out_tuple)
    ro, co = [0], [0]
    for s in out_specs:
        ro.append(ro[-1] + s.shape.numel())
    for s in in_specs:
        co.append(co[-1] + s.shape.numel())
    M, N = ro[-1], co[-1]
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.promote_types(out_specs[0].dtype, in_specs[0].dtype)
    rt, at = _TOL.get(dtype, (1e-2, 1e-3))
    rtol = rt if rtol is None else rtol
    atol = at if atol is None else atol
    g, dargs = bind(f, args, pos)
    dev = in_specs[0].device
    r_idx = torch.randperm(M, generator=gen)[: min(rows, M)]
    c_idx = torch.randperm(N, generator=gen)[: min(cols, N)]
    if r_idx.numel():
        draws()
        want = _reference_rows(g, dargs, out_specs, ro, r_idx, dev)
        got, inpat = _extract(blocks, ro, co, r_idx, axis=0)
        _compare(want, got, inpat, r_idx, ro, co, rtol, atol, axis=0)
    if c_idx.numel():
        try:
            draws()
            want = _reference_cols(g, dargs, in_specs, co, c_idx, dev)
        except Exception:  # no forward-mode rule (e.g. a custom autograd.Function): rows suffice
            return
        got, inpat = _extract(blocks, ro, co, c_idx, axis=1)
        _compare(want, got, inpat, c_idx, ro, co, rtol, atol, axis=1)


def _jac_grid(jac: Any, n_out: int, n_in: int, out_tuple: bool) -> List[List[Tensor]]:
    if out_tuple:
        return [list(r) if n_in > 1 else [r] for r in jac]
    return [list(jac) if n_in > 1 else [jac]]


def _basis(idx: Tensor, offs: List[int], specs: List[Spec], dev) -> Tuple[Tensor, ...]:
    """Unit vectors e_idx split over the tensors of ``specs``: one (len(idx), *shape) each."""
    out = []
    for k, s in enumerate(specs):
        n = s.shape.numel()
        e = torch.zeros(idx.numel(), n, dtype=s.dtype)
        local = idx - offs[k]
        hit = (local >= 0) & (local < n)
        e[hit.nonzero().squeeze(1), local[hit]] = 1
        out.append(e.to(dev).view(idx.numel(), *s.shape))
    return tuple(out)


def _reference_rows(g, dargs, out_specs, ro, r_idx, dev) -> Tensor:
    cot = _basis(r_idx, ro, out_specs, dev)
    try:
        _, vjp_fn = torch.func.vjp(g, *dargs)
        res = torch.func.vmap(vjp_fn)(cot)
    except Exception:  # torch.func cannot transform f: one autograd call per row
        with torch.enable_grad():
            leaves = [a.detach().requires_grad_() for a in dargs]
            res = vjp_rows(g(*leaves), leaves, cot)
    return torch.cat([r.reshape(r_idx.numel(), -1) for r in res], 1).cpu()


def _reference_cols(g, dargs, in_specs, co, c_idx, dev) -> Tensor:
    tan = _basis(c_idx, co, in_specs, dev)

    def jv(*t):
        return torch.func.jvp(g, dargs, t)[1]

    res = torch.func.vmap(jv, randomness="same")(*tan)  # one draw for all columns, as the plans use
    return torch.cat([r.reshape(c_idx.numel(), -1) for r in res], 1).cpu()


def _extract(blocks, ro, co, idx: Tensor, axis: int) -> Tuple[Tensor, Tensor]:
    """Dense rows (axis=0) or columns (axis=1, as rows) of the sparse Jacobian, and its pattern there."""
    M, N = ro[-1], co[-1]
    width = N if axis == 0 else M
    where = torch.full((M if axis == 0 else N,), -1, dtype=torch.long)
    where[idx] = torch.arange(idx.numel())
    vals, inpat = None, torch.zeros(idx.numel(), width, dtype=torch.bool)
    for j, row in enumerate(blocks):
        for i, b in enumerate(row):
            b = _to_coo(b)
            r, c = b.indices().cpu()
            v = b.values().detach().cpu()
            if vals is None:
                vals = torch.zeros(idx.numel(), width, dtype=v.dtype)
            a, o = (r + ro[j], c + co[i]) if axis == 0 else (c + co[i], r + ro[j])
            k = where[a]
            keep = k >= 0
            vals[k[keep], o[keep]] = v[keep]
            inpat[k[keep], o[keep]] = True
    return vals, inpat


def _to_coo(b: Tensor) -> Tensor:
    if b.layout == torch.sparse_coo:
        return b.coalesce()
    if b.layout == torch.sparse_bsr:  # stored blocks, including their structural zeros
        R, C = b.values().shape[1:]
        crow, col = b.crow_indices().cpu(), b.col_indices().cpu()
        brow = torch.repeat_interleave(torch.arange(crow.numel() - 1), crow[1:] - crow[:-1])
        rr = (brow.view(-1, 1, 1) * R + torch.arange(R).view(1, R, 1)).expand(-1, R, C).reshape(-1)
        cc = (col.view(-1, 1, 1) * C + torch.arange(C).view(1, 1, C)).expand(-1, R, C).reshape(-1)
        return torch.sparse_coo_tensor(torch.stack([rr, cc]), b.values().cpu().reshape(-1), b.shape).coalesce()
    return b.to_sparse_coo().coalesce()


def _locate(k: int, offs: List[int]) -> Tuple[int, int]:
    """(tensor number, local index) of stacked index ``k``."""
    t = max(i for i in range(len(offs) - 1) if offs[i] <= k)
    return t, k - offs[t]


def _compare(want, got, inpat, idx, ro, co, rtol, atol, axis: int) -> None:
    want = want.to(got.dtype)
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    bad = (got - want).abs() > atol * scale + rtol * want.abs()
    if not bool(bad.any()):
        return
    a, b = (int(x) for x in bad.nonzero()[0])
    r, c = (int(idx[a]), b) if axis == 0 else (b, int(idx[a]))
    j, rl = _locate(r, ro)
    i, cl = _locate(c, co)
    where = f"output {j} element {rl}, input {i} element {cl}"
    w, g_ = float(want[a, b]), float(got[a, b])
    if not bool(inpat[a, b]):
        raise JacobianCheckError(
            f"d(out)/d(in) = {w:.6g} at {where}, but the sparsity pattern has no entry there. "
            "The pattern missed a dependency: an op the tracker does not model, a custom "
            "autograd.Function whose backward is not the derivative of its forward, or a different "
            "control-flow path than at detection time.")
    raise JacobianCheckError(
        f"Jacobian value {g_:.6g} at {where} differs from autograd's {w:.6g} "
        f"({int(bad.sum())} mismatching entries among the checked {'rows' if axis == 0 else 'columns'}). "
        "A coloring conflict (pattern/derivative disagreement in the same color) or a wrong derivative.")
