"""Indexing, gathering and scattering.

Ops that pick elements (``index``, ``gather``, ``take``, non-accumulating
``index_put``/``scatter``) are traced by the index-code rule of
:mod:`.movement`.  Accumulating ops (``index_add``, ``scatter_add``,
``index_put(accumulate=True)``) *push* each source element into its destination,
merging with what is there.  Indices computed from tracked values make every
candidate possible in global mode.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..provenance import scatter, union
from .registry import register, rule
from .shapes import bcast, codes, reduce
from .movement import _derived_choice, all_candidates, moved

aten = torch.ops.aten

# elements picked by index: the index-code rule of :mod:`.movement`
register([aten.index, aten._unsafe_index, aten.index_select, aten.gather, aten.take,
          aten.masked_select, aten.masked_scatter, aten.index_fill,
          aten._unsafe_masked_index, aten.take_along_dim], moved, kind="table:indexing")

def _into(call, self_name: str, src_name: Optional[str], dest: torch.Tensor,
          src_pos: Optional[torch.Tensor] = None, keep_self: bool = True, reduce: Optional[str] = None):
    """Result = ``self`` with source elements (rows ``src_pos``) written into positions ``dest``.

    ``keep_self``: ``self``'s value stays part of the written positions (accumulation,
    ``include_self``); otherwise it is overwritten there.  Several sources written to one position
    all count (autograd's backward gathers the gradient for each of them).  ``reduce`` ``amax`` /
    ``amin`` in local mode keeps only the candidates equal to the result.
    """
    if _derived_choice(call):
        return all_candidates(call)
    me = call.bound[self_name]
    src = call.bound.get(src_name) if src_name else None
    o = call.outs[0]
    n = o.numel()
    dest = dest.reshape(-1)
    sp = None if src_pos is None else src_pos.reshape(-1)
    choose = call.local and reduce in ("amax", "amin")
    out_flat = o.reshape(-1)
    parts = []
    ps = call.prov(me)
    if ps is not None:
        ps = bcast(ps, me.shape, o.shape)
        keep = torch.ones(n, dtype=torch.bool, device=o.device)
        if not keep_self:
            keep[dest] = False
        if choose:
            mine = call.value(me).expand(o.shape).reshape(-1)
            received = torch.zeros(n, dtype=torch.bool, device=o.device)
            received[dest] = True
            keep &= ~received | (mine == out_flat)
        if not bool(keep.all()):
            ps = ps.gather(torch.where(keep, torch.arange(n, device=o.device), -1))
        parts.append(ps)
    pv = call.prov(src) if isinstance(src, torch.Tensor) else None
    if pv is not None:
        d = dest
        if choose:
            sv = call.value(src).reshape(-1)
            sv = sv if sp is None else sv[sp]
            d = torch.where(sv == out_flat[dest], dest, -1)
        parts.append(scatter(pv, d, n, sp))
    return union(parts, n) if parts else None


def _index_dest(call):
    me, dim, index = call.bound["self"], call.bound["dim"], call.value(call.bound["index"])
    if me.dim() == 0:
        return codes((1,), index.device).expand(index.numel())
    return codes(me.shape, index.device).index_select(dim, index)


def _scatter_dest(call, src_name="src"):
    me, dim, index = call.bound["self"], call.bound["dim"], call.value(call.bound["index"])
    dest = codes(me.shape, index.device).gather(dim, index)
    src = call.bound.get(src_name)
    sp = None
    if isinstance(src, torch.Tensor):
        sp = codes(src.shape, index.device)[tuple(slice(0, s) for s in index.shape)]
    return dest, sp


@rule(aten.index_add)
def index_add(call):
    return _into(call, "self", "source", _index_dest(call))


@rule(aten.index_copy)
def index_copy(call):
    return _into(call, "self", "source", _index_dest(call), keep_self=False)


@rule(aten.index_reduce)
def index_reduce(call):
    return _into(call, "self", "source", _index_dest(call),
                 keep_self=call.bound.get("include_self", True), reduce=call.bound["reduce"])


@rule(aten.scatter_add)
def scatter_add(call):
    dest, sp = _scatter_dest(call)
    return _into(call, "self", "src", dest, sp)


@rule(aten.scatter)
def scatter_op(call):
    """``scatter`` writes ``src`` (or a constant ``value``); with ``reduce`` it accumulates."""
    dest, sp = _scatter_dest(call)
    if call.bound.get("reduce") is None:
        return _into(call, "self", "src" if "src" in call.bound else None, dest, sp, keep_self=False)
    return _into(call, "self", "src" if "src" in call.bound else None, dest, sp)


@rule(aten.scatter_reduce)
def scatter_reduce(call):
    dest, sp = _scatter_dest(call)
    return _into(call, "self", "src", dest, sp, keep_self=call.bound.get("include_self", True),
                 reduce=call.bound["reduce"])


@rule(aten.index_put, aten._unsafe_index_put, aten._index_put_impl)
def index_put(call):
    me = call.bound["self"]
    indices = [None if i is None else call.value(i) for i in call.bound["indices"]]
    dest = codes(me.shape, me.device)[tuple(indices)]
    vals = call.bound["values"]
    sp = codes(vals.shape, me.device).expand(dest.shape)
    return _into(call, "self", "values", dest, sp, keep_self=bool(call.bound.get("accumulate")))


@rule(aten.put)
def put(call):
    """``self.flatten()[index] = source`` (``+=`` with ``accumulate``)."""
    me, index = call.bound["self"], call.value(call.bound["index"])
    dest = codes((me.numel(),), index.device)[index.reshape(-1)]
    return _into(call, "self", "source", dest, keep_self=bool(call.bound.get("accumulate")))


def max_unpool(nd: int):
    """``out.flatten(-nd)[..., indices] = self``: every input element lands where its index says."""
    def run(call):
        x, idx, o = call.bound["self"], call.value(call.bound["indices"]), call.outs[0]
        p = call.prov(x)
        if p is None:
            return None
        lead = codes(o.shape, o.device).flatten(-nd)
        lead = lead.reshape(-1, lead.shape[-1])
        dest = lead.gather(1, idx.reshape(lead.shape[0], -1))
        return scatter(p, dest.reshape(-1), o.numel())
    run.__name__ = run.__qualname__ = f"max_unpool{nd}d"
    return run


register([aten.max_unpool2d], max_unpool(2))
register([aten.max_unpool3d], max_unpool(3))


@rule(aten.embedding)
def embedding(call):
    """Rows picked by ``indices``; the ``padding_idx`` row gets no gradient (autograd), so none here."""
    res = moved(call)
    pad = call.bound.get("padding_idx", -1)
    if res[0] is None or pad is None or pad < 0:
        return res
    idx = call.value(call.bound["indices"])
    keep = (idx != pad).unsqueeze(-1).expand(call.outs[0].shape).reshape(-1)
    n = keep.numel()
    return res[0].gather(torch.where(keep, torch.arange(n, device=keep.device), -1))


@rule(aten.embedding_renorm)
def embedding_renorm(call):
    """Rows named by ``indices`` are rescaled by their norm (local mode: those over ``max_norm``)."""
    w = call.bound["self"]
    p = call.prov(w)
    if p is None:
        return None
    rows = torch.zeros(w.shape[0], dtype=torch.bool, device=w.device)
    rows[call.value(call.bound["indices"]).reshape(-1)] = True
    if call.local:
        norms = call.value(w).norm(p=call.bound["norm_type"], dim=1)
        rows &= norms > call.bound["max_norm"]
    scaled = rows.unsqueeze(1).expand(w.shape)
    return union([bcast(reduce(p, w.shape, [1], scaled), (w.shape[0], 1), w.shape, scaled),
                  bcast(p, w.shape, w.shape, ~scaled)], w.numel())


@rule(aten.col2im)
def col2im(call):
    """Adjoint of ``im2col``: each column element is added into the image pixel it came from."""
    x, o = call.bound["self"], call.outs[0]
    p = call.prov(x)
    if p is None:
        return None
    img = (codes(o.shape, o.device) + 1).to(torch.float64)
    dest = aten.im2col(img, call.bound["kernel_size"], call.bound["dilation"],
                       call.bound["padding"], call.bound["stride"]).to(torch.int64) - 1
    return scatter(p, dest.reshape(-1), o.numel())
