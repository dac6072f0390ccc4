"""Reductions and scans: an output element depends on the slice it reduces.

Choosing reductions (``max``, ``median``, ``kthvalue`` ...) keep the whole slice in
global mode and only the chosen element (all tied elements, without indices) in local mode.
"""
from __future__ import annotations

import math

import torch

from ..dtypes import DIFFERENTIABLE
from . import pointwise
from ..provenance import scatter
from .registry import rule
from .shapes import bcast, codes, keep_shape, norm_dims, reduce, take_along

aten = torch.ops.aten


def _dims(call):
    x = call.bound["self"]
    return x, norm_dims(call.bound.get("dim"), x.dim())


@rule(aten.sum, aten.mean, aten.prod, aten.linalg_matrix_norm)
def reduction(call):
    """Each output depends on every element of its slice."""
    x, dims = _dims(call)
    p = reduce(call.prov(x), x.shape, dims)
    return [p if o.dtype in DIFFERENTIABLE else None for o in call.outs]


@rule(aten.norm, aten.linalg_vector_norm)
def vector_norm(call):
    """``norm``/``linalg_vector_norm``: ``ord=0`` counts nonzeros (no derivative); ``ord=+-inf``
    picks the largest/smallest magnitude (local mode: every tied element); else the slice."""
    ord_ = call.bound.get("ord", call.bound.get("p", 2))
    ord_ = 2 if ord_ is None else ord_
    if ord_ == 0:
        return None
    if not call.local:
        return reduction(call)
    if abs(ord_) != float("inf"):
        x, dims = _dims(call)
        return _infinite_entries(call, x, dims, "any")
    x, dims = _dims(call)
    o = call.outs[0]
    mag = call.value(x).abs()
    mask = mag == o.reshape(keep_shape(x.shape, dims)).to(mag.dtype)   # autograd: nan entries get 0
    return [reduce(call.prov(x), x.shape, dims, mask.expand(x.shape))]


def _infinite_entries(call, x, dims, what):
    """Local mode: a slice holding an infinite entry (``+inf`` for logsumexp, ``+-inf`` for norms)
    has an infinite result; the finite entries' derivative is 0 around this point."""
    xv = call.value(x)
    big = torch.isposinf(xv) if what == "pos" else torch.isinf(xv)
    anyb = big.reshape(x.shape).amax(dim=dims, keepdim=True) if x.dim() else big
    keep = torch.where(anyb.expand(x.shape), big, torch.ones_like(big))
    if what == "pos":   # exp(-inf) = 0: -inf entries feed nothing (unless the whole slice is -inf)
        dead = torch.isneginf(xv)
        alldead = dead.reshape(x.shape).amin(dim=dims, keepdim=True) if x.dim() else dead
        keep &= ~dead | alldead.expand(x.shape)
    return [reduce(call.prov(x), x.shape, dims, keep)] if bool((~keep).any()) else reduction(call)


@rule(aten.logsumexp, aten.special_logsumexp)
def logsumexp(call):
    """Local mode: an entry whose weight ``exp(x - lse)`` is exactly 0 here (float underflow, or
    ``-inf``) has derivative 0 at this point, as autograd computes it; ``+inf`` entries see
    :func:`_infinite_entries`."""
    if not call.local:
        return reduction(call)
    x, dims = _dims(call)
    xv, out = call.value(x), call.outs[0]
    if x.dim() and xv.numel():
        ov = out.reshape(keep_shape(x.shape, dims))
        under = (torch.exp(xv - ov) == 0) & torch.isfinite(ov).expand(x.shape)
        if bool(under.any()) and not bool(torch.isposinf(xv).any()):
            return [reduce(call.prov(x), x.shape, dims, ~under)]
    return _infinite_entries(call, x, dims, "pos")


@rule(aten.nansum, aten.nanmean)
def nan_reduction(call):
    """``nansum``/``nanmean``: nan entries are skipped; in local mode the ones that are nan here."""
    if not call.local:
        return reduction(call)
    x, dims = _dims(call)
    keep = ~torch.isnan(call.value(x))
    return [reduce(call.prov(x), x.shape, dims, keep)]


@rule(aten.var, aten.std, aten.var_mean, aten.std_mean)
def variance(call):
    """``var``/``std`` (and ``var_mean``/``std_mean``): a slice of one element has variance 0."""
    x, dims = _dims(call)
    count = 1
    for d in dims:
        count *= x.shape[d] if x.dim() else 1
    res = reduction(call)
    if count <= 1:
        res[0] = None
    return res


@rule(aten.segment_reduce, indices=("lengths", "indices", "offsets"))
def segment_reduce(call):
    """Segments along ``axis`` (from ``lengths`` or ``offsets``) reduce to one element each;
    ``max``/``min`` in local mode keep the elements equal to the result (``initial`` may win)."""
    x = call.bound["data"]
    p = call.prov(x)
    if p is None:
        return None
    o = call.outs[0]
    axis = call.bound.get("axis", 0) % x.dim()
    lengths, offsets = call.bound.get("lengths"), call.bound.get("offsets")
    if offsets is None:
        lengths = call.value(lengths)
        offsets = torch.cat([torch.zeros_like(lengths[..., :1]), lengths.cumsum(-1)], -1)
    else:
        offsets = call.value(offsets)
    n_seg = offsets.shape[-1] - 1
    lead = x.shape[:axis]
    offsets = offsets.reshape(-1, n_seg + 1)
    pos = torch.arange(x.shape[axis], device=x.device)
    seg = torch.searchsorted(offsets[:, 1:].contiguous(), pos.expand(offsets.shape[0], -1).contiguous(),
                             right=True)                                  # (lead, len along axis)
    seg = seg.reshape(tuple(lead) + (x.shape[axis],) + (1,) * (x.dim() - axis - 1)).expand(x.shape)
    oc = codes(o.shape, o.device)
    inside = seg < n_seg
    dest = oc.gather(axis, seg.clamp(max=n_seg - 1))
    if call.local and call.bound["reduce"] in ("max", "min"):
        xv = call.value(x)
        inside = inside & ((xv == o.gather(axis, seg.clamp(max=n_seg - 1))) | torch.isnan(xv))
    dest = torch.where(inside, dest, -1)
    return [scatter(p, dest.reshape(-1), o.numel())]


@rule(aten.kthvalue, aten.mode)
def _with_indices(call):
    """``(values, indices)`` reductions over one dim: local mode follows the returned index."""
    if not call.local:
        return reduction(call)
    x, dims = _dims(call)
    indices = call.outs[1]
    idx = indices if call.bound.get("keepdim") or x.dim() == 0 else indices.unsqueeze(dims[0])
    return take_along(call.prov(x), x.shape, dims[0], idx.reshape(keep_shape(x.shape, dims)))


@rule(aten.amax, aten.amin, aten.aminmax)
def _tied(call):
    """Full reductions without indices (``amax``, ``median()``): local mode keeps every tied element,
    and every nan element (autograd's ``max()`` spreads the derivative over the nan entries)."""
    if not call.local:
        return reduction(call)
    x, dims = _dims(call)
    xv = call.value(x)
    res = []
    for o in call.outs:
        if o.dtype not in DIFFERENTIABLE:
            res.append(None)
            continue
        mask = (xv == o.reshape(keep_shape(x.shape, dims))) | torch.isnan(xv)
        res.append(reduce(call.prov(x), x.shape, dims, mask.expand(x.shape)))
    return res


@rule(aten.cumsum, aten.cumprod, aten.logcumsumexp)
def scan(call):
    """``cumsum``-like: element ``k`` along ``dim`` depends on elements ``0..k``."""
    x = call.bound["self"]
    p = call.prov(x)
    if p is None:
        return None
    dim = call.bound["dim"] % max(x.dim(), 1)
    pos = codes(x.shape, p.device).reshape(x.shape if x.dim() else (1,)).movedim(dim, -1)
    n = pos.shape[-1]
    tri = torch.tril(torch.ones(n, n, dtype=torch.bool, device=p.device))
    pairs = tri.expand(*pos.shape[:-1], n, n)
    if call.local and call.func.overloadpacket is aten.logcumsumexp and x.dim():
        # d out[k] / d x[j] = exp(x[j] - out[k]): exactly 0 here where that underflows (with a
        # margin, as autograd's formula may round differently near the threshold)
        xv = call.value(x).movedim(dim, -1)
        ov = call.outs[0].movedim(dim, -1)
        floor = math.log(torch.finfo(xv.dtype).smallest_normal) - 60
        pairs = pairs & ~((xv.unsqueeze(-2) - ov.unsqueeze(-1)) < floor)
    out_rows = pos.unsqueeze(-1).expand(*pos.shape, n)[pairs]
    in_rows = pos.unsqueeze(-2).expand(*pos.shape[:-1], n, n)[pairs]
    res = scatter(p, out_rows.reshape(-1), p.numel, in_rows.reshape(-1))
    return [res if o.dtype in DIFFERENTIABLE else None for o in call.outs]


@rule(aten.cummax, aten.cummin)
def _scan_choice(call):
    """``cummax``/``cummin``: local mode follows the returned index."""
    if not call.local:
        return scan(call)
    x = call.bound["self"]
    dim = call.bound["dim"] % max(x.dim(), 1)
    idx = call.outs[1].reshape(x.shape)
    return take_along(call.prov(x), x.shape, dim, idx)


@rule(aten.sort, aten.topk)
def sort_like(call):
    """``sort``/``topk``: global mode, any element of the line; local mode, the one at the index."""
    x = call.bound["self"]
    dim = call.bound.get("dim", -1) % max(x.dim(), 1)
    if not call.local:
        p = reduce(call.prov(x), x.shape, [dim] if x.dim() else [])
        return bcast(p, keep_shape(x.shape, [dim]), call.outs[0].shape) if x.dim() else p
    return take_along(call.prov(x), x.shape, dim, call.outs[1]) if x.dim() else call.prov(x)


def _by_overload(call, binary):
    """``max``/``min``/``median`` packets: binary (``other``), over a dim, or over everything."""
    if "other" in call.bound:
        return binary(call)
    return (_with_indices if "dim" in call.bound else _tied)(call)


@rule(aten.max)
def _max(call):
    return _by_overload(call, pointwise.maximum)


@rule(aten.min)
def _min(call):
    return _by_overload(call, pointwise.minimum)


@rule(aten.median, aten.nanmedian)
def _median(call):
    return _by_overload(call, None)
