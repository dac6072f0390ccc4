"""Neural-network ops: softmax and normalization layers.

Convolution, pooling and interpolation live in :mod:`.conv`.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from ..tracked import DIFFERENTIABLE
from ._util import bcast, reduce, slice_union, union_opt

aten = torch.ops.aten


def softmax(call):
    """Each element depends on its whole slice along ``dim``."""
    x = call.bound["self"]
    dim = call.bound["dim"] % max(x.dim(), 1)
    if x.dim() == 0 or x.shape[dim] == 1:
        return [None]  # a slice of one element normalizes to a constant
    return [slice_union(call.prov(x), x.shape, [dim])]


def _affine(call, o, names, channel_shape):
    """Per-channel parameters (weight, bias, running stats) broadcast over the output."""
    parts = []
    for n in names:
        w = call.bound.get(n)
        if isinstance(w, torch.Tensor) and w.dtype in DIFFERENTIABLE:
            parts.append(bcast(call.prov(w), channel_shape, o.shape))
    return parts


def layer_norm(call):
    x = call.bound["input"]
    k = len(call.bound["normalized_shape"])
    dims = list(range(x.dim() - k, x.dim()))
    out = call.outs[0]
    parts = [slice_union(call.prov(x), x.shape, dims)]
    parts += _affine(call, out, ("weight", "bias"), (1,) * (x.dim() - k) + tuple(x.shape[-k:]))
    stats = reduce(call.prov(x), x.shape, dims)
    return [union_opt(parts, out.numel(), out.device), stats, stats]


def batch_norm(call):
    x = call.bound["input"]
    out = call.outs[0]
    ch = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    training = call.bound.get("training", True)
    names = ("weight", "bias") if training else ("weight", "bias", "running_mean", "running_var")
    dims = [d for d in range(x.dim()) if d != 1]
    parts = _affine(call, out, names, ch)
    if training:
        parts.append(slice_union(call.prov(x), x.shape, dims))
        stats = reduce(call.prov(x), x.shape, dims)
    else:
        parts.append(call.prov(x))
        stats = None
    res = [union_opt(parts, out.numel(), out.device)]
    for o in call.outs[1:]:
        res.append(stats if stats is not None and o.dtype in DIFFERENTIABLE and o.numel() == x.shape[1] else None)
    return res


def group_norm(call):
    x = call.bound["input"]
    n, c, g = call.bound["N"], call.bound["C"], call.bound["group"]
    out = call.outs[0]
    xs = (n, g, x.numel() // max(n * g, 1))
    parts = [slice_union(call.prov(x), xs, [2])]
    parts += _affine(call, out, ("weight", "bias"), (1, c) + (1,) * (x.dim() - 2))
    stats = reduce(call.prov(x), xs, [2])
    return [union_opt(parts, out.numel(), out.device), stats, stats]


def weight_norm(call):
    """``w = g * v / ||v||`` with the norm over every dim but ``dim``."""
    v, g = call.bound["v"], call.bound["g"]
    dim = call.bound.get("dim", 0)
    out = call.outs[0]
    dims = [d for d in range(v.dim()) if d != dim % max(v.dim(), 1)]
    parts = [slice_union(call.prov(v), v.shape, dims), bcast(call.prov(g), g.shape, v.shape)]
    return [union_opt(parts, out.numel(), out.device), reduce(call.prov(v), v.shape, dims)]


TABLE: Dict[object, Callable] = {
    aten._softmax: softmax,
    aten._log_softmax: softmax,
    aten._safe_softmax: softmax,
    aten.native_layer_norm: layer_norm,
    aten.native_batch_norm: batch_norm,
    aten._native_batch_norm_legit: batch_norm,
    aten._native_batch_norm_legit_no_training: lambda c: batch_norm(_no_training(c)),
    aten._native_batch_norm_legit_functional: batch_norm,
    aten.native_group_norm: group_norm,
    aten._weight_norm_interface: weight_norm,
}


def _no_training(call):
    call.bound["training"] = False
    return call
