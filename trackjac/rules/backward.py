"""Backward ops that a traced backward pass (``hessian_sparsity``) reaches: convolution, pooling,
padding, nearest upsampling and shrinkage backwards.

Each is linear in ``grad_output`` with a structure fixed by the forward op, so the result is the
forward pattern transposed: ``grad_input[j]`` unites ``grad_output[o]`` over the outputs ``o`` that
read input ``j``.  The forward pattern comes from the forward rule's own tables, run on a seed
(element ``j`` depends on id ``j``).  ``self`` is read for its shape and, for max pooling, to
choose: no derivative flows through it.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from ..provenance import Provenance, SetProv, scatter
from .conv import _adaptive_table, _conv_tables, _expand, _geometry, _prod, _spatial, _tap_table, strided_table, windows
from .gradient import structural_zeros
from .pointwise import _select, _v, generic
from .registry import register, rule
from .shapes import codes, reduce, union_opt

aten = torch.ops.aten
I64 = torch.int64


def _transposed(call, fwd: Optional[Provenance], n_in: int) -> Optional[Provenance]:
    """``grad_input`` from the forward pattern ``fwd`` (rows: outputs, ids: inputs ``0 .. n_in-1``)."""
    g = call.prov(call.bound["grad_output"])
    if g is None or fwd is None or fwd.nnz == 0:
        return None
    rows, ids = fwd.rows(), fwd.col
    keep = ids >= 0
    return scatter(g, ids[keep], n_in, rows[keep])


def _forward_windows(x: torch.Tensor, d: int, tables) -> Optional[Provenance]:
    lead, _ = _spatial(x, d)
    seed = SetProv.identity(x.numel(), 0, x.device)
    return windows(seed, x.shape, len(lead), tables)[0]


def _at_indices(call, x: torch.Tensor, d: int) -> Optional[Provenance]:
    """Max pooling's backward at this point: ``grad_output[o]`` goes to the input at ``indices[o]``."""
    g = call.prov(call.bound["grad_output"])
    if g is None:
        return None
    lead, sp = _spatial(x, d)
    plane = 1
    for s in sp:
        plane *= int(s)
    idx = call.value(call.bound["indices"]).to(device=g.device, dtype=I64)
    go = call.value(call.bound["grad_output"])
    base = (torch.arange(x.numel() // max(plane, 1), dtype=I64, device=g.device) * plane).reshape(
        tuple(lead) + (1,) * d)
    target = (base + idx).expand(go.shape).reshape(-1)
    return scatter(g, target, x.numel())


def _pool_tables(call, x, go, d: int, dilation: bool):
    _, s_in = _spatial(x, d)
    s_out = tuple(go.shape[-d:])
    ks = _expand(call.bound["kernel_size"], d, 1)
    st = _expand(call.bound.get("stride"), d, ks)
    pd = _expand(call.bound.get("padding"), d, 0)
    dl = _expand(call.bound.get("dilation"), d, 1) if dilation else [1] * d
    return [strided_table(s_in[j], s_out[j], ks[j], st[j], pd[j], dl[j], x.device) for j in range(d)]


def _avg_pool_backward(d: int):
    def avg_pool_backward(call):
        x, go = call.value(call.bound["self"]), call.value(call.bound["grad_output"])
        return _transposed(call, _forward_windows(x, d, _pool_tables(call, x, go, d, False)), x.numel())
    return avg_pool_backward


def _adaptive_backward(d: int, is_max: bool):
    def adaptive_backward(call):
        x, go = call.value(call.bound["self"]), call.value(call.bound["grad_output"])
        if is_max and call.local:
            return _at_indices(call, x, d)
        _, s_in = _spatial(x, d)
        tables = [_adaptive_table(s_in[j], go.shape[-d + j], x.device) for j in range(d)]
        return _transposed(call, _forward_windows(x, d, tables), x.numel())
    return adaptive_backward


def _max_pool_backward(d: int):
    def max_pool_backward(call):
        """Global: every input of the window (the indices are a choice by value); local: the index."""
        x, go = call.value(call.bound["self"]), call.value(call.bound["grad_output"])
        if call.local:
            return _at_indices(call, x, d)
        return _transposed(call, _forward_windows(x, d, _pool_tables(call, x, go, d, True)), x.numel())
    return max_pool_backward


register([aten.avg_pool2d_backward], _avg_pool_backward(2))
register([aten.avg_pool3d_backward], _avg_pool_backward(3))
register([aten._adaptive_avg_pool2d_backward], _adaptive_backward(2, False))
register([aten._adaptive_avg_pool3d_backward], _adaptive_backward(3, False))
register([aten.adaptive_max_pool2d_backward], _adaptive_backward(2, True))
register([aten.adaptive_max_pool3d_backward], _adaptive_backward(3, True))
register([aten.max_pool3d_with_indices_backward], _max_pool_backward(3))


def _replication_pad_backward(pad_op):
    def replication_pad_backward(call):
        """The forward gathers clamped indices: run it on the input's element codes to read them."""
        g = call.prov(call.bound["grad_output"])
        if g is None:
            return None
        x = call.value(call.bound["self"])
        codes = torch.arange(x.numel(), dtype=torch.float64, device=x.device).reshape(x.shape)
        src = pad_op(codes, call.bound["padding"]).reshape(-1).to(I64)
        return scatter(g, src, x.numel())
    return replication_pad_backward


register([aten.replication_pad1d_backward], _replication_pad_backward(aten.replication_pad1d))
register([aten.replication_pad2d_backward], _replication_pad_backward(aten.replication_pad2d))
register([aten.replication_pad3d_backward], _replication_pad_backward(aten.replication_pad3d))


def _nearest_backward(forward):
    def nearest_backward(call):
        """The forward gathers one input per output: run it on the input's element codes."""
        g = call.prov(call.bound["grad_output"])
        if g is None:
            return None
        shape = [int(s) for s in call.bound["input_size"]]
        scales = [v for k, v in call.bound.items() if k.startswith("scales")]
        codes_in = torch.arange(_prod(shape), dtype=torch.float64, device=g.device).reshape(shape)
        src = forward(codes_in, call.bound["output_size"], *scales).reshape(-1).to(I64)
        return scatter(g, src, _prod(shape))
    return nearest_backward


for _d in (1, 2, 3):
    register([getattr(aten, f"upsample_nearest{_d}d_backward")],
             _nearest_backward(getattr(aten, f"upsample_nearest{_d}d").default))
    register([getattr(aten, f"_upsample_nearest_exact{_d}d_backward")],
             _nearest_backward(getattr(aten, f"_upsample_nearest_exact{_d}d").default))


@rule(aten.hardshrink_backward, aten.softshrink_backward)
def _shrink_backward(call):
    """``grad_out * (|self| > lambd)``: piecewise constant in ``self``; local mode keeps ``grad_out``
    where autograd passes it."""
    name = "grad_out" if "grad_out" in call.bound else "grad_output"
    if not call.local:
        return generic(call, skip=("self",))
    s = _v(call, "self")
    return _select(call, {name: ~(s.abs() <= _v(call, "lambd")),
                          "self": torch.zeros((), dtype=torch.bool, device=s.device)})


@rule(aten.convolution_backward)
def _convolution_backward(call):
    """``(grad_input, grad_weight, grad_bias)``: every (output, input, weight) triple of the
    convolution (the cost of the convolution itself) pushes ``grad_output`` and ``weight`` into
    ``grad_input`` and ``grad_output`` and ``input`` into ``grad_weight``; ``grad_bias`` sums
    ``grad_output`` over batch and space.  A structurally zero ``grad_output`` element (see
    :mod:`.gradient`) pushes nothing."""
    go_t, x_t, w_t = call.bound["grad_output"], call.bound["input"], call.bound["weight"]
    go, x, w = call.value(go_t), call.value(x_t), call.value(w_t)
    pg, px, pw = call.prov(go_t), call.prov(x_t), call.prov(w_t)
    mask = list(call.bound["output_mask"])
    d = w.dim() - 2
    transposed = bool(call.bound["transposed"])
    groups = int(call.bound["groups"])
    stride = _expand(call.bound["stride"], d, 1)
    padding = _expand(call.bound["padding"], d, 0)
    dilation = _expand(call.bound["dilation"], d, 1)
    _, _, n, c_in, s_in, c_out, s_out, g, icg, ocg, ksz = _geometry(x.shape, w.shape, go.shape, groups)
    dev = go.device
    tabs = [_conv_tables(s_in[j], s_out[j], ksz[j], stride[j], padding[j], dilation[j], transposed, dev)
            for j in range(d)]
    taps = _tap_table(tabs, s_in)                               # (so, kf): input read at (o, k)
    kf, so, si = _prod(ksz), _prod(s_out), _prod(s_in)
    wcode = (codes((g, ocg, icg, kf), dev) if not transposed
             else codes((g, icg, ocg, kf), dev).permute(0, 2, 1, 3))
    gg, oc, ic, kk = torch.ones((g, ocg, icg, kf), dtype=torch.bool, device=dev).nonzero(as_tuple=True)
    ii = taps[:, kk]
    o_idx, e = (ii >= 0).nonzero(as_tuple=True)
    bn = torch.arange(n, dtype=I64, device=dev).view(-1, 1)
    out_i = (((gg * ocg + oc)[e] * so + o_idx).view(1, -1) + bn * (c_out * so)).reshape(-1)
    x_i = (((gg * icg + ic)[e] * si + ii[o_idx, e]).view(1, -1) + bn * (c_in * si)).reshape(-1)
    w_i = wcode[gg, oc, ic, kk][e].view(1, -1).expand(n, -1).reshape(-1)
    zs = structural_zeros(call, go_t)
    if zs is not None:
        live = ~zs.reshape(-1)[out_i]
        out_i, x_i, w_i = out_i[live], x_i[live], w_i[live]
    res: List[Optional[Provenance]] = [None, None, None]
    if mask[0]:
        res[0] = union_opt([scatter(p, x_i, x.numel(), src) for p, src in ((pg, out_i), (pw, w_i))
                            if p is not None], x.numel(), dev)
    if mask[1]:
        res[1] = union_opt([scatter(p, w_i, w.numel(), src) for p, src in ((pg, out_i), (px, x_i))
                            if p is not None], w.numel(), dev)
    if len(mask) > 2 and mask[2] and pg is not None:
        res[2] = reduce(pg, (n, c_out, so), [0, 2])
    return [r for r, m in zip(res, mask) if m]   # the outputs not asked for are undefined, not passed
