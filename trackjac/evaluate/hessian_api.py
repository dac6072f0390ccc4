"""The public Hessian functions: ``hessian_plan`` (one process or a process group), ``hessian``,
``check_hessian``; the plan itself is :mod:`.hessian`."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple, Union

import torch

from .assemble import check_layout
from .distributed import check_output, distribute
from .paths import PathGuard
from .structure import diff_positions

from .distributed_hessian import DistributedHessianPlan
from .hessian_plans import HessianPlan, _call, _color, _compare_rows, _hessian_grid, build_hessian_structure

__all__ = ["hessian", "hessian_plan", "check_hessian"]


def hessian_plan(
    f: Callable,
    *args: Any,
    layout=torch.sparse_coo,
    blocksize: Optional[Tuple[int, int]] = None,
    chunk_size: Optional[int] = None,
    memory_budget: Optional[int] = None,
    compile: bool = False,
    strict: bool = False,
    pattern: Any = None,
    coloring: str = "auto",
    verify: bool = False,
    constant_zeros: str = "keep",
    process_group: Any = None,
    output: str = "full",
    argnums: Union[None, int, Sequence[int]] = None,
    has_aux: bool = False,
    **kwargs: Any,
) -> HessianPlan:
    """Detect the Hessian pattern of scalar ``f`` at ``args`` and color it once.

    ``plan(*new_args)`` evaluates the sparse Hessian at new points with the same shapes,
    dtypes and devices (a ``ValueError`` otherwise); ``plan.value_and_hessian`` also returns
    the value and the gradient. The pattern is global: valid wherever ``f`` takes the same
    control flow; where ``f`` branched on a tracked value at ``args``, each call checks the
    path as :func:`trackjac.jacobian_plan` does (``PathChangedError``). ``argnums``, ``has_aux``
    (``plan(...)`` returns ``(hessian, aux)``), keyword arguments for ``f`` and pytree arguments
    as in ``torch.func.hessian``; then nested like ``torch.func.hessian``.

    Args:
        layout, blocksize, chunk_size, memory_budget, compile, strict, verify: as in
            :func:`trackjac.jacobian_plan` (a color's memory is a seed and a product, ``2n`` values).
        pattern: skip detection and use this symmetric pattern (nested like the Hessian).
        coloring: "auto" (symmetric coloring where available, else columns), "star",
            "acyclic" or "columns".
        constant_zeros: passed to :func:`trackjac.hessian_sparsity`.
        process_group, output: as in :func:`trackjac.jacobian_plan`: every rank builds the plan and
            evaluates its share of the colors; returns a :class:`~trackjac.DistributedHessianPlan`
            (see docs/scale_out.md). Call on every rank.
    """
    if process_group is not None:  # every rank builds the plan and evaluates its share of the colors
        return distribute(lambda: hessian_plan(
            f, *args, layout=layout, blocksize=blocksize, chunk_size=chunk_size, memory_budget=memory_budget,
            compile=compile, strict=strict, pattern=pattern, coloring=coloring, verify=verify,
            constant_zeros=constant_zeros, argnums=argnums, has_aux=has_aux, **kwargs), process_group, output,
            DistributedHessianPlan)
    check_output(output)
    check_layout(layout)
    g, flat, sig = _call(f, args, kwargs, argnums, has_aux, "hessian_plan")
    structure = build_hessian_structure(g, flat, pattern, strict, local=False, constant_zeros=constant_zeros, sig=sig)
    if structure.traced_reads:   # f branched on a tracked value: check the path at each call
        structure.path = PathGuard(g, flat, structure.traced_reads)
    plan = HessianPlan(g, structure, _color(structure, coloring, "best"), layout=layout, blocksize=blocksize,
                       chunk_size=chunk_size, memory_budget=memory_budget, compile=compile)
    plan.signature = sig
    if verify:
        plan.check(*args, **kwargs)
    return plan


def hessian(
    f: Callable,
    *args: Any,
    layout=torch.sparse_coo,
    blocksize: Optional[Tuple[int, int]] = None,
    chunk_size: Optional[int] = None,
    memory_budget: Optional[int] = None,
    strict: bool = False,
    local: bool = False,
    pattern: Any = None,
    verify: bool = False,
    constant_zeros: Optional[str] = None,
    coloring: str = "auto",
    argnums: Union[None, int, Sequence[int]] = None,
    has_aux: bool = False,
    **kwargs: Any,
):
    """The Hessian of scalar ``f`` at ``args`` as sparse matrices, never densely.

    One argument: ``(n, n)``; several floating tensor arguments: a tuple of tuples of
    ``(arg_a.numel(), arg_b.numel())`` blocks, nested like ``torch.autograd.functional.hessian``.
    ``local=True`` uses the pattern at this point only. Other options (``argnums``, ``has_aux``,
    keyword arguments for ``f``, pytree arguments) as in :func:`hessian_plan`.
    """
    check_layout(layout)
    g, flat, sig = _call(f, args, kwargs, argnums, has_aux, "hessian")
    structure = build_hessian_structure(g, flat, pattern, strict, local, constant_zeros, sig=sig)
    plan = HessianPlan(g, structure, _color(structure, coloring, "fast"), layout=layout, blocksize=blocksize,
                       chunk_size=chunk_size, memory_budget=memory_budget)
    plan.signature = sig
    res = plan(*args, **kwargs)
    if verify:
        plan.check(*args, hess=res[0] if has_aux else res, **kwargs)
    return res


def check_hessian(f: Callable, *args: Any, hess: Any = None, rows: int = 8, rtol: Optional[float] = None,
                  atol: Optional[float] = None, seed: int = 0, argnums: Union[None, int, Sequence[int]] = None,
                  has_aux: bool = False, **kwargs: Any) -> None:
    """Compare random rows of a sparse Hessian with plain autograd (double backward).

    ``hess`` defaults to ``trackjac.hessian(f, *args)``. Raises :class:`trackjac.JacobianCheckError`
    naming the first disagreeing entry ("output" = gradient component). Tolerances as in
    :func:`trackjac.check_jacobian`; ``argnums``, ``has_aux``, keyword arguments for ``f`` and
    pytree arguments as in :func:`hessian_plan` (``hess`` nested like the Hessian).
    """
    if hess is None:
        hess = hessian(f, *args, argnums=argnums, has_aux=has_aux, **kwargs)
        hess = hess[0] if has_aux else hess
    g, flat, sig = _call(f, args, kwargs, argnums, has_aux, "check_hessian")
    pos = diff_positions(flat) if sig is None else sig.diff_pos
    _compare_rows(g, flat, pos, _hessian_grid(hess, None if sig is None else sig.hessian_nesting(), len(pos)),
                  rows, rtol, atol, seed)
