"""Plans that compute constant Jacobian entries once and evaluate only the variable ones.

``jacobian_plan(..., constant_entries="reuse")``: the pattern is split by
``jacobian_sparsity(..., classify=True)``; the constant entries' values are taken
from one evaluation of a full-pattern plan at the build point, and only the
variable entries are colored. Under that (smaller) coloring a compressed slot of a
variable entry also sums the constant entries whose seeded vertex has the same
color: that *contamination* is known at build time and subtracted at each call.

The subtraction cancels digits where the contamination dwarfs the variable value;
:data:`digits_kept` says how many the build-time check demands, and where it fails
the full-pattern plan is returned with a ``RuntimeWarning``.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..coloring import Coloring
from ..errors import user_stacklevel
from ..tracer import jacobian_sparsity
from .assemble import Block, blocksize_of, merge
from .plan import Plan, take
from .state import CONSTANT_LOADERS
from .structure import Structure, _grid

__all__ = ["VariablePartPlan", "build_reuse_plan", "cancellation_limit"]

# the variable entries whose build-point value is below this fraction of the largest
# variable value are judged against that floor: a zero at the build point says nothing
# about the digits it will need elsewhere
_FLOOR = 1e-3


def cancellation_limit(dtype: torch.dtype) -> float:
    """Largest allowed ``|contamination| / reference``: ``10**d`` with ``d`` half the dtype's
    decimal digits, rounded down (float32: 1e3, float64: 1e7, float16/bfloat16: 10)."""
    digits = -math.log10(torch.finfo(dtype).eps)
    return 10.0 ** max(1, math.floor(digits / 2))


def _positions(full: Tuple[Tensor, Tensor], part: Tuple[Tensor, Tensor], n: int, where: str) -> Tensor:
    """Where the entries of ``part`` sit in the row-major block ``full`` (both sorted)."""
    fk, pk = full[0] * n + full[1], part[0] * n + part[1]
    at = torch.searchsorted(fk, pk)
    if pk.numel() and (bool((at >= fk.numel()).any()) or not torch.equal(fk[at.clamp(max=fk.numel() - 1)], pk)):
        raise RuntimeError(f"trackjac: the classified entries of block {where} are not in the plan's pattern")
    return at


def _split_blocks(f: Callable, args: Sequence[Any], st: Structure, strict: bool,
                  constant_zeros: Optional[str]) -> List[List[Tuple[Tensor, Tensor]]]:
    """Per block, (positions of the constant entries, of the variable entries) in its nnz order."""
    argnums = None if st.nesting is None else tuple(st.diff_pos)   # torch.func-style: only these leaves
    cls = jacobian_sparsity(f, *args, argnums=argnums, strict=strict, constant_zeros=constant_zeros, classify=True)
    const = _grid(cls.constant, st.out_specs, st.in_specs, st.out_tuple)
    var = _grid(cls.variable, st.out_specs, st.in_specs, st.out_tuple)
    table = []
    for j, row in enumerate(st.blocks):
        trow = []
        for i, full in enumerate(row):
            n = st.in_specs[i].shape.numel()
            cp = _positions(full, const[j][i], n, f"[{j}][{i}]")
            vp = _positions(full, var[j][i], n, f"[{j}][{i}]")
            if cp.numel() + vp.numel() != full[0].numel():
                raise RuntimeError(f"trackjac: constant and variable entries of block [{j}][{i}] do not "
                                   "partition the plan's pattern")
            trow.append((cp, vp))
        table.append(trow)
    return table


class _Guard:
    """The non-differentiated arguments at build time: a changed one makes the constants stale."""

    def __init__(self, args: Sequence[Any], diff_pos: Sequence[int]):
        skip = set(diff_pos)
        self._saved = [(p, a.detach().clone() if isinstance(a, Tensor) else a)
                       for p, a in enumerate(args) if p not in skip and isinstance(a, (Tensor, int, float, bool))]

    def check(self, args: Sequence[Any]) -> None:
        for p, saved in self._saved:
            a = args[p]
            same = (isinstance(a, Tensor) and a.shape == saved.shape and torch.equal(a, saved)
                    if isinstance(saved, Tensor) else type(a) is type(saved) and (a == saved or a != a and saved != saved))
            if not same:
                raise ValueError(
                    f"argument {p} is not differentiated and differs from the build point: this plan "
                    "(constant_entries='reuse') computed the constant Jacobian entries there; build a new plan")


class VariablePartPlan(Plan):
    """A :class:`Plan` whose products cover only the variable entries (``constant_entries="reuse"``).

    ``num_colors`` is the variable coloring's; ``constant_nnz`` and ``variable_nnz`` count the
    two kinds of entries; the result has the full pattern's layout and nnz order, as a plan
    with ``constant_entries="recompute"``. ``worst_cancellation`` is the largest
    ``|contamination| / reference`` found at build time (see :func:`cancellation_limit`).
    """

    constant_entries = "reuse"

    def __init__(self, f: Callable, full: Structure, variable: Structure, mode: str, coloring: Coloring,
                 split: List[List[Tuple[Tensor, Tensor]]], values: List[List[Tensor]],
                 guard: _Guard, **kwargs):
        # what _build needs, set before Plan.__init__ builds the variable coloring
        self._full, self._split, self._guard = full, split, guard
        self._values0 = values
        self.constant_nnz = sum(c.numel() for row in split for c, _ in row)
        self.variable_nnz = sum(v.numel() for row in split for _, v in row)
        self._built = False
        super().__init__(f, variable, mode, coloring, **kwargs)
        self._built = True

    def _build(self, st: Structure) -> None:
        super()._build(st)
        dev, full = self.device, self._full
        self._var_nnz = [[b.nnz for b in row] for row in self._blocks]
        contamination = self._contamination(st)
        self._check_cancellation(contamination)
        # per block: the constant values (zeros where the entry is variable), and the contamination
        # of the variable entries in the compressed dtype; a call copies the compressed values minus
        # the contamination into a clone of the base (index_copy_ measured faster than index_add)
        self._base: List[List[Tensor]] = []
        self._contam: List[List[Tensor]] = []
        for j, row in enumerate(self._split):
            brow, crow = [], []
            for i, (cp, vp) in enumerate(row):
                v0 = self._values0[j][i]
                base = torch.zeros_like(v0)
                base[cp] = v0[cp]
                brow.append(base.to(dev))
                dtype = self.coloring.compressed(st.out_specs[j].dtype, st.in_specs[i].dtype)
                crow.append(contamination[j][i].to(device=dev, dtype=dtype))
            self._base.append(brow)
            self._contam.append(crow)
        self._var_pos = [[vp.to(dev) for _, vp in row] for row in self._split]
        self._blocks = [
            [Block(r, c, (full.out_specs[j].shape.numel(), full.in_specs[i].shape.numel()), self.layout,
                   blocksize_of(self.blocksize, j, i), dev) for i, (r, c) in enumerate(row)]
            for j, row in enumerate(full.blocks)
        ]
        self.nnz = sum(b.nnz for row in self._blocks for b in row)

    def _contamination(self, st: Structure) -> List[List[Tensor]]:
        """Per variable entry (variable-block nnz order), the sum of the constant values that
        land on its compressed (color, position), in float64."""
        cl, k = self.coloring, self.num_colors
        ro, co = st.offsets()
        grows, gcols, _ = st.global_coo()
        seed_colors = cl.seed_colors(grows, gcols)  # -1: vertex outside the variable pattern, not seeded
        full = self._full
        widths = {}
        acc = {}
        for j, row in enumerate(self._split):
            for i, (cp, _) in enumerate(row):
                part = cl.compressed(j, i)
                m, n = full.out_specs[j].shape.numel(), full.in_specs[i].shape.numel()
                widths[part] = cl.compressed(m, n)
                acc.setdefault(part, torch.zeros(k * widths[part], dtype=torch.float64))
                if k == 0 or cp.numel() == 0:
                    continue
                r, c = full.blocks[j][i][0][cp], full.blocks[j][i][1][cp]
                color = seed_colors.index_select(0, cl.seeded(r + ro[j], c + co[i]))
                keep = color >= 0
                _, pos = cl.compressed_index(r, c, (ro[j], co[i]))
                slot = color[keep] * widths[part] + pos[keep]
                acc[part].index_add_(0, slot, self._values0[j][i][cp][keep].to(torch.float64))
        out = []
        for j, row in enumerate(st.blocks):
            orow = []
            for i, (r, c) in enumerate(row):
                part = cl.compressed(j, i)
                color, pos = cl.compressed_index(r, c, (ro[j], co[i]))
                orow.append(acc[part][color * widths[part] + pos] if r.numel() else acc[part][:0])
            out.append(orow)
        return out

    def _check_cancellation(self, contamination: List[List[Tensor]]) -> None:
        """``|contamination_e| <= cancellation_limit(dtype) * max(|J_e|, 1e-3 * s)`` per variable
        entry, ``J_e`` its value at the build point and ``s`` the largest ``|J_e|`` of its dtype."""
        worst, fail = 0.0, None
        scale: dict = {}
        for j, row in enumerate(self._split):
            for i, (_, vp) in enumerate(row):
                v = self._values0[j][i][vp]
                if v.numel():
                    scale[v.dtype] = max(scale.get(v.dtype, 0.0), float(v.abs().max()))
        for j, row in enumerate(self._split):
            for i, (_, vp) in enumerate(row):
                v = self._values0[j][i][vp].to(torch.float64).abs()
                kappa = contamination[j][i].abs()
                if not v.numel() or not bool((kappa > 0).any()):
                    continue
                dtype = self._values0[j][i].dtype
                ref = v.clamp(min=_FLOOR * scale[dtype])
                ratio = torch.where(kappa > 0, kappa / ref, torch.zeros_like(kappa))
                r = float(ratio.max())
                worst = max(worst, r)
                if r > cancellation_limit(dtype) and fail is None:
                    fail = (j, i, r, dtype)
        self.worst_cancellation = worst
        self._cancels = fail

    def _decompress(self, outs, comps):
        st, cl = self.structure, self.coloring
        values = []
        for j, row in enumerate(self._gather):
            vrow = []
            for i, (part, per_chunk) in enumerate(row):
                base = self._base[j][i]
                if not self._var_nnz[j][i]:
                    vrow.append(base.clone())  # all constant: the caller may write into its result
                    continue
                parts = [(sel, take(comp[part], src)) for (sel, src), comp in zip(per_chunk, comps)]
                dtype = cl.compressed(st.out_specs[j].dtype, st.in_specs[i].dtype)
                var = merge(parts, self._var_nnz[j][i], dtype, self.device) - self._contam[j][i]
                vrow.append(base.clone().scatter_(0, self._var_pos[j][i], var.to(base.dtype)))  # see merge
            values.append(vrow)
        return outs, values

    def _set_coloring(self, mode: str, coloring: Coloring) -> None:
        super()._set_coloring(mode, coloring)
        if self._built and self._cancels is not None:  # a switch to reverse mode; the builder checks the first
            j, i, r, dtype = self._cancels
            raise RuntimeError(f"trackjac: the reverse-mode coloring of the variable entries would cancel "
                               f"too many digits (block [{j}][{i}], ratio {r:.3g} for {dtype}); build the plan "
                               "with constant_entries='recompute'")

    def _validate(self, args: Sequence[Any]) -> None:
        super()._validate(args)
        self._guard.check(args)

    def _constant_state(self) -> dict:
        return {
            "full_blocks": [[[r, c] for r, c in row] for row in self._full.blocks],
            "split": [[[cp, vp] for cp, vp in row] for row in self._split],
            "values": [[v.cpu() for v in row] for row in self._values0],
            "guard": [[p, v.cpu() if isinstance(v, Tensor) else v] for p, v in self._guard._saved],
        }

    @property
    def pattern(self):
        """The structural pattern (constant and variable entries), sparse COO bool, nested."""
        return self._full.nest(self._full.patterns(self.device))

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] + f", constant_nnz={self.constant_nnz}, "
                f"variable_nnz={self.variable_nnz})")


def build_reuse_plan(f: Callable, args: Sequence[Any], structure: Structure, strict: bool,
                     constant_zeros: Optional[str], once: Callable[[Structure], Plan],
                     fallback: Callable[[Structure], Plan], color: Callable[[Structure], Coloring],
                     rev_color: Callable[[Structure], Coloring], **kwargs) -> Plan:
    """The plan for ``constant_entries="reuse"``, or the full-pattern plan with a
    ``RuntimeWarning`` where subtracting the constants would cancel too many digits.

    ``once(structure)`` builds the full-pattern plan evaluated once here (a fast coloring:
    it runs once), ``fallback(structure)`` the one returned on a failed check; ``color`` /
    ``rev_color`` color a structure for the requested mode / for reverse mode."""
    split = _split_blocks(f, args, structure, strict, constant_zeros)
    full = once(structure)
    full._validate(args)
    _, values = full._evaluate(args)  # the constant entries' values, once
    values = [[v.detach().cpu() for v in row] for row in values]
    variable = dataclasses.replace(structure, blocks=[
        [(r[vp], c[vp]) for (r, c), (_, vp) in zip(brow, srow)] for brow, srow in zip(structure.blocks, split)])
    col = color(variable)
    plan = VariablePartPlan(f, structure, variable, col.mode, col, split, values,
                            _Guard(args, structure.diff_pos), **kwargs)
    if col.mode == "fwd":  # if f turns out to have no forward-mode derivative
        plan._rev_coloring = lambda: rev_color(variable)
    if plan._cancels is None:
        return plan
    j, i, r, dtype = plan._cancels
    full = fallback(structure)
    warnings.warn(
        f"trackjac: constant_entries='reuse' would lose more than half the digits of {dtype} in block "
        f"[{j}][{i}] (a constant contamination {r:.3g} times the variable value it is subtracted from, "
        f"limit {cancellation_limit(dtype):.0e}); this plan colors the full pattern instead "
        f"({full.num_colors} colors instead of {plan.num_colors})",
        RuntimeWarning, stacklevel=user_stacklevel())
    full.constant_nnz, full.variable_nnz = plan.constant_nnz, plan.variable_nnz
    return full


def _load(f: Callable, full: Structure, variable: Structure, mode: str, coloring: Coloring, split, values,
          guard_args: List[Any], opts: dict) -> VariablePartPlan:
    plan = VariablePartPlan(f, full, variable, mode, coloring, split, values, _Guard(guard_args, variable.diff_pos),
                            **opts)
    if plan._cancels is not None:
        raise ValueError("plan state: its constant entries would cancel too many digits; it was not saved "
                         "from a constant_entries='reuse' plan")
    return plan


CONSTANT_LOADERS["reuse"] = _load

