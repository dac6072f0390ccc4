"""Hessian plans evaluated across the ranks of a ``torch.distributed`` process group.

As for Jacobians (:mod:`.distributed`), every rank builds the same
:class:`~trackjac.HessianPlan`, evaluates the Hessian-vector products of its share of
the colors and the ranks sum one buffer. What that buffer holds depends on how the
coloring recovers the entries:

- a gather (star or column coloring): each entry is read from one color, so the
  ranks' value index sets are disjoint and the buffer is the nnz-length value vector;
- substitution (acyclic coloring): an entry may need products of several colors, so
  the buffer is the compressed products ``C`` (``num_colors x n``, each rank's rows
  filled, the rest zero) and every rank substitutes after the sum.

Both sums are exact (``x + 0 == x``). Which is cheaper depends on the pattern: the
acyclic coloring has fewer colors (less product work per rank) but moves
``num_colors x n`` values instead of ``nnz``; benches/bench_distributed.py measures both.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Sequence

import torch
from torch import Tensor

from .distributed import DistributedBase, _gathers
from .hessian_plans import HessianPlan, _autograd_products, _value_and_grad_fn
from .products import user_stacklevel, vectorized

__all__ = ["DistributedHessianPlan"]


class DistributedHessianPlan(DistributedBase):
    """A :class:`~trackjac.HessianPlan` whose colors are split across a process group.

    Build it with ``trackjac.hessian_plan(f, *args, process_group=g)``; call it on every rank
    with arguments of the same shapes and dtypes. ``output="full"``: the whole Hessian on
    every rank, nested as the single-process plan returns it; ``output="rows"``: rows
    ``row_offsets[rank] : row_offsets[rank + 1]`` of the stacked ``(n, n)`` Hessian (all
    arguments flattened and concatenated) as one COO or CSR matrix, balanced by nonzeros.

    ``reduce`` says what the ranks sum: "values" (star or column coloring, ``nnz`` values)
    or "products" (acyclic coloring, ``num_colors x n``). Other attributes as
    :class:`~trackjac.DistributedPlan`'s.
    """

    plan: HessianPlan

    def _kind(self) -> str:
        return f"{getattr(self.plan.coloring, 'method', self.plan.coloring.axis)} coloring"

    def _prepare(self) -> None:
        plan = self.plan
        specs = plan.structure.in_specs
        dtype = specs[0].dtype
        for s in specs[1:]:   # the products of several arguments are concatenated
            dtype = torch.promote_types(dtype, s.dtype)
        self._dtypes = [dtype]
        self.reduce = "products" if getattr(plan.coloring, "method", None) == "acyclic" else "values"
        if self.reduce == "products":
            self._sizes = {dtype: plan.num_colors * plan.n}
            return
        rows, cols, _ = plan.structure.global_coo()
        color, pos = plan.coloring.compressed_index(rows, cols)
        self._sizes = {dtype: plan.nnz}
        self._gather = _gathers(color, pos, plan.n, 0, self._chunks, self.device)

    def _bind(self, args: Sequence[Any]):
        plan = self.plan
        pos = plan.structure.diff_pos
        return _value_and_grad_fn(plan.f, args, pos), plan._dargs(args), args

    def _batched(self, ctx, seeds, check, draws):
        return vectorized(ctx[0], ctx[1], "fwd", seeds, check, draws)

    def _plain(self, ctx, seeds, check, draws):
        outs, comps = _autograd_products(self.plan.f, ctx[2], self.plan.structure.diff_pos, seeds, draws)
        check(outs)
        return outs, comps

    def _warn_batched_wrong(self, ctx, draws, err, scale) -> None:
        warnings.warn(f"trackjac: the batched Hessian-vector products (torch.func.vmap) disagree with "
                      f"plain double backward (max difference {err:.3g}, scale {scale:.3g}); this rank "
                      "evaluates one color at a time with torch.autograd from now on.",
                      RuntimeWarning, stacklevel=user_stacklevel())

    def _fill(self, comps, bufs: Dict[torch.dtype, Tensor]) -> None:
        buf, nargs = bufs[self._dtypes[0]], len(self.plan.structure.in_specs)
        for k, ((c0, c1), chunk) in enumerate(zip(self._chunks, comps)):
            flat = torch.cat([t.reshape(t.shape[0], -1) for t in chunk[:nargs]], 1).to(buf.dtype)
            if self.reduce == "products":
                buf.narrow(0, c0 * self.plan.n, flat.numel()).copy_(flat.reshape(-1))
            else:
                dest, src = self._gather[k]
                buf.scatter_(0, dest, flat.reshape(-1).index_select(0, src))

    def _values(self, bufs: Dict[torch.dtype, Tensor]) -> Dict[torch.dtype, Tensor]:
        if self.reduce == "values":
            return bufs
        d = self._dtypes[0]
        return {d: self.plan._decompress(bufs[d].view(self.plan.num_colors, self.plan.n))}

    def _assemble_full(self, values: Dict[torch.dtype, Tensor]):
        vals = values[self._dtypes[0]]
        table = [[blk.assemble(vals.index_select(0, sel)) for sel, blk in row] for row in self.plan._blocks]
        return self.plan.structure.nest(table)

    def __call__(self, *args, **kwargs):
        """The Hessian at ``args`` (full, or this rank's row block); call on every rank."""
        return self.plan._hessian_result(self._run(self.plan._flat(args, kwargs))[1])

    def value_and_hessian(self, *args, **kwargs):
        """``(value, gradient, hessian)`` from one evaluation (value and gradient computed locally)."""
        return self.plan._value_result(*self._run(self.plan._flat(args, kwargs)))
