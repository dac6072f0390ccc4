"""Recurrent layers: the fused ``mkldnn_rnn_layer`` (``nn.LSTM`` on CPU) and packed sequences.

``nn.GRU``, ``nn.RNN`` and packed-input RNNs run as ordinary ATen ops (``addmm``, ``sigmoid``
...), so their patterns come from those ops' rules; the fused LSTM layer gets the recurrence's
pattern here.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..dtypes import DIFFERENTIABLE
from ..provenance import Provenance, cat_rows, empty, scatter
from .api import conservative
from .movement import moved
from .registry import rule
from .shapes import bcast, codes, reduce, union_opt

aten = torch.ops.aten

_LSTM = 2   # ideep::rnn_kind::LSTM (the mode the LSTM layer passes)


def _unit_rows(prov: Optional[Provenance], shape, H: int, gates) -> Optional[Provenance]:
    """One row per hidden unit ``j``: the union of the weight rows ``g * H + j`` for the gates
    ``g`` in ``gates`` (all columns of a matrix, the entry of a bias)."""
    if prov is None:
        return None
    rows = reduce(prov, shape, list(range(1, len(shape)))) if len(shape) > 1 else prov
    r = torch.arange(shape[0], device=prov.device)
    keep = torch.zeros(shape[0], dtype=torch.bool, device=prov.device)
    for g in gates:
        keep |= (r >= g * H) & (r < (g + 1) * H)
    return scatter(rows, torch.where(keep, r % H, torch.full_like(r, -1)), H)


@rule(aten.mkldnn_rnn_layer)
def mkldnn_rnn_layer(call):
    """One fused recurrent layer over a time-major ``input`` ``(T, B, I)`` (the layer itself is
    time-major whatever ``batch_first`` says), weights ``w_ih (G*H, I)``, ``w_hh (G*H, H)``,
    biases ``(G*H,)`` and initial states ``hx``, ``cx`` ``(B, H)``.

    For the LSTM (gates ``i, f, g, o``), at step ``t`` and batch ``b``, unit ``j``::

        c_t[b, j] = c_{t-1}[b, j]  u  x_t[b, :]  u  h_{t-1}[b, :]  u  rows j of gates i, f, g
        h_t[b, j] = c_t[b, j]  u  row j of gate o

    (``h_{t-1}`` multiplies ``w_hh``; with ``call.drops_zeros`` a constant-zero ``h_{t-1}[b]``
    (the default initial state) connects no ``w_hh`` entry).  Other modes get the union of every
    gate row with ``h_{t-1}[b, j]``, a superset.  The workspace output has no derivative."""
    b = call.bound
    x, w_ih, w_hh, b_ih, b_hh, hx, cx = (b["input"], b["weight0"], b["weight1"], b["weight2"],
                                         b["weight3"], b["hx_"], b["cx_"])
    if len(b["batch_sizes"]) or x.dim() != 3:
        return conservative(call)
    T, B = x.shape[0], x.shape[1]
    H = b["hidden_size"]
    dev = call.outs[0].device
    lstm = b["mode"] == _LSTM
    G = w_ih.shape[0] // H
    gates_c = (0, 1, 2) if lstm else tuple(range(G))
    gates_o = (3,) if lstm else ()
    ih_c = union_opt([_unit_rows(call.prov(w_ih), w_ih.shape, H, gates_c),
                      _unit_rows(call.prov(b_ih), b_ih.shape, H, gates_c),
                      _unit_rows(call.prov(b_hh), b_hh.shape, H, gates_c)], H, dev)
    ih_o = union_opt([_unit_rows(call.prov(w_ih), w_ih.shape, H, gates_o),
                      _unit_rows(call.prov(b_ih), b_ih.shape, H, gates_o),
                      _unit_rows(call.prov(b_hh), b_hh.shape, H, gates_o)], H, dev) if lstm else None
    hh_c = _unit_rows(call.prov(w_hh), w_hh.shape, H, gates_c)
    hh_o = _unit_rows(call.prov(w_hh), w_hh.shape, H, gates_o) if lstm else None
    px = call.prov(x)
    xrow = reduce(px, x.shape, [2]) if px is not None else None          # (T, B, 1)
    BH = (B, H)

    def unit(p):       # (H,) rows broadcast over the batch
        return bcast(p, (1, H), BH)

    h = call.prov(hx)
    c = call.prov(cx) if lstm else None
    h_val = call.value(hx)
    ys = [None] * T
    out = call.outs[0]
    steps = range(T - 1, -1, -1) if b["reverse"] else range(T)
    for t in steps:
        live = None   # batches whose h_{t-1} reaches w_hh
        if call.drops_zeros:
            live = (h_val != 0).any(-1)
            if h is not None:
                live |= (h.lengths() > 0).reshape(BH).any(-1)
        hh_mask = None if live is None else live[:, None].expand(BH)
        hall = None if h is None else bcast(reduce(h, BH, [1]), (B, 1), BH)
        xt = None if xrow is None else bcast(xrow.gather(codes((T, B), dev)[t]), (B, 1), BH)
        whh_c = None if hh_c is None else bcast(hh_c, (1, H), BH, hh_mask)
        state = c if lstm else h
        new_c = union_opt([state, xt, hall, unit(ih_c), whh_c], B * H, dev)
        if lstm:
            whh_o = None if hh_o is None else bcast(hh_o, (1, H), BH, hh_mask)
            c = new_c
            h = union_opt([new_c, unit(ih_o), whh_o], B * H, dev)
        else:
            h = new_c
        ys[t] = h
        h_val = out[t]
    y = None if all(p is None for p in ys) else cat_rows(
        [p if p is not None else empty(B * H, dev) for p in ys])
    outs = [y, h, c if lstm else None]
    return [p if o.dtype in DIFFERENTIABLE else None for p, o in zip(outs, call.outs)] + [None]


@rule(aten._pack_padded_sequence, always=True)
def pack_padded_sequence(call):
    """``_pack_padded_sequence``: ``data`` moves elements of ``input`` (index codes, as the other
    data-movement ops); ``batch_sizes`` is computed from the given ``lengths``, a constant."""
    res = moved(call)
    call.plain = (1,)   # batch_sizes: torch's C++ reads its data, it must stay a plain tensor
    return [res[0], None]
