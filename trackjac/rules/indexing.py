"""Indexing, gathering and scattering.

Ops that pick elements (``index``, ``gather``, ``take``, non-accumulating
``index_put``/``scatter``) are traced by the index-code rule of
:mod:`.movement`.  Accumulating ops (``index_add``, ``scatter_add``,
``index_put(accumulate=True)``) *push* each source element into its destination,
merging with what is there.  Indices computed from tracked values make every
candidate possible in global mode.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from .._prov import union
from ..tracked import DIFFERENTIABLE
from ._util import bcast, codes
from .movement import _derived_choice, all_candidates, identity, moved

aten = torch.ops.aten


def _push(call, self_name: str, src_name: str, dest: torch.Tensor, src_pos: Optional[torch.Tensor] = None):
    """Result = ``self`` with each source element (at ``src_pos``) merged into ``dest``."""
    if _derived_choice(call):
        return all_candidates(call)
    me, src = call.bound[self_name], call.bound[src_name]
    o = call.outs[0]
    ps, pv = call.prov(me), call.prov(src) if isinstance(src, torch.Tensor) else None
    parts = []
    if ps is not None:
        parts.append(bcast(ps, me.shape, o.shape))
    if pv is not None:
        pushed = pv.scatter(dest.reshape(-1), o.numel(),
                            None if src_pos is None else src_pos.reshape(-1))
        parts.append(pushed)
    return [union(parts, o.numel()) if parts else None] + [None] * (len(call.outs) - 1)


def index_add(call):
    me, dim, index = call.bound["self"], call.bound["dim"], call.value(call.bound["index"])
    dest = codes(me.shape, index.device).index_select(dim, index) if me.dim() else codes((1,), index.device)
    return _push(call, "self", "source", dest)


def scatter_add(call):
    me, dim, index = call.bound["self"], call.bound["dim"], call.value(call.bound["index"])
    src = call.bound["src"]
    dest = codes(me.shape, index.device).gather(dim, index)
    sp = codes(src.shape, index.device)[tuple(slice(0, s) for s in index.shape)]
    return _push(call, "self", "src", dest, sp)


def scatter(call):
    if call.bound.get("reduce") is None:
        return moved(call)
    if "src" in call.bound:
        return scatter_add(call)
    return identity(call)  # self combined with a constant: dependencies unchanged


def scatter_reduce(call):
    return scatter_add(call)


def index_put(call):
    if not call.bound.get("accumulate"):
        return moved(call)
    me = call.bound["self"]
    indices = [None if i is None else call.value(i) for i in call.bound["indices"]]
    dest = codes(me.shape, me.device)[tuple(indices)]
    vals = call.bound["values"]
    sp = codes(vals.shape, me.device).expand(dest.shape)
    return _push(call, "self", "values", dest, sp)


def index_reduce(call):
    return _push(call, "self", "source",
                 codes(call.bound["self"].shape, call.bound["self"].device).index_select(
                     call.bound["dim"], call.value(call.bound["index"])))


def col2im(call):
    """Adjoint of ``im2col``: each column element is added into the image pixel it came from."""
    x, o = call.bound["self"], call.outs[0]
    p = call.prov(x)
    if p is None:
        return [None]
    img = (codes(o.shape, o.device) + 1).to(torch.float64)
    dest = aten.im2col(img, call.bound["kernel_size"], call.bound["dilation"],
                       call.bound["padding"], call.bound["stride"]).to(torch.int64) - 1
    return [p.scatter(dest.reshape(-1), o.numel())]


TABLE: Dict[object, Callable] = {
    **{op: moved for op in (
        aten.index, aten._unsafe_index, aten.index_select, aten.gather, aten.take,
        aten.masked_select, aten.masked_scatter, aten.index_fill, aten.index_copy,
        aten.embedding, aten._unsafe_masked_index, aten.take_along_dim)},
    aten.index_put: index_put,
    aten._unsafe_index_put: index_put,
    aten._index_put_impl: index_put,
    aten.index_add: index_add,
    aten.scatter_add: scatter_add,
    aten.scatter: scatter,
    aten.scatter_reduce: scatter_reduce,
    aten.index_reduce: index_reduce,
    aten.col2im: col2im,
}
