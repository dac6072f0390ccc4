"""Sparse Jacobians: detection, coloring, compressed vjp/jvp, decompression.

``jacobian(f, *args)`` = ``jacobian_plan(f, *args)(*args)``:

1. the pattern (``trackjac.jacobian_sparsity``, or one you pass as ``pattern=``);
2. a distance-2 coloring of its rows (``mode="rev"``) or columns (``"fwd"``);
   ``"auto"`` colors both and keeps the side with fewer colors;
3. one batched vjp/jvp per chunk of colors, then a gather per nonzero.

``check_jacobian`` compares random rows and columns with plain autograd.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from .._nesting import Nesting, legacy_output
from ..coloring import DENSE, IDENTITY, Coloring, color_columns, color_rows
from ..errors import DenseColoringWarning, user_stacklevel
from ..tracer.signature import Signature
from .assemble import check_layout
from .constant_part import build_reuse_plan
from .distributed import check_output, distribute
from .paths import PathGuard, scalar_reads
from .plan import Plan
from .products import CompileOption, SameDraws
from .structure import Structure, build_structure, positional
from .verify import JacobianCheckError, compare

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
    "fast": dict(orders=("largest_first", "natural"), polish=1, local_search=False),
    "best": dict(),
}
_COLOR = {"rev": color_rows, "fwd": color_columns}  # the coloring each product needs
_WARN_DENSE = 16  # identity colorings this small are cheap either way: no DenseColoringWarning


# ----------------------------------------------------------------------------
# Coloring choice
# ----------------------------------------------------------------------------


def _symmetric(rows: Tensor, cols: Tensor, n: int) -> bool:
    """Whether a square pattern is structurally symmetric (then row and column colorings coincide)."""
    a = torch.sort(rows * n + cols).values
    b = torch.sort(cols * n + rows).values
    return torch.equal(a, b)


def _check_options(layout, mode: str) -> None:
    check_layout(layout)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")


def _choose(structure: Structure, mode: str, effort: str, seed: int) -> Coloring:
    """Color rows (rev) and/or columns (fwd); "auto" keeps fewer colors (rev on ties:
    one vjp needs a single forward pass, and PyTorch's reverse mode is its fastest path).
    The result's ``mode`` says which product evaluates it. A (nearly) dense pattern gets
    the identity coloring, and from ``_WARN_DENSE`` colors on a :class:`DenseColoringWarning`."""
    if effort not in EFFORT:
        raise ValueError(f"coloring must be one of {tuple(EFFORT)}; got {effort!r}")
    coo = structure.global_coo()  # not cached by the structure, and it is O(nnz)
    col = _pick(coo, mode, dict(EFFORT[effort], seed=seed))
    if col.order == IDENTITY and col.num_colors >= _WARN_DENSE:
        rows, _, (M, N) = coo
        side, dense = ("row", "jacrev") if col.mode == "rev" else ("column", "jacfwd")
        warnings.warn(
            f"coloring cannot save {100 - round(100 * DENSE)}% of the products on this Jacobian pattern "
            f"({M} x {N}, {rows.numel()} structural nonzeros: (nearly) dense), so each {side} gets its own "
            f"color; dense torch.func.{dense} does the same work", DenseColoringWarning, stacklevel=user_stacklevel())
    return col


def _full(mode: str, M: int, N: int) -> Coloring:
    """Identity seeds for a pattern holding all ``M x N`` entries: the side with fewer
    vertices in "auto" (rev on ties, as jacrev)."""
    if mode == "auto":
        mode = "fwd" if N < M else "rev"
    n, axis = (M, "rows") if mode == "rev" else (N, "columns")
    return Coloring(torch.arange(n), n, axis, IDENTITY, n)


def _pick(coo: Tuple[Tensor, Tensor, Tuple[int, int]], mode: str, opts: dict) -> Coloring:
    rows, cols, (M, N) = coo
    if rows.numel() and rows.numel() == M * N:  # entries are distinct: every one is there
        return _full(mode, M, N)  # no bincount or graph over M x N entries
    if mode != "auto":
        return _COLOR[mode](coo, **opts)
    # clique lower bounds: the longest column (rev) and the longest row (fwd)
    lb_rev = int(torch.bincount(cols, minlength=N).max()) if cols.numel() else 0
    lb_fwd = int(torch.bincount(rows, minlength=M).max()) if rows.numel() else 0
    dense_rev, dense_fwd = lb_rev >= DENSE * M, lb_fwd >= DENSE * N
    if dense_rev or dense_fwd:  # a side that cannot save 10% gets identity seeds, at no cost
        if dense_fwd:
            fwd = color_columns(coo, **opts)
            rev = color_rows(coo, **opts) if lb_rev <= fwd.num_colors else None
        else:
            rev = color_rows(coo, **opts)
            fwd = color_columns(coo, **opts) if lb_fwd < rev.num_colors else None
        if fwd is None or rev is None:
            return fwd if rev is None else rev
        return fwd if fwd.num_colors < rev.num_colors else rev
    if M == N and _symmetric(rows, cols, N):  # both sides are the same problem: rev wins ties
        return color_rows(coo, **opts)
    if lb_fwd < lb_rev:  # color the more promising side first; skip the other if it cannot win
        fwd = color_columns(coo, **opts)
        if fwd.num_colors < lb_rev:
            return fwd
        rev = color_rows(coo, **opts)
    else:
        rev = color_rows(coo, **opts)
        if rev.num_colors <= lb_fwd:
            return rev
        fwd = color_columns(coo, **opts)
    return fwd if fwd.num_colors < rev.num_colors else rev


def _plan(f: Callable, structure: Structure, mode: str, effort: str, seed: int, **kwargs) -> Plan:
    col = _choose(structure, mode, effort, seed)
    rev_coloring = None
    if mode == "auto" and kwargs.get("compile") and col.mode == "rev":
        col, rev_coloring = _compiled_tie(structure, col), col
    plan = Plan(f, structure, col.mode, col, **kwargs)
    if mode == "auto" and col.mode == "fwd":   # if f turns out to have no forward-mode derivative
        plan._rev_coloring = ((lambda: rev_coloring) if rev_coloring is not None else
                              (lambda: color_rows(structure.global_coo(), **EFFORT[effort], seed=seed)))
    return plan


class _Call(NamedTuple):
    """What the engine evaluates: ``f`` of positional tensors, and how results are nested."""

    f: Callable
    args: tuple
    sig: Optional[Signature]    # None: f itself, positional tensors, nested like autograd.functional
    out: Any                    # f's output at args


def _call(f: Callable, args: Sequence[Any], kwargs: dict, argnums, has_aux: bool, where: str) -> _Call:
    """``f(*args, **kwargs)`` as the engine sees it: as it is for plain positional tensors (and a
    tensor or tuple output), else as a function of the flat leaves (:class:`Signature`)."""
    sig = Signature(f, args, kwargs, argnums, has_aux, where)
    out = sig.outputs()
    for j, o in enumerate(tree_flatten(out)[0]):
        if not isinstance(o, Tensor):
            raise TypeError(f"{where}: the function must return a tensor or a tuple of tensors (or a pytree "
                            f"of tensors); output leaf {j} is {type(o).__name__}")
    if sig.legacy_in and not kwargs and not has_aux and legacy_output(out):
        return _Call(f, tuple(args), None, out)
    leaves, sig.out_spec = tree_flatten(out)
    return _Call(sig.call, tuple(sig.leaves), sig, tuple(leaves))


def _nesting(c: _Call) -> Optional[Nesting]:
    return None if c.sig is None else c.sig.nesting(tree_unflatten(list(c.out), c.sig.out_spec))


def _structure(c: _Call, pattern: Any, strict: bool, local: bool, constant_zeros: Optional[str]) -> Structure:
    if c.sig is None:
        return build_structure(c.f, c.args, pattern, strict, local, constant_zeros, out=c.out)
    nesting = _nesting(c)
    assert nesting is not None
    if pattern is not None:   # nested like the Jacobian: to the positional nesting of c.f
        pattern = tuple(tuple(r) for r in nesting.grid(pattern, "pattern"))
    st = build_structure(c.f, c.args, pattern, strict, local, constant_zeros, diff_pos=c.sig.diff_pos, out=c.out)
    st.nesting = nesting
    return st


def _compiled_tie(structure: Structure, col: Coloring) -> Coloring:
    """For a compiled plan, the row coloring ``col`` as a column coloring where the pattern is
    symmetric (then it is one). Inductor fuses a batched jvp into one loop over the colors
    and the stencil; the batched vjp's kernel does about twice the work per entry (measured
    on the peer suite's Kuramoto-Sivashinsky and Brusselator, benches/bench_peers.py)."""
    rows, cols, (M, N) = structure.global_coo()
    if M != N or not _symmetric(rows, cols, N):
        return col
    return Coloring(col.colors, col.num_colors, "columns", col.order, col.lower_bound)


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
    compile: CompileOption = False,
    strict: bool = False,
    pattern: Any = None,
    coloring: str = "best",
    verify: bool = False,
    seed: int = 0,
    constant_zeros: str = "keep",
    threads: Optional[int] = None,
    constant_entries: str = "recompute",
    process_group: Any = None,
    output: str = "full",
    argnums: Union[None, int, Sequence[int]] = None,
    has_aux: bool = False,
    **kwargs: Any,
) -> Plan:
    """Detect the pattern of ``f`` at ``args`` and color it once; returns a :class:`Plan`.

    ``plan(*new_args)`` evaluates the sparse Jacobian at new points with the
    same shapes, dtypes and devices (a ``ValueError`` otherwise). The plan uses
    the *global* pattern, valid at every point reached by the same Python
    control flow. If ``f`` branched on a tracked value at ``args`` (a
    ``ControlFlowWarning``), the plan records the values Python read and, at
    each call, runs ``f`` once more (without autograd) to compare them: a call
    at a point that takes another path raises ``PathChangedError``
    (a ``ValueError``); build a new plan there.

    Signatures as in ``torch.func.jacrev``: arguments may be pytrees (dicts, lists, tuples of
    tensors), ``argnums`` (an int or a tuple) selects the differentiated arguments (default:
    every floating tensor), ``kwargs`` are passed to ``f``, and with ``has_aux=True`` ``f``
    returns ``(output, aux)``. ``plan(*args, **kwargs)`` takes the structure it was built for
    and returns the Jacobian nested like :func:`~trackjac.jacobian_sparsity` (``(jacobian,
    aux)`` with ``has_aux``; ``aux`` from the same evaluation, detached). Arguments not
    differentiated are passed to ``f`` at each call.

    Args:
        mode: "rev" (row coloring, batched vjp), "fwd" (column coloring,
            batched jvp) or "auto" (fewer colors; rev on ties).
        layout: torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr or
            torch.sparse_bsc (with ``blocksize``: ``(r, c)``, one per differentiated argument as a
            sequence or a dict by argument position, or a grid [output][argument]; blocks holding
            any structural nonzero are stored). Save and load with ``plan.state_dict()`` and
            :meth:`Plan.from_state`.
        chunk_size: colors per batched vjp/jvp (default: all at once); bounds
            the compressed memory to ``chunk_size x (outputs + inputs)`` values.
        memory_budget: bytes for the seeds and compressed products at a time
            (instead of ``chunk_size``): ``chunk_size = budget // ((outputs +
            inputs) x itemsize)``, at least 1. The batched intermediates of
            ``f`` scale with the chunk too.
        compile: wrap the compressed evaluation in ``torch.compile`` (falls back
            to eager with a warning if compiling fails): True, or a ``torch.compile``
            mode passed through ("reduce-overhead" and "max-autotune" capture CUDA
            graphs on CUDA). With ``mode="auto"``, a compiled plan breaks a tie between
            rows and columns (a symmetric pattern) for forward mode, whose compiled
            batched jvp is the faster kernel on stencils (docs/engine.md).
        strict: passed to ``jacobian_sparsity`` (errors instead of warnings).
        constant_zeros: passed to ``jacobian_sparsity``: "keep" (participation:
            ``x * 0`` keeps its entries) or "drop" (value-aware: zeros that
            depend on nothing are left out; still valid at every point).
        pattern: skip detection and use this pattern (nested like the Jacobian). Its
            validity is yours to ensure; if ``f`` reads tensor values in Python
            (``if t > 0:``, ``item()``), the plan treats every such read as a path
            choice and checks it at each call, as for a traced branch.
        coloring: "best" (several orders, refinement, local search) or "fast".
        verify: compare random rows/columns with autograd at ``args``.
        seed: seed of the coloring's random tie-breaking.
        process_group: a ``torch.distributed`` process group (``torch.distributed.group.WORLD``
            for the default one): every rank builds the same plan and evaluates its share of
            the colors, combined by one sum all-reduce; returns a
            :class:`~trackjac.DistributedPlan` (see docs/scale_out.md). Call on every rank.
        output: with ``process_group``: "full" (the whole Jacobian on every rank) or "rows"
            (a contiguous row block per rank, balanced by nonzeros).
        threads: intra-op threads for evaluation, restored afterwards. ``None``
            (default): calls 2 and 3 time the caller's setting and one thread, and
            the faster is kept (``plan.threads``); torch's pool made small
            products up to 10x slower on a busy machine. ``0``: the caller's
            setting; an int: that many.
        constant_entries: "recompute" (default: every entry comes from the
            products) or "reuse": entries whose value does not depend on the
            differentiated arguments (``jacobian_sparsity(..., classify=True)``)
            are computed once here at ``args``, only the variable entries are
            colored (``plan.num_colors``; ``plan.constant_nnz``,
            ``plan.variable_nnz``), and each call subtracts the constants that
            share a compressed slot with a variable entry. Safe only while
            everything ``f`` reads besides its differentiated arguments is
            unchanged: non-differentiated tensor and number arguments are
            compared with their build-time copies at each call (a
            ``ValueError`` if they differ); closures, module parameters,
            buffers and globals are not guarded, and ``plan.check`` (autograd)
            catches constants they made stale. Falls back to the full coloring
            with a ``RuntimeWarning`` where the subtraction would cancel more
            than half the dtype's digits at ``args``. Needs detection
            (not ``pattern=``).
    """
    if process_group is not None:  # every rank builds the plan and evaluates its share of the colors
        return distribute(lambda: jacobian_plan(
            f, *args, mode=mode, layout=layout, blocksize=blocksize, chunk_size=chunk_size,
            memory_budget=memory_budget, compile=compile, strict=strict, pattern=pattern, coloring=coloring,
            verify=verify, seed=seed, constant_zeros=constant_zeros, threads=threads,
            constant_entries=constant_entries, argnums=argnums, has_aux=has_aux, **kwargs), process_group, output)
    check_output(output)
    _check_options(layout, mode)
    if constant_entries not in ("recompute", "reuse"):
        raise ValueError(f"constant_entries must be 'recompute' or 'reuse'; got {constant_entries!r}")
    if constant_entries == "reuse" and pattern is not None:
        raise ValueError("constant_entries='reuse' classifies the entries by detection; it cannot use pattern=")
    c = _call(f, args, kwargs, argnums, has_aux, "jacobian_plan")
    structure = _structure(c, pattern, strict, False, constant_zeros)
    if structure.traced_reads:   # f branched on a tracked value: check the path at each call
        structure.path = PathGuard(c.f, c.args, structure.traced_reads)
    elif pattern is not None:    # nothing was traced: any value Python reads may choose the path
        reads = scalar_reads(c.f, c.args)
        if reads:
            structure.path = PathGuard(c.f, c.args, reads)
    opts = dict(layout=layout, blocksize=blocksize, chunk_size=chunk_size, memory_budget=memory_budget,
                threads=threads)
    if constant_entries == "reuse":
        plan = build_reuse_plan(
            c.f, c.args, structure, strict, constant_zeros,
            once=lambda st: _plan(c.f, st, mode, "fast", seed, **opts),
            fallback=lambda st: _plan(c.f, st, mode, coloring, seed, compile=compile, **opts),
            color=lambda st: _choose(st, mode, coloring, seed),
            rev_color=lambda st: color_rows(st.global_coo(), **EFFORT[coloring], seed=seed),
            compile=compile, **opts)
    else:
        plan = _plan(c.f, structure, mode, coloring, seed, compile=compile, **opts)
    plan.signature = c.sig
    if verify:
        plan.check(*args, **kwargs)
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
    argnums: Union[None, int, Sequence[int]] = None,
    has_aux: bool = False,
    **kwargs: Any,
):
    """The Jacobian of ``f`` at ``args`` as sparse matrices ``(out.numel(), arg.numel())``.

    Nested like :func:`~trackjac.jacobian_sparsity`: for plain tensor arguments and a tensor
    or tuple output like ``torch.autograd.functional.jacobian`` (a tuple over the
    floating-point tensor arguments when there are several, inside a tuple over outputs when
    ``f`` returns a tuple), else like ``torch.func.jacrev``. Non-floating arguments are passed
    through; ``argnums``, ``has_aux`` (returns ``(jacobian, aux)``), keyword arguments for
    ``f`` and pytree arguments are as in :func:`jacobian_plan`. Values are computed with one batched vjp (``mode="rev"``) or jvp
    (``"fwd"``) per color of the detected pattern, never densely.

    ``local=True`` uses the pattern at this point only (value-dependent
    branches resolved, constant zeros of products dropped unless
    ``constant_zeros="keep"``), which can only drop entries that are zero here.
    Other arguments are as in :func:`jacobian_plan`; the coloring defaults to
    "fast" since it is used once.
    """
    _check_options(layout, mode)
    c = _call(f, args, kwargs, argnums, has_aux, "jacobian")
    structure = _structure(c, pattern, strict, local, constant_zeros)
    plan = _plan(c.f, structure, mode, coloring, seed, layout=layout, blocksize=blocksize,
                 chunk_size=chunk_size, memory_budget=memory_budget)
    plan.signature = c.sig
    draws = SameDraws(plan.device)
    res = plan(*args, **kwargs)
    if verify:
        compare(c.f, c.args, positional(structure.nesting, res[0] if has_aux else res), seed=seed, draws=draws,
                diff_pos=structure.diff_pos)
    return res


def check_jacobian(
    f: Callable,
    *args: Any,
    jac: Any = None,
    rows: int = 8,
    cols: int = 8,
    rtol: Optional[float] = None,
    atol: Optional[float] = None,
    seed: int = 0,
    argnums: Union[None, int, Sequence[int]] = None,
    has_aux: bool = False,
    **kwargs: Any,
) -> None:
    """Compare random rows (vjp of basis vectors) and columns (jvp) of a sparse Jacobian with autograd.

    ``jac`` defaults to ``trackjac.jacobian(f, *args)``. Raises
    :class:`JacobianCheckError` naming the first disagreeing entry: a nonzero
    derivative outside the pattern means the pattern missed a dependency (an
    untracked op, a custom ``autograd.Function`` whose backward is not the
    derivative of its forward, a different control-flow path); a mismatch
    inside the pattern means wrong values. Columns are skipped when ``f`` has
    no forward-mode derivative. A random ``f`` (dropout) is compared with the draw
    that ``jac`` was evaluated from when ``jac`` is left to this function; a ``jac``
    you pass was evaluated from some earlier draw, so compare those at a fixed seed. ``argnums``,
    ``has_aux`` and keyword arguments for ``f`` are as in :func:`jacobian_plan` (``jac`` nested
    like the Jacobian). Tolerances default by dtype:
    ``|got - want| <= atol * max(1, max|want|) + rtol * |want|``.
    """
    draws = None
    c = _call(f, args, kwargs, argnums, has_aux, "check_jacobian")
    if jac is None:
        plan = _plan(c.f, _structure(c, None, False, False, None), "auto", "fast", seed)
        draws = SameDraws(plan.device)  # a random f is compared with the draw jac was evaluated from
        plan.signature = c.sig
        jac = plan._run(c.args)[1]
    compare(c.f, c.args, positional(_nesting(c), jac), rows=rows, cols=cols, rtol=rtol, atol=atol, seed=seed,
            draws=draws, diff_pos=None if c.sig is None else c.sig.diff_pos)
