"""Backward ops that a traced backward pass (``hessian_sparsity``) reaches: pooling, padding and
shrinkage backwards.

Each is linear in ``grad_output`` with a structure fixed by the forward op, so the result is the
forward pattern transposed: ``grad_input[j]`` unites ``grad_output[o]`` over the outputs ``o`` that
read input ``j``.  The forward pattern comes from the forward rule's own tables, run on a seed
(element ``j`` depends on id ``j``).  ``self`` is read for its shape and, for max pooling, to
choose: no derivative flows through it.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..provenance import Provenance, SetProv, scatter
from .conv import _adaptive_table, _expand, _spatial, strided_table, windows
from .pointwise import _select, _v, generic
from .registry import register, rule

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
