"""Neural-network ops: softmax and normalization layers.

Convolution, pooling and interpolation live in :mod:`.conv`.
"""
from __future__ import annotations

import torch

from ..dtypes import DIFFERENTIABLE
from ..provenance import scatter
from .registry import present, register, rule
from .shapes import bcast, codes, keep_shape, reduce, slice_union, union_opt

aten = torch.ops.aten


@rule(aten._softmax, *present("_safe_softmax"))
def softmax(call, log: bool = False):
    """Each element depends on its whole slice along ``dim``.

    An entry that is ``-inf`` contributes ``exp(-inf) = 0``: it feeds no other element.  That
    holds everywhere for a constant ``-inf`` (a mask filled in), and at this point for a computed
    one, or one whose probability underflows to exactly 0 (local mode: the float Jacobian at
    this point is exactly 0 there).  Softmax outputs at such entries are the constant 0, and a slice with a
    single live entry normalizes to the constant 1; ``log_softmax`` outputs ``x_i - lse(live)``
    everywhere (``-inf`` entries still move with the live ones).
    """
    x = call.bound["self"]
    dim = call.bound["dim"] % max(x.dim(), 1)
    if x.dim() == 0 or x.shape[dim] == 1:
        return [None]  # a slice of one element normalizes to a constant
    p = call.prov(x)
    if p is None:
        return [None]
    dead = torch.isneginf(call.value(x))
    if not call.local:
        dead &= (p.lengths() == 0).reshape(x.shape)
    else:   # also entries whose probability underflows to exactly 0 here: their derivatives are 0
        prob = torch.exp(call.outs[0]) if log else call.outs[0]
        dead |= prob == 0
    if not dead.any():
        return [slice_union(p, x.shape, [dim])]
    live = ~dead
    several = live.sum(dim, keepdim=True) > 1
    union = reduce(p, x.shape, [dim], live)
    ks = keep_shape(x.shape, [dim])
    if not log:
        return [bcast(union, ks, x.shape, live & several)]
    return [union_opt([bcast(union, ks, x.shape, dead | several), bcast(p, x.shape, x.shape, dead)],
                      x.numel(), p.device)]


@rule(aten._log_softmax)
def log_softmax(call):
    return softmax(call, log=True)


def _affine(call, o, names, channel_shape):
    """Per-channel parameters (weight, bias, running stats) broadcast over the output."""
    parts = []
    for n in names:
        w = call.bound.get(n)
        if isinstance(w, torch.Tensor) and w.dtype in DIFFERENTIABLE:
            parts.append(bcast(call.prov(w), channel_shape, o.shape))
    return parts


# The statistics outputs of the fused normalization ops (mean, rstd, running stats) are saved for
# the backward pass only: autograd gives them no derivative, so neither does trackjac.

@rule(aten.native_layer_norm)
def layer_norm(call):
    x = call.bound["input"]
    k = len(call.bound["normalized_shape"])
    dims = list(range(x.dim() - k, x.dim()))
    out = call.outs[0]
    count = 1
    for d in dims:
        count *= x.shape[d]
    shape = (1,) * (x.dim() - k) + tuple(x.shape[-k:])
    if count == 1:   # x - mean(x) is identically zero: only the bias remains
        parts = _affine(call, out, ("bias",), shape)
    else:
        parts = [slice_union(call.prov(x), x.shape, dims)] + _affine(call, out, ("weight", "bias"), shape)
    return union_opt(parts, out.numel(), out.device)


@rule(aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_functional,
      aten._batch_norm_with_update, aten._batch_norm_with_update_functional)
def batch_norm(call):
    x = call.bound["input"]
    out = call.outs[0]
    ch = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    training = call.bound.get("training", True)
    dims = [d for d in range(x.dim()) if d != 1]
    if not training:
        parts = _affine(call, out, ("weight", "bias", "running_mean", "running_var"), ch) + [call.prov(x)]
    elif x.numel() == x.shape[1]:   # one value per channel: x - mean(x) is identically zero
        parts = _affine(call, out, ("bias",), ch)
    else:
        parts = _affine(call, out, ("weight", "bias"), ch) + [slice_union(call.prov(x), x.shape, dims)]
    return union_opt(parts, out.numel(), out.device)


@rule(aten._native_batch_norm_legit_no_training, aten._batch_norm_no_update)
def batch_norm_no_training(call):
    """The batch-norm ops without a ``training`` argument: the running statistics are used."""
    call.bound["training"] = False
    return batch_norm(call)


@rule(aten.native_group_norm)
def group_norm(call):
    x = call.bound["input"]
    n, c, g = call.bound["N"], call.bound["C"], call.bound["group"]
    out = call.outs[0]
    xs = (n, g, x.numel() // max(n * g, 1))
    ch = (1, c) + (1,) * (x.dim() - 2)
    mean = reduce(call.prov(x), xs, [2])   # unlike layer/batch norm, autograd differentiates
    if xs[2] == 1:                         # group norm's mean and rstd outputs too
        parts = _affine(call, out, ("bias",), ch)
        rstd = None
    else:
        parts = [slice_union(call.prov(x), xs, [2])] + _affine(call, out, ("weight", "bias"), ch)
        rstd = mean
    return [union_opt(parts, out.numel(), out.device), mean, rstd]


@rule(aten._weight_norm_interface)
def weight_norm(call):
    """``w = g * v / ||v||`` with the norm over every dim but ``dim``."""
    v, g = call.bound["v"], call.bound["g"]
    dim = call.bound.get("dim", 0)
    out = call.outs[0]
    dims = [d for d in range(v.dim()) if d != dim % max(v.dim(), 1)]
    parts = [slice_union(call.prov(v), v.shape, dims), bcast(call.prov(g), g.shape, v.shape)]
    return [union_opt(parts, out.numel(), out.device), None]


def attention(call):
    """Fused scaled dot-product attention: ``out[..., i, c]`` depends on ``q[..., i, :]`` and on
    ``k[..., j, :]``, ``v[..., j, c]`` (and a tracked float mask's ``[..., i, j]``) for every key
    ``j`` that query ``i`` may attend to (causal mask, boolean mask, ``-inf`` bias).  A query that
    attends to a single key copies its value: its weights are the constant 1.  The logsumexp and
    bookkeeping outputs have no derivative."""
    q, k, v = call.bound["query"], call.bound["key"], call.bound["value"]
    mask = call.bound.get("attn_mask", call.bound.get("attn_bias"))
    out = call.outs[0]
    L, S = q.shape[-2], k.shape[-2]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                                   mask.shape[:-2] if isinstance(mask, torch.Tensor) else ())
    full = tuple(batch) + (L, S)
    allowed = torch.ones(full, dtype=torch.bool, device=out.device)
    if call.bound.get("is_causal"):
        allowed &= torch.ones(L, S, dtype=torch.bool, device=out.device).tril()
    if isinstance(mask, torch.Tensor) and not call.varies(mask):
        m = call.value(mask)
        allowed &= (m if m.dtype == torch.bool else ~torch.isneginf(m)).expand(full)
    single = allowed.sum(-1, keepdim=True) == 1
    rows = codes(tuple(batch) + (L,), out.device)              # output row (one per query)
    pairs_out = rows.unsqueeze(-1).expand(full)[allowed]
    parts = []

    def per_key(t, keep):
        p = call.prov(t)
        if p is None:
            return
        kr = reduce(p, t.shape, [t.dim() - 1])                # one row per key position
        kr = bcast(kr, tuple(t.shape[:-1]), tuple(batch) + (S,))
        src = codes(tuple(batch) + (S,), out.device).unsqueeze(-2).expand(full)
        sel = allowed & keep
        parts.append(scatter(kr, rows.unsqueeze(-1).expand(full)[sel], rows.numel(), src[sel]))

    per_key(k, ~single)
    pq = call.prov(q)
    if pq is not None:
        qr = bcast(reduce(pq, q.shape, [q.dim() - 1]), tuple(q.shape[:-1]), tuple(batch) + (L,),
                   ~single.squeeze(-1))
        parts.append(qr)
    if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool and call.prov(mask) is not None:
        pm = bcast(call.prov(mask), mask.shape, full)
        parts.append(scatter(pm, pairs_out, rows.numel(), codes(full, out.device)[allowed]))
    row = union_opt(parts, rows.numel(), out.device)
    row = None if row is None else bcast(row, tuple(batch) + (L, 1), tuple(out.shape))
    pv = call.prov(v)
    if pv is None:
        return row
    # out[..., i, c] reads v[..., j, c] only (the weights are per (i, j), the channels do not mix)
    ev = v.shape[-1]
    pv = bcast(pv, tuple(v.shape), tuple(batch) + (S, ev))
    keys = codes(tuple(batch) + (S,), out.device).unsqueeze(-2).expand(full)[allowed]
    ch = torch.arange(ev, device=out.device)
    vals = scatter(pv, (pairs_out[:, None] * ev + ch).reshape(-1), out.numel(), (keys[:, None] * ev + ch).reshape(-1))
    return vals if row is None else union_opt([row, vals], out.numel(), out.device)


register([aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention,
          aten._scaled_dot_product_efficient_attention, aten._scaled_dot_product_cudnn_attention,
          *present("_scaled_dot_product_fused_attention_overrideable")], attention)


@rule(aten._ctc_loss)
def ctc_loss(call):
    """``_ctc_loss``: the loss of sequence ``n`` depends on ``log_probs[t, n, :]`` for ``t`` within its
    input length: the labels of its target through the alignments, and every class through
    autograd's formula (``exp(log_probs) - ...``, which assumes normalized log-probabilities).
    ``log_alpha`` (saved for the backward) has no derivative.  ``zero_infinity`` in local mode:
    an infinite loss is the constant 0."""
    lp = call.bound["log_probs"]
    p = call.prov(lp)
    loss = call.outs[0]
    if p is None:
        return None
    x = lp if lp.dim() == 3 else lp.unsqueeze(1)
    steps, n_seq, n_cls = x.shape
    il = _as_list(call.value(call.bound["input_lengths"]), n_seq)
    mask = torch.zeros(steps, n_seq, n_cls, dtype=torch.bool, device=lp.device)
    for n in range(n_seq):
        mask[:il[n], n, :] = True
    if call.local and call.bound.get("zero_infinity"):
        mask &= ~torch.isinf(loss.reshape(-1)).view(1, -1, 1)
    red = reduce(p, x.shape, [0, 2], mask)
    return red if loss.numel() == n_seq else None


def _as_list(v, n):
    if isinstance(v, torch.Tensor):
        v = v.reshape(-1).tolist()
    v = list(v)
    return v if len(v) == n else v * n
