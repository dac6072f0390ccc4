"""What a plan is built for: the arguments, the outputs, and the pattern of each block."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._nesting import Nesting, flat_nesting, nest, output_list
from .._sparse import bool_coo, structural_coo
from ..pattern import SparsityPattern, argument_names
from ..tracer import jacobian_sparsity
from ..tracer.state import config


@dataclass(frozen=True)
class Spec:
    """Shape, dtype and device of a tensor the plan was built for."""

    shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, t: Tensor) -> "Spec":
        return cls(t.shape, t.dtype, t.device)

    def describe(self) -> str:
        return f"shape {tuple(self.shape)}, {self.dtype}, on {self.device}"


@dataclass
class Structure:
    """How ``f`` maps its arguments to outputs, and the pattern of each block.

    ``blocks[j][i]`` holds the (rows, cols) of output ``j`` w.r.t. the
    ``i``-th differentiated argument (local flat indices, row-major, CPU).
    """

    n_args: int
    diff_pos: List[int]  # positions of the differentiated (floating tensor) arguments
    arg_specs: List[Optional[Spec]]  # every argument; None where it is not a tensor
    out_specs: List[Spec]
    out_tuple: bool
    blocks: List[List[Tuple[Tensor, Tensor]]]
    # reads of tracked values by Python control flow at detection, (op, value) in order: the
    # pattern is then path-dependent
    traced_reads: List[Any] = field(default_factory=list)
    # for path-dependent plans, the guard that replays the reads per call (set by jacobian_plan)
    path: Optional[Any] = None
    # torch.func-style calls (pytrees, argnums): how results are nested; None: like
    # torch.autograd.functional.jacobian over the positional arguments
    nesting: Optional[Nesting] = None

    @property
    def in_specs(self) -> List[Spec]:
        return [self.arg_specs[p] for p in self.diff_pos]  # type: ignore[misc]

    @property
    def in_tuple(self) -> bool:
        return len(self.diff_pos) > 1

    def offsets(self) -> Tuple[List[int], List[int]]:
        """Start of each output in the stacked rows, of each input in the stacked columns."""
        ro, co = [0], [0]
        for s in self.out_specs:
            ro.append(ro[-1] + s.shape.numel())
        for s in self.in_specs:
            co.append(co[-1] + s.shape.numel())
        return ro, co

    def global_coo(self) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """All blocks stacked into one (outputs x inputs) pattern: (rows, cols, shape).

        With a single block, its own (rows, cols), not copies: read them, do not write."""
        ro, co = self.offsets()
        if len(self.blocks) == 1 and len(self.blocks[0]) == 1:  # a 1M-entry copy costs ~10 ms
            r, c = self.blocks[0][0]
            return r, c, (ro[-1], co[-1])
        rows, cols = [], []
        for j, row in enumerate(self.blocks):
            for i, (r, c) in enumerate(row):
                rows.append(r + ro[j])
                cols.append(c + co[i])
        empty = torch.empty(0, dtype=torch.long)
        return torch.cat(rows or [empty]), torch.cat(cols or [empty]), (ro[-1], co[-1])

    def nest(self, table: List[List[Any]]) -> Any:
        """Nest ``table[j][i]`` like ``torch.autograd.functional.jacobian`` (or as ``nesting`` says)."""
        if self.nesting is not None:
            return self.nesting.nest(table)
        return nest(table, self.out_tuple, self.in_tuple)


    def patterns(self, device=None) -> List[List[Tensor]]:
        """``blocks`` as sparse COO bool patterns ``(out.numel(), in.numel())``."""
        return [[bool_coo(r, c, (self.out_specs[j].shape.numel(), self.in_specs[i].shape.numel()), device)
                 for i, (r, c) in enumerate(row)] for j, row in enumerate(self.blocks)]

    def sparsity(self, f: Optional[Callable] = None, device=None, hessian: bool = False) -> SparsityPattern:
        """The blocks as a :class:`SparsityPattern`, inputs named after ``f``'s parameters
        (``hessian``: the rows are the gradients, named like the inputs)."""
        names = None if f is None else argument_names(f, self.n_args)
        in_names = None if names is None else [names[p] for p in self.diff_pos]
        return SparsityPattern(self.patterns(device), [s.shape for s in self.out_specs],
                               [s.shape for s in self.in_specs], in_names=in_names,
                               out_names=in_names if hessian else None,
                               nesting=self.nesting or flat_nesting(self.out_tuple, len(self.diff_pos)))


def positional(nesting: Optional[Nesting], nested: Any) -> Any:
    """A Jacobian nested by ``nesting`` as tuples over the outputs and inputs of the flat function."""
    if nesting is None:
        return nested
    return tuple(tuple(r) if len(r) > 1 else r[0] for r in nesting.grid(nested, "the Jacobian"))


def diff_positions(args: Sequence[Any]) -> List[int]:
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


def output_specs(f: Callable, args: Sequence[Any], out: Any = None) -> Tuple[List[Spec], bool]:
    """Specs of ``f``'s outputs at ``args`` (``out``: ``f``'s output there, if already computed)."""
    if out is None:
        with torch.no_grad():   # on copies: an f that writes into its arguments must not change the caller's
            out = f(*[a.clone() if isinstance(a, Tensor) else a for a in args])
    outs, out_tuple = output_list(out, "f")
    for j, o in enumerate(outs):
        if not o.is_floating_point():
            raise TypeError(f"output {j} has dtype {o.dtype}; only real floating-point outputs have a Jacobian")
    return [Spec.of(o) for o in outs], out_tuple


def _block_indices(p: Any, shape: Tuple[int, int], where: str) -> Tuple[Tensor, Tensor]:
    """Row-major (rows, cols) of one pattern block, checked against its expected shape."""
    if not isinstance(p, Tensor) or p.dim() != 2:
        raise TypeError(f"pattern {where}: expected a 2-D tensor (sparse or dense); got {type(p).__name__}")
    if tuple(p.shape) != shape:
        raise ValueError(f"pattern {where}: shape {tuple(p.shape)} does not match (out.numel(), arg.numel()) = {shape}")
    rows, cols, _, _ = structural_coo(p)  # row-major sorted and distinct (coalesced or nonzero())
    return rows, cols


def _grid(patterns: Any, out_specs: List[Spec], in_specs: List[Spec], out_tuple: bool) -> List[List[Tuple[Tensor, Tensor]]]:
    """Pattern blocks as grid[output][input], accepting the nesting of jacobian_sparsity or a
    :class:`SparsityPattern` (whose shapes must be the ones ``f`` has here)."""
    n_out, n_in = len(out_specs), len(in_specs)
    if isinstance(patterns, SparsityPattern):
        got = ([tuple(s) for s in patterns.out_shapes], [tuple(s) for s in patterns.in_shapes])
        want = ([tuple(s.shape) for s in out_specs], [tuple(s.shape) for s in in_specs])
        if got != want:
            raise ValueError(f"pattern: the SparsityPattern is for outputs {got[0]} and inputs {got[1]}; "
                             f"here they are {want[0]} and {want[1]}")
        patterns = patterns.blocks
        out_tuple = True   # blocks is a full grid, whatever the counts

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


def with_reads(detect: Callable[[], Any]) -> Tuple[Any, List[Any]]:
    """``detect()``'s pattern and the control-flow reads of tracked values it recorded, in order."""
    traced: List[Any] = []
    cfg = config()
    saved, cfg.read_log = cfg.read_log, traced
    try:
        return detect(), traced
    finally:
        cfg.read_log = saved


def build_structure(f: Callable, args: Sequence[Any], pattern: Any, strict: bool, local: bool,
                    constant_zeros: Optional[str] = "keep", diff_pos: Optional[List[int]] = None,
                    out: Any = None) -> Structure:
    """Specs and pattern blocks; ``traced_reads`` lists the control-flow reads of tracked values.

    ``diff_pos``: the positions differentiated (default: every floating tensor argument);
    ``out``: ``f``'s output at ``args``, if already computed."""
    pos = diff_positions(args) if diff_pos is None else list(diff_pos)
    out_specs, out_tuple = output_specs(f, args, out)
    traced: List[Any] = []
    if pattern is None:
        argnums = None if diff_pos is None else tuple(pos)
        pattern, traced = with_reads(lambda: jacobian_sparsity(
            f, *args, argnums=argnums, local=local, strict=strict, constant_zeros=constant_zeros))
    arg_specs = [Spec.of(a) if isinstance(a, Tensor) else None for a in args]
    in_specs = [arg_specs[p] for p in pos]
    blocks = _grid(pattern, out_specs, in_specs, out_tuple)  # type: ignore[arg-type]
    return Structure(len(args), pos, arg_specs, out_specs, out_tuple, blocks, traced)


def bind(f: Callable, args: Sequence[Any], pos: Sequence[int]) -> Tuple[Callable, Tuple[Tensor, ...]]:
    """``f`` as a function of the arguments at ``pos`` only, returning a tuple; and those arguments."""
    full = list(args)

    def g(*dargs):
        for p, a in zip(pos, dargs):
            full[p] = a
        out = f(*full)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return g, tuple(args[p] for p in pos)


def check_args(st: Structure, args: Sequence[Any]) -> None:
    """A ``ValueError`` unless ``args`` have the kinds, shapes, dtypes and devices a plan was built for."""
    if len(args) != st.n_args:
        raise ValueError(f"plan was built for {st.n_args} arguments; got {len(args)}")
    for p, (a, spec) in enumerate(zip(args, st.arg_specs)):
        if spec is None:
            if isinstance(a, Tensor):
                raise ValueError(f"argument {p}: plan was built with a non-tensor here; got a tensor")
            continue
        if not isinstance(a, Tensor):
            raise ValueError(f"argument {p}: plan was built for a tensor ({spec.describe()}); "
                             f"got {type(a).__name__}")
        if a.shape != spec.shape or a.dtype != spec.dtype or a.device != spec.device:
            raise ValueError(f"argument {p}: plan was built for {spec.describe()}; "
                             f"got {Spec.of(a).describe()}. Build a new plan for new shapes/dtypes/devices.")
