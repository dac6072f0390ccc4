"""Indexing, gathering and scattering.

Ops that pick elements (``index``, ``gather``, ``take``, non-accumulating
``index_put``/``scatter``) are traced by the index-code rule of
:mod:`.movement`.  Accumulating ops (``index_add``, ``scatter_add``,
``index_put(accumulate=True)``) *push* each source element into its destination,
merging with what is there.

Indices and masks computed from tracked values are choices: every rule here declares its
index arguments (``indices=`` of :func:`~.registry.rule`), and in global mode a derived one
gets the rule's ``candidates`` instead: every element the op reads (the default), or a
tighter bound where the op's structure gives one (``gather`` and ``index_select`` pick along
one dim; the ``i``-th element a boolean mask selects from ``n`` with ``c`` selected lies at
flat position ``i .. i + n - c``).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..provenance import scatter, union
from .api import all_candidates
from .pointwise import generic
from .registry import present, register, rule
from .shapes import bcast, codes, keep_shape, reduce
from .movement import moved

aten = torch.ops.aten

#: most (output, candidate) pairs a positional bound may build; beyond: every candidate
_BAND_LIMIT = 1 << 24


def _along(call, x_name: str, dims) -> Optional[object]:
    """Candidates when the indices along ``dims`` of ``x`` are choices: an output element may come
    from any position along ``dims``, at its own other coordinates (``x.expand``-broadcast to
    the output; the output has ``x``'s other dims)."""
    x = call.bound[x_name]
    p = call.prov(x)
    o = call.outs[0]
    if p is None:
        return None
    if x.dim() == 0:
        return bcast(p, (), o.shape)
    return bcast(reduce(p, x.shape, dims), keep_shape(x.shape, dims), o.shape)


def _gather_candidates(call):
    """``gather(self, dim, index)`` with a derived ``index``: ``out[..., j, ...]`` is some
    ``self[..., k, ...]`` at the same other coordinates (``index`` may be smaller than ``self``)."""
    x, index = call.bound["self"], call.value(call.bound["index"])
    p = call.prov(x)
    if p is None or x.dim() == 0:
        return all_candidates(call)
    dim = call.bound["dim"] % x.dim()
    ks = keep_shape(x.shape, [dim])
    rows = codes(ks, p.device).gather(dim, torch.zeros(index.shape, dtype=torch.int64, device=p.device))
    return reduce(p, x.shape, [dim]).gather(rows.reshape(-1))


def _take_along_dim_candidates(call):
    x, dim = call.bound["self"], call.bound.get("dim")
    if dim is None or x.dim() == 0:
        return all_candidates(call)
    return _along(call, "self", [dim % x.dim()])


def _index_select_candidates(call):
    x = call.bound["self"]
    if x.dim() == 0:
        return all_candidates(call)
    return _along(call, "self", [call.bound["dim"] % x.dim()])


def _band_pairs(n: int, c: int, device):
    """``(k, q)``: the ``k``-th of ``c`` elements selected from ``n`` may be element ``q``
    (``k <= q <= k + n - c``); ``None`` if too many pairs."""
    w = n - c + 1
    if c * w > _BAND_LIMIT or c > n:
        return None
    k = torch.arange(c, device=device)
    q = k[:, None] + torch.arange(w, device=device)
    return k[:, None].expand(c, w).reshape(-1), q.reshape(-1)


def _selected(p, n: int, rest: int, c: int):
    """Provenance of ``src[mask]`` (``src`` as ``(n, rest)`` rows, ``c`` selected) with a mask that
    is a choice: row ``(k, r)`` unites ``(q, r)`` for ``q`` in the band of :func:`_band_pairs`."""
    pairs = _band_pairs(n, c, p.device)
    if pairs is None or c * (n - c + 1) * rest > _BAND_LIMIT:
        return None
    k, q = pairs
    r = torch.arange(rest, device=p.device)
    out_rows = (k[:, None] * rest + r).reshape(-1)
    in_rows = (q[:, None] * rest + r).reshape(-1)
    return scatter(p, out_rows, c * rest, in_rows)


def _mask_select_candidates(call):
    """``masked_select(self, mask)`` with a derived mask: positional bound (see the module)."""
    x, mask, o = call.bound["self"], call.bound["mask"], call.outs[0]
    p = call.prov(x)
    if p is None:
        return None
    shape = torch.broadcast_shapes(x.shape, mask.shape)
    n = 1
    for s in shape:
        n *= s
    res = _selected(bcast(p, x.shape, shape), n, 1, o.numel())
    return all_candidates(call) if res is None else res


def _index_candidates(call):
    """``self[indices]`` with derived indices: a derived integer index may pick any position of its
    dim; one derived boolean mask (the only index) picks with the positional bound."""
    x = call.bound["self"]
    p = call.prov(x)
    if p is None:
        return None
    o = call.outs[0]
    idx = list(call.bound["indices"])
    tensors = [t for t in idx if t is not None]
    if any(t.dtype == torch.bool and call.varies(t) for t in tensors):
        if len(idx) != 1 or idx[0].dim() > x.dim() or idx[0].dim() == 0:
            return all_candidates(call)
        m = idx[0]
        n = m.numel()
        rest = x.numel() // max(n, 1)
        c = o.shape[0] if o.dim() else 0
        res = _selected(p, n, rest, c) if n else None
        return all_candidates(call) if res is None else res
    dims, plain, d = [], [], 0
    for t in idx:
        if t is None:
            plain.append(None)
            d += 1
        elif t.dtype == torch.bool:
            plain.append(call.value(t))
            d += t.dim()
        elif call.varies(t):
            dims.append(d)
            plain.append(torch.zeros(t.shape, dtype=torch.int64, device=p.device))
            d += 1
        else:
            plain.append(call.value(t))
            d += 1
    ks = keep_shape(x.shape, dims)
    rows = aten.index.Tensor(codes(ks, p.device), plain)
    return reduce(p, x.shape, dims).gather(rows.reshape(-1))


def _index_put_candidates(call):
    """``self[indices] = values`` with derived indices: ``self`` stays a candidate everywhere; with
    one derived boolean mask, position ``p`` (of ``n``, ``c`` selected) may receive ``values[k]``
    for ``p - (n - c) <= k <= p``; otherwise any value."""
    me, vals, o = call.bound["self"], call.bound["values"], call.outs[0]
    idx = list(call.bound["indices"])
    if not (len(idx) == 1 and idx[0] is not None and idx[0].dtype == torch.bool
            and 0 < idx[0].dim() <= me.dim()):
        return all_candidates(call)
    m = call.value(idx[0])
    n = m.numel()
    rest = me.numel() // max(n, 1)
    c = int(m.sum())
    parts = []
    ps = call.prov(me)
    if ps is not None:
        parts.append(bcast(ps, me.shape, o.shape))
    pv = call.prov(vals)
    if pv is not None and c:
        pv = bcast(pv, vals.shape, (c,) + tuple(me.shape[m.dim():]))
        pairs = _band_pairs(n, c, o.device)
        if pairs is None or c * (n - c + 1) * rest > _BAND_LIMIT:
            return all_candidates(call)
        k, q = pairs          # position q may receive value k
        r = torch.arange(rest, device=o.device)
        parts.append(scatter(pv, (q[:, None] * rest + r).reshape(-1), o.numel(),
                             (k[:, None] * rest + r).reshape(-1)))
    return union(parts, o.numel()) if parts else None


# elements picked by index: the index-code rule of :mod:`.movement`
register([aten.index, aten._unsafe_index], moved, kind="table:indexing", indices=("indices",),
         candidates=_index_candidates)
register([aten.index_select], moved, kind="table:indexing", indices=("index",),
         candidates=_index_select_candidates)
register([aten.gather], moved, kind="table:indexing", indices=("index",), candidates=_gather_candidates)
register([aten.take_along_dim], moved, kind="table:indexing", indices=("indices",),
         candidates=_take_along_dim_candidates)
register([aten.take], moved, kind="table:indexing", indices=("index",))
register([aten.masked_select], moved, kind="table:indexing", indices=("mask",),
         candidates=_mask_select_candidates)
register([aten.masked_scatter], moved, kind="table:indexing", indices=("mask",))
register([aten.index_fill], moved, kind="table:indexing", indices=("index",), candidates=generic)
register(present("_unsafe_masked_index"), moved, kind="table:indexing", indices=("mask", "indices"))

def _into(call, self_name: str, src_name: Optional[str], dest: torch.Tensor,
          src_pos: Optional[torch.Tensor] = None, keep_self: bool = True, reduce: Optional[str] = None):
    """Result = ``self`` with source elements (rows ``src_pos``) written into positions ``dest``.

    ``keep_self``: ``self``'s value stays part of the written positions (accumulation,
    ``include_self``); otherwise it is overwritten there.  Several sources written to one position
    all count (autograd's backward gathers the gradient for each of them).  ``reduce`` ``amax`` /
    ``amin`` in local mode keeps only the candidates equal to the result.
    """
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


@rule(aten.index_add, indices=("index",))
def index_add(call):
    return _into(call, "self", "source", _index_dest(call))


@rule(aten.index_copy, indices=("index",))
def index_copy(call):
    return _into(call, "self", "source", _index_dest(call), keep_self=False)


@rule(aten.index_reduce, indices=("index",))
def index_reduce(call):
    return _into(call, "self", "source", _index_dest(call),
                 keep_self=call.bound.get("include_self", True), reduce=call.bound["reduce"])


@rule(aten.scatter_add, indices=("index",))
def scatter_add(call):
    dest, sp = _scatter_dest(call)
    return _into(call, "self", "src", dest, sp)


@rule(aten.scatter, indices=("index",))
def scatter_op(call):
    """``scatter`` writes ``src`` (or a constant ``value``); with ``reduce`` it accumulates."""
    dest, sp = _scatter_dest(call)
    if call.bound.get("reduce") is None:
        return _into(call, "self", "src" if "src" in call.bound else None, dest, sp, keep_self=False)
    return _into(call, "self", "src" if "src" in call.bound else None, dest, sp)


@rule(aten.scatter_reduce, indices=("index",))
def scatter_reduce(call):
    dest, sp = _scatter_dest(call)
    return _into(call, "self", "src", dest, sp, keep_self=call.bound.get("include_self", True),
                 reduce=call.bound["reduce"])


@rule(aten.index_put, aten._unsafe_index_put, aten._index_put_impl, indices=("indices",),
      candidates=_index_put_candidates)
def index_put(call):
    me = call.bound["self"]
    indices = [None if i is None else call.value(i) for i in call.bound["indices"]]
    dest = codes(me.shape, me.device)[tuple(indices)]
    vals = call.bound["values"]
    sp = codes(vals.shape, me.device).expand(dest.shape)
    return _into(call, "self", "values", dest, sp, keep_self=bool(call.bound.get("accumulate")))


@rule(aten.put, indices=("index",))
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


register([aten.max_unpool2d], max_unpool(2), indices=("indices",))
register([aten.max_unpool3d], max_unpool(3), indices=("indices",))


def _embedding_candidates(call):
    """``embedding(weight, indices)`` with derived indices: ``out[..., d]`` is some ``weight[k, d]``."""
    return _along(call, "weight", [0])


@rule(aten.embedding, indices=("indices",), candidates=_embedding_candidates)
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


@rule(aten.embedding_renorm, indices=("indices",))
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
