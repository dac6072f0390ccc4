"""Views and data movement.

Views need no rule: they share their base's provenance store (see
:mod:`trackjac.dispatch`).  Ops that only move, copy or drop elements are traced
by running the op itself on *index-encoded* tensors: every floating input is
replaced by ``1 + its element positions`` (``0`` for untracked data and for
fill values), so each output element's code names the input element it came
from, or ``0`` for a constant.  One generic rule thus covers ``cat``, ``flip``,
``roll``, padding, ``tril``, ``gather``, ``index`` and friends exactly.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..errors import TrackingError
from ..provenance import Provenance, SetProv
from ..dtypes import DIFFERENTIABLE
from .api import Carrier
from .registry import register, rule
from .shapes import bcast, codes

aten = torch.ops.aten

_VALUE_ARGS = ("value", "fill_value")


def _cat_provs(provs: List[Provenance]) -> Provenance:
    ptrs, base = [], 0
    for p in provs:
        ptrs.append(p.ptr[:-1] + base)
        base += p.nnz
    device = provs[0].device
    ptrs.append(torch.tensor([base], dtype=torch.int64, device=device))
    return SetProv(torch.cat(ptrs), torch.cat([p.col for p in provs]))


def moved(call) -> List[Optional[Provenance]]:
    """Trace a data-movement op by running it on index codes (index arguments computed from
    tracked values are refused by the registry first: see ``indices=`` of :func:`.registry.rule`)."""
    provs: List[Provenance] = []
    sizes = [0]

    def encode(dtype):
        provs.clear()
        sizes[0] = 0
        schema = call.func._schema
        args, kwargs = [], {}
        for a in schema.arguments:
            if a.name not in call.bound:
                continue
            v = call.bound[a.name]
            is_out = a.kwarg_only and a.alias_info is not None and a.alias_info.is_write
            if isinstance(v, torch.Tensor) and (v.dtype in DIFFERENTIABLE or is_out):
                p = None if is_out else call.prov(v)
                if p is None:
                    c = torch.zeros(v.shape, dtype=dtype, device=v.device)
                else:
                    c = (codes(v.shape, v.device) + (1 + sizes[0])).to(dtype)
                    provs.append(p)
                    sizes[0] += v.numel()
                v = c
            elif isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
                v = type(v)(_enc_list(t, dtype) for t in v)
            elif a.name in _VALUE_ARGS and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = 0
            elif a.name == "dtype" and v is not None:
                v = dtype
            if a.kwarg_only:
                kwargs[a.name] = v
            else:
                args.append(v)
        return args, kwargs

    def _enc_list(t, dtype):
        if t.dtype not in DIFFERENTIABLE:
            return t.value if hasattr(t, "value") else t
        p = call.prov(t)
        if p is None:
            return torch.zeros(t.shape, dtype=dtype, device=t.device)
        c = (codes(t.shape, t.device) + (1 + sizes[0])).to(dtype)
        provs.append(p)
        sizes[0] += t.numel()
        return c

    out = None
    for dtype in (torch.int64, torch.float64):
        try:
            args, kwargs = encode(dtype)
            if not provs:
                return [None] * len(call.outs)
            out = call.func(*[_plain(a) for a in args], **{k: _plain(v) for k, v in kwargs.items()})
            break
        except (RuntimeError, NotImplementedError, TypeError):
            if dtype == torch.float64:
                raise
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    big = _cat_provs(provs)
    res = []
    for o, c in zip(call.outs, outs):
        if o.dtype not in DIFFERENTIABLE or not isinstance(c, torch.Tensor):
            res.append(None)
        else:
            res.append(big.gather(c.reshape(-1).to(torch.int64) - 1))
    return res


register([
    aten.cat, aten.stack, aten.hstack, aten.vstack, aten.flip, aten.roll, aten.rot90,
    aten.constant_pad_nd, aten.reflection_pad1d, aten.reflection_pad2d, aten.reflection_pad3d,
    aten.replication_pad1d, aten.replication_pad2d, aten.replication_pad3d, aten._pad_circular,
    aten.repeat, aten.tril, aten.triu, aten.diag_embed, aten.diag, aten.block_diag,
    aten.pixel_shuffle, aten.pixel_unshuffle, aten.channel_shuffle, aten.native_channel_shuffle,
    aten.im2col, aten.narrow_copy, aten._unsafe_view,
    aten.slice_scatter, aten.select_scatter, aten.diagonal_scatter, aten.as_strided_scatter,
    aten.upsample_nearest1d, aten.upsample_nearest2d, aten.upsample_nearest3d,
    aten._upsample_nearest_exact1d, aten._upsample_nearest_exact2d, aten._upsample_nearest_exact3d,
    aten.unfold_copy, aten.view_copy, aten.permute_copy, aten.transpose_copy, aten.t_copy,
    aten.expand_copy, aten.squeeze_copy, aten.unsqueeze_copy, aten.select_copy, aten.slice_copy,
    aten.diagonal_copy, aten.as_strided_copy, aten.alias_copy, aten.detach_copy,
    aten.split_copy, aten.split_with_sizes_copy, aten.unbind_copy, aten.view_as_real_copy,
    aten._reshape_copy, aten.reshape,
], moved)
register([aten.repeat_interleave], moved, indices=("repeats",))


def _plain(a):
    return a.value if isinstance(a, Carrier) else a


@rule(aten._to_copy, aten.clone, aten.lift_fresh_copy, aten.contiguous, aten.to, aten.type_as,
      aten.positive)
def identity(call) -> List[Optional[Provenance]]:
    """Copies and dtype conversions: element ``i`` depends on input element ``i``."""
    x = call.bound["self"]
    o = call.outs[0]
    return [bcast(call.prov(x), x.shape, o.shape) if o.dtype in DIFFERENTIABLE else None]


@rule(aten.copy)
def copy(call) -> List[Optional[Provenance]]:
    """``self.copy_(src)``: ``src`` broadcast into ``self``'s shape."""
    src = call.bound["src"]
    o = call.outs[0]
    return [bcast(call.prov(src), src.shape, o.shape) if o.dtype in DIFFERENTIABLE else None]


@rule(aten.fill, always=True)
def fill(call) -> Optional[Provenance]:
    """``fill(self, value)``: a tensor ``value`` broadcast; a number is a fresh constant (``always``:
    marked so even when no input carries provenance)."""
    v = call.bound.get("value")
    o = call.outs[0]
    if isinstance(v, torch.Tensor):
        return bcast(call.prov(v), v.shape, o.shape)
    call.derived = False
    return None


@rule(aten.zero, aten.new_zeros, aten.new_ones, aten.new_empty, aten.new_full, aten.new_empty_strided,
      always=True)
def overwrite(call) -> Optional[Provenance]:
    """Ops that overwrite their input with constants (``zero_``, ``new_zeros``); ``always``: the
    outputs are marked as fresh constants even when no input carries provenance."""
    call.derived = False
    return None


@rule(aten.normal, aten.uniform, aten.exponential, aten.geometric, aten.log_normal, aten.cauchy,
      aten.random, always=True)
def random_sample(call) -> Optional[Provenance]:
    """Random numbers: autograd gives them no derivative, not even for tensor parameters
    (``normal(mean, std)`` is not reparameterized).  The values derive from tracked values only
    through such parameters (``self`` only gives the shape or is overwritten).  ``always``: the
    outputs are marked so even when no input carries provenance."""
    if not any(call.is_derived(a) for n, a in call.bound.items()
               if n != "self" and isinstance(a, torch.Tensor)):
        call.derived = False
    call.random = True
    return None


@rule(aten._to_sparse, aten._to_sparse_csr, aten._to_sparse_csc, aten._to_sparse_bsr,
      aten._to_sparse_bsc, aten.to_sparse, aten.to_sparse_csr, aten.to_sparse_csc,
      aten.to_sparse_bsr, aten.to_sparse_bsc, aten._to_sparse_semi_structured,
      aten.sparse_sampled_addmm, aten._sparse_coo_tensor_with_dims_and_tensors,
      aten.sparse_coo_tensor, aten._sparse_csr_tensor_unsafe, aten.sparse_compressed_tensor,
      aten.sparse_mask, aten._sparse_mask_projection, always=True)
def sparse_result(call):
    """Sparse layouts carry no provenance: a sparse tensor of constants is a constant (a sparse
    operator built inside ``f``: the product rules follow its stored entries); one made from
    tracked values is a clear error instead of a wrong pattern (``always``: the rule must see it)."""
    if not any(call.is_derived(a) or call.prov(a) is not None for a in call.tensor_args()):
        call.derived = False
        return None
    raise TrackingError(
        f"{call.func}: the result is a sparse tensor ({call.outs[0].layout}); trackjac tracks strided "
        "(dense) tensors only. Keep tracked values dense (to_dense(), or mask with torch.where).")
