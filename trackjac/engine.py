"""Sparse Jacobians: detection, coloring, compressed vjp/jvp, decompression.

``jacobian(f, *args)`` = ``jacobian_plan(f, *args)(*args)``:

1. the pattern (``trackjac.jacobian_sparsity``, or one you pass as ``pattern=``);
2. a distance-2 coloring of its rows (``mode="rev"``) or columns (``"fwd"``);
   ``"auto"`` colors both and keeps the side with fewer colors;
3. one batched vjp/jvp per chunk of colors, then a gather per nonzero.

``check_jacobian`` compares random rows and columns with plain autograd.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .coloring import Coloring, _coo, color_columns, color_rows
from .plan import LAYOUTS, Plan, Spec, Structure

__all__ = [
    "jacobian",
    "jacobian_plan",
    "check_jacobian",
    "JacobianCheckError",
    "Plan",
]

MODES = ("auto", "rev", "fwd")
# Coloring effort: a one-shot Jacobian pays for the coloring once, a plan amortizes it.
EFFORT = {
    "fast": dict(orders=("largest_first",), polish=1, local_search=False),
    "best": dict(),
}


class JacobianCheckError(AssertionError):
    """The Jacobian disagrees with plain autograd (wrong pattern or wrong derivative)."""


# ----------------------------------------------------------------------------
# Structure: arguments, outputs, pattern blocks
# ----------------------------------------------------------------------------


def _diff_positions(args: Sequence[Any]) -> List[int]:
    """Positions of the floating-point tensor arguments (the ones differentiated)."""
    pos = []
    for p, a in enumerate(args):
        if isinstance(a, Tensor):
            if a.is_complex():
                raise TypeError(f"argument {p}: complex tensors are not supported; split real and imaginary parts")
            if a.is_floating_point():
                pos.append(p)
    if not pos:
        raise TypeError("no floating-point tensor among the arguments to differentiate")
    return pos


def _outputs(f: Callable, args: Sequence[Any]) -> Tuple[List[Spec], bool]:
    with torch.no_grad():
        out = f(*args)
    out_tuple = isinstance(out, (tuple, list))
    outs = list(out) if out_tuple else [out]
    for j, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"f must return a tensor or a tuple of tensors; output {j} is {type(o).__name__}")
        if not o.is_floating_point():
            raise TypeError(f"output {j} has dtype {o.dtype}; only real floating-point outputs have a Jacobian")
    return [Spec.of(o) for o in outs], out_tuple


def _block_indices(p: Any, shape: Tuple[int, int], where: str) -> Tuple[Tensor, Tensor]:
    """Row-major (rows, cols) of one pattern block, checked against its expected shape."""
    if not isinstance(p, Tensor) or p.dim() != 2:
        raise TypeError(f"pattern {where}: expected a 2-D tensor (sparse or dense); got {type(p).__name__}")
    if tuple(p.shape) != shape:
        raise ValueError(f"pattern {where}: shape {tuple(p.shape)} does not match (out.numel(), arg.numel()) = {shape}")
    rows, cols, m, n = _coo(p)
    if rows.numel() > 1 and not bool(((rows * n + cols)[1:] > (rows * n + cols)[:-1]).all()):
        key = torch.unique(rows * n + cols)  # sorted, duplicates dropped
        rows, cols = key // n, key % n
    return rows, cols


def _grid(patterns: Any, out_specs: List[Spec], in_specs: List[Spec], out_tuple: bool) -> List[List[Tuple[Tensor, Tensor]]]:
    """Pattern blocks as grid[output][input], accepting the nesting of jacobian_sparsity."""
    n_out, n_in = len(out_specs), len(in_specs)

    def seq(x):
        return isinstance(x, (tuple, list))

    if not seq(patterns):
        rows = [[patterns]]
    elif out_tuple or n_out > 1:
        rows = [list(r) if seq(r) else [r] for r in patterns]
    else:
        rows = [list(patterns)]
    if len(rows) != n_out or any(len(r) != n_in for r in rows):
        raise ValueError(f"pattern must be nested like the Jacobian: {n_out} output(s) x {n_in} input(s); "
                         f"got {len(rows)} x {[len(r) for r in rows]}")
    return [
        [_block_indices(p, (out_specs[j].shape.numel(), in_specs[i].shape.numel()), f"[{j}][{i}]")
         for i, p in enumerate(r)]
        for j, r in enumerate(rows)
    ]


def _structure(f: Callable, args: Sequence[Any], pattern: Any, strict: bool, local: bool,
               constant_zeros: Optional[str] = "keep") -> Structure:
    pos = _diff_positions(args)
    out_specs, out_tuple = _outputs(f, args)
    if pattern is None:
        from .sparsity import jacobian_sparsity  # imported late: detection is its own subsystem

        pattern = jacobian_sparsity(f, *args, local=local, strict=strict, constant_zeros=constant_zeros)
    arg_specs = [Spec.of(a) if isinstance(a, Tensor) else None for a in args]
    in_specs = [arg_specs[p] for p in pos]
    blocks = _grid(pattern, out_specs, in_specs, out_tuple)  # type: ignore[arg-type]
    return Structure(len(args), pos, arg_specs, out_specs, out_tuple, blocks)


# ----------------------------------------------------------------------------
# Coloring choice
# ----------------------------------------------------------------------------


def _symmetric(rows: Tensor, cols: Tensor, n: int) -> bool:
    """Whether a square pattern is structurally symmetric (then row and column colorings coincide)."""
    a = torch.sort(rows * n + cols).values
    b = torch.sort(cols * n + rows).values
    return torch.equal(a, b)


def _choose(structure: Structure, mode: str, effort: str, seed: int) -> Tuple[str, Coloring]:
    """Color rows (rev) and/or columns (fwd); "auto" keeps fewer colors (rev on ties:
    one vjp needs a single forward pass, and PyTorch's reverse mode is its fastest path)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if effort not in EFFORT:
        raise ValueError(f"coloring must be one of {tuple(EFFORT)}; got {effort!r}")
    coo = structure.global_coo()
    opts = dict(EFFORT[effort], seed=seed)
    if mode == "rev":
        return "rev", color_rows(coo, **opts)
    if mode == "fwd":
        return "fwd", color_columns(coo, **opts)
    rows, cols, (M, N) = coo
    # clique lower bounds: the longest column (rev) and the longest row (fwd)
    lb_rev = int(torch.bincount(cols, minlength=N).max()) if cols.numel() else 0
    lb_fwd = int(torch.bincount(rows, minlength=M).max()) if rows.numel() else 0
    if M == N and _symmetric(rows, cols, N):  # both sides are the same problem: rev wins ties
        return "rev", color_rows(coo, **opts)
    if lb_fwd < lb_rev:  # color the more promising side first; skip the other if it cannot win
        fwd = color_columns(coo, **opts)
        if fwd.num_colors < lb_rev:
            return "fwd", fwd
        rev = color_rows(coo, **opts)
    else:
        rev = color_rows(coo, **opts)
        if rev.num_colors <= lb_fwd:
            return "rev", rev
        fwd = color_columns(coo, **opts)
    return ("fwd", fwd) if fwd.num_colors < rev.num_colors else ("rev", rev)


def _plan(f: Callable, structure: Structure, mode: str, effort: str, seed: int, **kwargs) -> Plan:
    chosen, col = _choose(structure, mode, effort, seed)
    plan = Plan(f, structure, chosen, col, **kwargs)
    if mode == "auto" and chosen == "fwd":   # if f turns out to have no forward-mode derivative
        plan._rev_coloring = lambda: color_rows(structure.global_coo(), **EFFORT[effort], seed=seed)
    return plan


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def jacobian_plan(
    f: Callable,
    *args: Any,
    mode: str = "auto",
    layout=torch.sparse_coo,
    blocksize: Optional[Tuple[int, int]] = None,
    chunk_size: Optional[int] = None,
    memory_budget: Optional[int] = None,
    compile: bool = False,
    strict: bool = False,
    pattern: Any = None,
    coloring: str = "best",
    verify: bool = False,
    seed: int = 0,
    constant_zeros: str = "keep",
) -> Plan:
    """Detect the pattern of ``f`` at ``args`` and color it once; returns a :class:`Plan`.

    ``plan(*new_args)`` evaluates the sparse Jacobian at new points with the
    same shapes, dtypes and devices (a ``ValueError`` otherwise). The plan uses
    the *global* pattern, valid at every point reached by the same Python
    control flow: a different branch may need a new plan (``verify``/
    ``plan.check`` catch it).

    Args:
        mode: "rev" (row coloring, batched vjp), "fwd" (column coloring,
            batched jvp) or "auto" (fewer colors; rev on ties).
        layout: torch.sparse_coo, torch.sparse_csr or torch.sparse_bsr (with
            ``blocksize=(r, c)``; blocks holding any structural nonzero are stored).
        chunk_size: colors per batched vjp/jvp (default: all at once); bounds
            the compressed memory to ``chunk_size x (outputs + inputs)`` values.
        memory_budget: bytes for the seeds and compressed products at a time
            (instead of ``chunk_size``): ``chunk_size = budget // ((outputs +
            inputs) x itemsize)``, at least 1. The batched intermediates of
            ``f`` scale with the chunk too.
        compile: wrap the compressed evaluation in ``torch.compile`` (falls back
            to eager with a warning if compiling fails).
        strict: passed to ``jacobian_sparsity`` (errors instead of warnings).
        constant_zeros: passed to ``jacobian_sparsity``: "keep" (participation:
            ``x * 0`` keeps its entries) or "drop" (value-aware: zeros that
            depend on nothing are left out; still valid at every point).
        pattern: skip detection and use this pattern (nested like the Jacobian).
        coloring: "best" (several orders, refinement, local search) or "fast".
        verify: compare random rows/columns with autograd at ``args``.
        seed: seed of the coloring's random tie-breaking.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be torch.sparse_coo, torch.sparse_csr or torch.sparse_bsr; got {layout}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    structure = _structure(f, args, pattern, strict, local=False, constant_zeros=constant_zeros)
    plan = _plan(f, structure, mode, coloring, seed, layout=layout, blocksize=blocksize,
                 chunk_size=chunk_size, memory_budget=memory_budget, compile=compile)
    if verify:
        plan.check(*args)
    return plan


def jacobian(
    f: Callable,
    *args: Any,
    layout=torch.sparse_coo,
    blocksize: Optional[Tuple[int, int]] = None,
    mode: str = "auto",
    chunk_size: Optional[int] = None,
    memory_budget: Optional[int] = None,
    strict: bool = False,
    local: bool = False,
    pattern: Any = None,
    coloring: str = "fast",
    verify: bool = False,
    seed: int = 0,
    constant_zeros: Optional[str] = None,
):
    """The Jacobian of ``f`` at ``args`` as sparse matrices ``(out.numel(), arg.numel())``.

    Nested like ``torch.autograd.functional.jacobian``: a tuple over the
    floating-point tensor arguments when there are several, inside a tuple
    over outputs when ``f`` returns a tuple. Non-floating arguments are passed
    through. Values are computed with one batched vjp (``mode="rev"``) or jvp
    (``"fwd"``) per color of the detected pattern, never densely.

    ``local=True`` uses the pattern at this point only (value-dependent
    branches resolved, constant zeros of products dropped unless
    ``constant_zeros="keep"``), which can only drop entries that are zero here.
    Other arguments are as in :func:`jacobian_plan`; the coloring defaults to
    "fast" since it is used once.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be torch.sparse_coo, torch.sparse_csr or torch.sparse_bsr; got {layout}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    structure = _structure(f, args, pattern, strict, local, constant_zeros)
    plan = _plan(f, structure, mode, coloring, seed, layout=layout, blocksize=blocksize,
                 chunk_size=chunk_size, memory_budget=memory_budget)
    jac = plan(*args)
    if verify:
        check_jacobian(f, *args, jac=jac, seed=seed)
    return jac


# ----------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------

_TOL = {torch.float64: (1e-7, 1e-9), torch.float32: (1e-4, 1e-6)}


def check_jacobian(
    f: Callable,
    *args: Any,
    jac: Any = None,
    rows: int = 8,
    cols: int = 8,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    seed: int = 0,
) -> None:
    """Compare random rows (vjp of basis vectors) and columns (jvp) of a sparse Jacobian with autograd.

    ``jac`` defaults to ``trackjac.jacobian(f, *args)``. Raises
    :class:`JacobianCheckError` naming the first disagreeing entry: a nonzero
    derivative outside the pattern means the pattern missed a dependency (an
    untracked op, a custom ``autograd.Function`` whose backward is not the
    derivative of its forward, a different control-flow path); a mismatch
    inside the pattern means wrong values. Columns are skipped when ``f`` has
    no forward-mode derivative. Tolerances default by dtype:
    ``|got - want| <= atol * max(1, max|want|) + rtol * |want|``.
    """
    if jac is None:
        jac = jacobian(f, *args)
    pos = _diff_positions(args)
    out_specs, out_tuple = _outputs(f, args)
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
    full = list(args)

    def g(*dargs):
        for p, a in zip(pos, dargs):
            full[p] = a
        out = f(*full)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    dargs = tuple(args[p] for p in pos)
    dev = in_specs[0].device
    r_idx = torch.randperm(M, generator=gen)[: min(rows, M)]
    c_idx = torch.randperm(N, generator=gen)[: min(cols, N)]
    if r_idx.numel():
        want = _reference_rows(g, dargs, out_specs, ro, r_idx, dev)
        got, inpat = _extract(blocks, ro, co, r_idx, axis=0)
        _compare(want, got, inpat, r_idx, ro, co, rtol, atol, axis=0)
    if c_idx.numel():
        try:
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
            outs = g(*leaves)
            live = [j for j, o in enumerate(outs) if o.requires_grad]
            per = []
            for k in range(r_idx.numel()):
                gr = torch.autograd.grad([outs[j] for j in live], leaves, [cot[j][k] for j in live],
                                         retain_graph=True, allow_unused=True) if live else [None] * len(leaves)
                per.append([torch.zeros_like(a) if x is None else x for a, x in zip(leaves, gr)])
            res = tuple(torch.stack([p[i] for p in per]) for i in range(len(leaves)))
    return torch.cat([r.reshape(r_idx.numel(), -1) for r in res], 1).cpu()


def _reference_cols(g, dargs, in_specs, co, c_idx, dev) -> Tensor:
    tan = _basis(c_idx, co, in_specs, dev)

    def jv(*t):
        return torch.func.jvp(g, dargs, t)[1]

    res = torch.func.vmap(jv)(*tan)
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
