"""``assert_pattern_sound`` and ``assert_jacobian_close``: trackjac against the dense autograd Jacobian."""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._sparse import structural_coo
from ..dtypes import FLOATING
from ..errors import ControlFlowWarning
from ..evaluate import jacobian
from ..tracer import jacobian_sparsity

__all__ = ["assert_pattern_sound", "assert_jacobian_close"]

# as trackjac.check_jacobian: |got - want| <= atol * max(1, max|want|) + rtol * |want|
_TOL = {torch.float64: (1e-7, 1e-9), torch.float32: (1e-4, 1e-6)}
_LOW_TOL = (1e-2, 1e-3)   # float16, bfloat16


# ----------------------------------------------------------------------------
# The dense reference and the nesting of patterns
# ----------------------------------------------------------------------------


def _floating(args: Sequence[Any]) -> List[int]:
    pos = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.dtype in FLOATING]
    if not pos:
        raise TypeError("no floating-point tensor among the arguments: nothing to differentiate")
    return pos


def _outputs(out: Any) -> Tuple[List[Tensor], bool]:
    is_tuple = isinstance(out, (tuple, list))
    outs = list(out) if is_tuple else [out]
    for j, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"the function must return a tensor or a tuple of tensors; output {j} is "
                            f"{type(o).__name__}")
    return outs, is_tuple


def _dense_table(f: Callable, args: Sequence[Any], pos: List[int]) -> List[List[Tensor]]:
    """``table[i][j]``: d output i / d floating argument j, as ``(out.numel(), arg.numel())``."""
    def g(*xs):
        full = list(args)
        for k, x in zip(pos, xs):
            full[k] = x
        outs, _ = _outputs(f(*full))
        # autograd.functional.jacobian refuses integer outputs; their derivative is zero
        return tuple(o if o.dtype.is_floating_point or o.dtype.is_complex else
                     torch.zeros(o.shape, dtype=args[pos[0]].dtype) for o in outs)

    xs = tuple(args[k].detach() for k in pos)
    jac = torch.autograd.functional.jacobian(g, xs)
    return [[b.detach().reshape(-1, xs[j].numel()) for j, b in enumerate(row)] for row in jac]


def _grid(nested: Any, n_out: int, out_tuple: bool, n_in: int, what: str) -> List[List[Tensor]]:
    """The blocks of a result nested like ``torch.autograd.functional.jacobian``, as a table."""
    rows = list(nested) if out_tuple else [nested]
    if out_tuple and (not isinstance(nested, (tuple, list)) or len(rows) != n_out):
        raise ValueError(f"{what}: expected a tuple of {n_out} blocks (one per output), got {type(nested).__name__}")
    table = []
    for r in rows:
        blocks = list(r) if n_in > 1 else [r]
        if n_in > 1 and (not isinstance(r, (tuple, list)) or len(blocks) != n_in):
            raise ValueError(f"{what}: expected a tuple of {n_in} blocks (one per floating argument)")
        for b in blocks:
            if not isinstance(b, Tensor):
                raise TypeError(f"{what}: blocks must be 2-D tensors; got {type(b).__name__}")
        table.append(blocks)
    return table


def _mask(block: Tensor, shape: Tuple[int, int], what: str) -> Tensor:
    if tuple(block.shape) != shape:
        raise ValueError(f"{what}: a block has shape {tuple(block.shape)}, expected {shape} "
                         "(output.numel(), argument.numel())")
    r, c, _, _ = structural_coo(block)
    m = torch.zeros(shape, dtype=torch.bool)
    m[r, c] = True
    return m


# ----------------------------------------------------------------------------
# Readable differences
# ----------------------------------------------------------------------------


def _arg_names(f: Callable, args: Sequence[Any], pos: List[int]) -> List[str]:
    try:
        params = [p for p in inspect.signature(f).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):   # builtins and some C callables have no signature
        params = []
    return [params[k].name if k < len(params) else f"args[{k}]" for k in pos]


def _index(flat: int, shape: torch.Size) -> str:
    if len(shape) == 0:
        return "[]"
    idx = [int(i) for i in torch.unravel_index(torch.tensor(flat), tuple(shape))]
    return "[" + ", ".join(map(str, idx)) + "]"


class _Where:
    """Names and shapes of outputs and inputs, to write an entry as ``out[1, 2] -> x[0]``."""

    def __init__(self, out_shapes, in_shapes, in_names):
        self.out_shapes, self.in_shapes, self.in_names = out_shapes, in_shapes, in_names

    def entry(self, i: int, j: int, r: int, c: int) -> str:
        out = "output" if len(self.out_shapes) == 1 else f"output {i}"
        return f"{out}{_index(r, self.out_shapes[i])} -> {self.in_names[j]}{_index(c, self.in_shapes[j])}"


def _fmt(v: float) -> str:
    return f"{v:.6g}"


# ----------------------------------------------------------------------------
# Public checks
# ----------------------------------------------------------------------------


def _perturbed(args: Sequence[Any], pos: List[int], scale: float, gen: torch.Generator) -> tuple:
    new = list(args)
    for k in pos:
        a = args[k]
        noise = torch.randn(a.shape, generator=gen, dtype=torch.float64).to(a.dtype).to(a.device)
        new[k] = a.detach() + scale * noise
    return tuple(new)


def _user_points(points: Sequence[Any], args: Sequence[Any], pos: List[int]) -> List[tuple]:
    out = []
    for p in points:
        p = tuple(p) if isinstance(p, (tuple, list)) else (p,)
        if len(p) != len(args):
            raise ValueError(f"assert_pattern_sound: a point has {len(p)} arguments, f takes {len(args)} here")
        for k in pos:
            if not isinstance(p[k], Tensor) or p[k].shape != args[k].shape or p[k].dtype != args[k].dtype:
                raise ValueError(f"assert_pattern_sound: argument {k} of a point must be a tensor of shape "
                                 f"{tuple(args[k].shape)} and dtype {args[k].dtype}, like args")
        out.append(p)
    return out


def _trace(f, point, local, sparsity_kwargs) -> Tuple[Any, bool]:
    """The pattern at ``point`` and whether the trace read tensor values (a path-dependent pattern)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pattern = jacobian_sparsity(f, *point, local=local, **sparsity_kwargs)
    read = False
    for w in seen:   # pass the user's warnings on; remember whether the pattern holds on this path only
        read |= issubclass(w.category, ControlFlowWarning)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pattern, read


def assert_pattern_sound(f: Callable, *args: Any, points: Union[int, Sequence[Any]] = 3, seed: int = 0,
                         scale: float = 1.0, local: bool = False, pattern: Any = None, show: int = 10,
                         **sparsity_kwargs: Any) -> None:
    """Assert that the Jacobian pattern of ``f`` contains every nonzero of the dense Jacobian.

    The pattern is :func:`trackjac.jacobian_sparsity` of ``f`` at ``args`` (with ``local``
    and ``sparsity_kwargs``), or ``pattern`` (nested like it). It is compared with
    ``torch.autograd.functional.jacobian`` at ``args`` and at ``points`` more points: an
    int draws that many perturbations ``arg + scale * randn`` of the floating arguments
    (seeded with ``seed``); a list gives the points (each a tuple of arguments, or one tensor).

    A global pattern is checked at every point. When tracing read tensor values in Python
    (a ``ControlFlowWarning``: the pattern holds on that path only) or with ``local=True``
    (it holds at that point only), each point is checked against its own pattern instead.

    Raises ``AssertionError`` listing the first ``show`` missing entries as
    ``output[i, j] -> x[k]: value``, with how many are missing in all.
    """
    pos = _floating(args)
    if isinstance(points, int):
        if points < 0:
            raise ValueError(f"assert_pattern_sound: points must be >= 0; got {points}")
        gen = torch.Generator().manual_seed(seed)
        extra = [_perturbed(args, pos, scale, gen) for _ in range(points)]
    else:
        extra = _user_points(points, args, pos)
    per_point = False   # a given pattern is checked as it is at every point
    if pattern is None:
        pattern, read = _trace(f, args, local, sparsity_kwargs)
        per_point = read or local
    names = _arg_names(f, args, pos)
    problems, total = [], 0
    for k, point in enumerate([tuple(args)] + extra):
        here = pattern
        if k and per_point:
            here, _ = _trace(f, point, local, sparsity_kwargs)
        outs, out_tuple = _outputs(f(*point))
        where = _Where([o.shape for o in outs], [point[q].shape for q in pos], names)
        dense = _dense_table(f, point, pos)
        grid = _grid(here, len(outs), out_tuple, len(pos), "pattern")
        found = []
        for i, row in enumerate(dense):
            for j, J in enumerate(row):
                miss = (J != 0) & ~_mask(grid[i][j], tuple(J.shape), "pattern")
                for r, c in miss.nonzero().tolist():
                    found.append(f"{where.entry(i, j, r, c)}: {_fmt(float(J[r, c]))}")
        if found:
            total += len(found)
            label = "args" if k == 0 else (f"perturbation {k}" if isinstance(points, int) else f"points[{k - 1}]")
            problems.append(f"  at {label}: {len(found)} missing\n" + "\n".join("    " + s for s in found[:show])
                            + ("\n    ..." if len(found) > show else ""))
    if problems:
        raise AssertionError(
            f"unsound pattern: {total} nonzero(s) of the dense Jacobian (torch.autograd.functional.jacobian) "
            "are not in the pattern (output index -> input index: Jacobian value)\n" + "\n".join(problems))


def assert_jacobian_close(f: Callable, *args: Any, rtol: Optional[float] = None, atol: Optional[float] = None,
                          show: int = 10, **jacobian_kwargs: Any) -> None:
    """Assert that :func:`trackjac.jacobian` of ``f`` at ``args`` equals the dense Jacobian.

    ``jacobian_kwargs`` go to :func:`trackjac.jacobian` (``mode``, ``layout``, ``pattern`` ...).
    Entry by entry, ``|got - want| <= atol * max(1, max|want|) + rtol * |want|`` (defaults by
    dtype, as :func:`trackjac.check_jacobian`). Raises ``AssertionError`` listing the first
    ``show`` differences (``output[i] -> x[j]: got a, want b``; entries the sparse result does
    not store are marked), and how many there are in all.
    """
    pos = _floating(args)
    jac = jacobian(f, *args, **jacobian_kwargs)
    outs, out_tuple = _outputs(f(*args))
    dense = _dense_table(f, args, pos)
    grid = _grid(jac, len(outs), out_tuple, len(pos), "trackjac.jacobian")
    where = _Where([o.shape for o in outs], [args[q].shape for q in pos], _arg_names(f, args, pos))
    rt, at = _TOL.get(args[pos[0]].dtype, _LOW_TOL)
    rtol = rt if rtol is None else rtol
    atol = at if atol is None else atol
    found = []
    for i, row in enumerate(dense):
        for j, want in enumerate(row):
            blk = grid[i][j]
            stored = _mask(blk, tuple(want.shape), "trackjac.jacobian")
            got = (blk.to_dense() if blk.layout != torch.strided else blk).to(want.dtype)
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            bad = ~torch.isclose(got, want, rtol=0.0, atol=0.0, equal_nan=True) & \
                ((got - want).abs() > atol * scale + rtol * want.abs())
            bad |= got.isnan() != want.isnan()
            for r, c in bad.nonzero().tolist():
                note = "" if stored[r, c] else " (not stored: outside the sparse result's pattern)"
                found.append(f"{where.entry(i, j, r, c)}: got {_fmt(float(got[r, c]))}, "
                             f"want {_fmt(float(want[r, c]))}{note}")
    if found:
        raise AssertionError(
            f"trackjac.jacobian differs from the dense Jacobian (torch.autograd.functional.jacobian) in "
            f"{len(found)} entr{'y' if len(found) == 1 else 'ies'} (rtol={rtol:g}, atol={atol:g}; "
            "output index -> input index)\n" + "\n".join("  " + s for s in found[:show])
            + ("\n  ..." if len(found) > show else ""))
