"""Convolution, pooling, interpolation, grid sampling and bags of embeddings.

Everything here is a *window* rule: an output element depends on the input
elements of a window that a spatial formula (or, for interpolation, the op
itself run on one-hot probes) gives.  Windows are separable: the window of an
output position is the product of one window per spatial dimension, so the
union over it is taken one dimension at a time with :func:`window` (a union
over ``k1`` of a union over ``k2`` ...).  Channels summed by a convolution are
merged first, so an output row is built from ``ICg`` rows once, not once per
kernel tap.

Costs (``R`` = length of an input row, i.e. how many ids an input element
depends on; ``P`` = pairs gathered):

* ``convolution`` (1d/2d/3d, stride, padding, dilation, groups, transposed and
  output_padding, plus the backend ops ``_slow_conv2d_forward``,
  ``slow_conv_transpose2d``, ``_conv_depthwise2d``, ``mkldnn_convolution``,
  ``cudnn_convolution`` ..., and ``conv_tbc``): exact.
  Input part: a channel merge (``P = N*C_in*S_in*R``), then one pass per spatial
  dimension (``P = rows after the pass * K_d * R'``, ``R'`` the merged row length);
  weight part likewise (``G*OCg*ICg*K*R_w``, then ``O*K`` per group channel); then a
  broadcast over the group's output channels (and, for the weight, over the batch)
  that writes the result pattern itself.  When input, weight and bias ids lie in
  disjoint ranges (separate sources) their rows are concatenated without a sort.
  Memory is the result pattern plus one pass's pairs; never ``out x in``.
* ``avg_pool{2,3}d`` (``avg_pool1d`` reaches it through ``avg_pool2d``),
  ``_adaptive_avg_pool{2,3}d``: exact, ``P = sum_d rows * K_d * R``.
* ``max_pool{2,3}d_with_indices`` (``max_pool1d`` reaches ``max_pool2d``),
  ``adaptive_max_pool{2,3}d``: global mode keeps the whole window (every
  element, including the clipped windows of ``ceil_mode``), exact in the sense
  that each of them is the maximum for some input; local mode keeps the element
  at the returned index (exactly the dense Jacobian at the point): ``P = out * R``.
* ``fractional_max_pool{2,3}d``: local mode exact (returned index); global mode
  is the exact window of this call's ``random_samples`` (recovered by running the
  op on coordinate ramps), ``P = out * prod(K) * R``.  When a dimension is too
  long for its coordinates to be exact in the input's dtype (over 2048 for
  float16, 256 for bfloat16) the whole dimension is used (sound, conservative).
* ``upsample_linear1d``, ``upsample_bilinear2d``, ``upsample_trilinear3d``,
  ``upsample_bicubic2d``, ``_upsample_bilinear2d_aa``, ``_upsample_bicubic2d_aa``:
  exact.  Each dimension's (output index -> input indices with a nonzero weight)
  table comes from running the op itself on one-hot probes of a 1-D-sized problem
  (``L_in * L_out * 2**(dims-1)`` probe values per dimension, in chunks of at most 4M), so
  ``align_corners``, scales, border clamping and the antialiasing support are
  those of the kernel.  Taps whose weight is exactly zero are dropped (their
  derivative is zero for every input).  ``P = sum_d rows * taps_d * R``.
  One torch quirk is covered rather than mirrored: with an output width of 1 the
  antialiased CPU forward gives every output row the taps of row 0 while its backward
  uses each row's own; the pattern holds both (sound for either Jacobian).
* ``grid_sampler_2d``/``grid_sampler_3d`` (and ``_grid_sampler_2d_cpu_fallback``,
  ``cudnn_grid_sampler``): on the input, global mode with a grid computed from
  tracked values makes every element of the ``(n, c)`` plane a candidate
  (``out * H*W * R``: that *is* the pattern); local mode (or a constant grid)
  keeps the taps at this point (2, 4 or 8 corners, 4x4 for bicubic, 1 for
  nearest).  Coordinates are recomputed in float64; one within ``16 * eps(dtype) *
  (size + 2)`` of an integer gets the taps of both sides, so taps whose weight is
  zero at an exact pixel hit may be kept (sound; in float16/bfloat16 that margin
  is a sizeable fraction of a pixel, so more neighbours are kept there).  On the
  grid: each output depends on its own grid point's coordinates (none for
  nearest, whose derivative is zero, nor along a size-1 dim with
  ``align_corners``); in local mode a coordinate is dropped where its derivative
  is structurally zero here (clipped by border/reflection padding, or no tap
  inside the image).  ``P = out * taps * R``.
* ``_embedding_bag``/``_embedding_bag_forward_only``: exact (sum, mean, max
  global; max local uses the returned indices), ``P = len(indices) * D * R``.
  Indices computed from tracked values make every row a candidate in global mode.
  With ``include_last_offset=True``, indices past the last offset count in the last
  bag (torch's kernels disagree about them: max and ``padding_idx`` use them, plain
  sums drop them), conservative for the latter.

``lp_pool``, ``avg_pool1d``, ``adaptive_*_pool1d``, ``interpolate(mode='area')``
decompose into the ops above before dispatch; ``im2col``/``col2im`` and nearest
upsampling live in :mod:`.movement` and :mod:`.indexing`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ..provenance import Provenance, SetProv, empty, scatter, union
from ..dtypes import FLOATING
from .shapes import bcast, codes, reduce
from .api import all_candidates
from .registry import register, rule

aten = torch.ops.aten
I64 = torch.int64

_PROBE_CHUNK = 1 << 22  # probe values per chunk when running an op on one-hot inputs


def _prod(xs) -> int:
    n = 1
    for s in xs:
        n *= int(s)
    return n


def _expand(v, d: int, default) -> List[int]:
    """An int or per-dimension list argument as ``d`` ints (``[]``/``None``: ``default``)."""
    if v is None:
        v = default
    if isinstance(v, int):
        return [v] * d
    v = [int(a) for a in v]
    if not v:
        return _expand(default, d, default) if default is not None else [1] * d
    if len(v) == 1:
        return v * d
    return v


def _x(call):
    x = call.bound.get("self")
    return x if x is not None else call.bound["input"]


def _merge(parts: Sequence[Optional[Provenance]], numel: int, device) -> Optional[Provenance]:
    """Element-wise union; when the parts' ids lie in disjoint ranges (input, weight and
    bias are separate sources) rows are concatenated in id order without a sort."""
    parts = [p for p in parts if p is not None and p.nnz]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    lo = [int(p.col.min()) for p in parts]
    hi = [int(p.col.max()) for p in parts]
    order = sorted(range(len(parts)), key=lambda i: lo[i])
    if any(hi[a] >= lo[b] for a, b in zip(order, order[1:])):
        return union(parts, numel)
    parts = [parts[i] for i in order]
    lens = torch.stack([p.lengths() for p in parts])          # (parts, numel)
    ptr = torch.zeros(numel + 1, dtype=I64, device=device)
    torch.cumsum(lens.sum(0), 0, out=ptr[1:])
    before = torch.cumsum(lens, 0) - lens                      # entries of earlier parts in the row
    col = torch.empty(int(ptr[-1]), dtype=I64, device=device)
    for k, p in enumerate(parts):
        shift = ptr[:-1] + before[k] - p.ptr[:-1]
        col[shift[p.rows()] + torch.arange(p.nnz, dtype=I64, device=device)] = p.col
    return SetProv(ptr, col)


# -- the separable window union ----------------------------------------------------------------
def window(prov: Provenance, shape: Sequence[int], dim: int, table: torch.Tensor) -> Tuple[Provenance, tuple]:
    """Union along one dimension: new row ``o`` at ``dim`` = union of rows ``table[..., o, k]``.

    ``table`` is ``(L_out, K)`` (the same window for every position of the other dims)
    or ``shape[:dim] + (L_out, K)`` (a window per leading position); ``-1`` = no tap.
    Returns the new provenance and the new shape (``shape`` with ``L_out`` at ``dim``).
    """
    shape = tuple(int(s) for s in shape)
    dev = prov.device
    l_in = shape[dim]
    l_out, k = int(table.shape[-2]), int(table.shape[-1])
    pre_n, post_n = _prod(shape[:dim]), _prod(shape[dim + 1:])
    new_shape = shape[:dim] + (l_out,) + shape[dim + 1:]
    n_new = pre_n * l_out * post_n
    table = table.to(device=dev, dtype=I64)
    if n_new == 0 or prov.nnz == 0 or k == 0:
        return empty(n_new, dev), new_shape
    if table.dim() == 2:
        if k == 1 and l_out == l_in and bool((table[:, 0] == torch.arange(l_in, device=dev)).all()):
            return prov, new_shape
        p = torch.arange(pre_n, dtype=I64, device=dev).view(-1, 1, 1)
        q = torch.arange(post_n, dtype=I64, device=dev).view(1, 1, -1)
        if k == 1:  # one tap: a plain gather
            t = table[:, 0].view(1, -1, 1)
            src = torch.where(t >= 0, (p * l_in + t) * post_n + q, torch.full_like(t, -1))
            return prov.gather(src.reshape(-1)), new_shape
        o, kk = torch.nonzero(table >= 0, as_tuple=True)
        i = table[o, kk]
        src = (p * l_in + i.view(1, -1, 1)) * post_n + q
        dst = (p * l_out + o.view(1, -1, 1)) * post_n + q
    else:
        table = table.expand(shape[:dim] + (l_out, k)).reshape(pre_n, l_out, k)
        pp, o, kk = torch.nonzero(table >= 0, as_tuple=True)
        i = table[pp, o, kk]
        q = torch.arange(post_n, dtype=I64, device=dev).view(1, -1)
        src = (pp * l_in + i).view(-1, 1) * post_n + q
        dst = (pp * l_out + o).view(-1, 1) * post_n + q
    return scatter(prov, dst.reshape(-1), n_new, src.reshape(-1)), new_shape


def windows(prov: Optional[Provenance], shape, first: int, tables: Sequence[torch.Tensor]):
    """Apply :func:`window` to dims ``first, first + 1, ...`` in turn."""
    shape = tuple(shape)
    if prov is None:
        return None, shape
    for d, t in enumerate(tables):
        prov, shape = window(prov, shape, first + d, t)
    return prov, shape


def _ragged(starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Table of the ranges ``[starts[o], ends[o])`` padded with ``-1``."""
    lens = (ends - starts).clamp(min=0)
    k = int(lens.max()) if lens.numel() else 0
    ar = torch.arange(k, dtype=I64, device=starts.device)
    t = starts.view(-1, 1) + ar
    return torch.where(ar < lens.view(-1, 1), t, torch.full_like(t, -1))


def strided_table(l_in: int, l_out: int, k: int, stride: int, pad: int, dil: int, device) -> torch.Tensor:
    """Input index of window position ``(o, k)``: ``o*stride - pad + k*dil`` where in range, else ``-1``."""
    o = torch.arange(l_out, dtype=I64, device=device).view(-1, 1)
    i = o * stride - pad + torch.arange(k, dtype=I64, device=device) * dil
    return torch.where((i >= 0) & (i < l_in), i, torch.full_like(i, -1))


def _conv_tables(l_in, l_out, k, stride, pad, dil, transposed, device):
    """(input index table, kernel index table) of one spatial dimension."""
    o = torch.arange(l_out, dtype=I64, device=device).view(-1, 1)
    kk = torch.arange(k, dtype=I64, device=device).view(1, -1)
    if not transposed:
        i = o * stride - pad + kk * dil
        ok = (i >= 0) & (i < l_in)
    else:  # out[o] += x[i] * w[k] for o = i*stride - pad + k*dil
        t = o + pad - kk * dil
        i = torch.div(t, stride, rounding_mode="floor")
        ok = (t >= 0) & (t % stride == 0) & (i < l_in)
    neg = torch.full_like(i, -1)
    return torch.where(ok, i, neg), torch.where(ok, kk.expand_as(i), neg)


def _adaptive_table(l_in: int, l_out: int, device) -> torch.Tensor:
    o = torch.arange(l_out, dtype=I64, device=device)
    start = (o * l_in) // l_out
    end = -((-(o + 1) * l_in) // l_out)
    return _ragged(start, end)


# -- convolution --------------------------------------------------------------------------------
def _geometry(xshape, wshape, out_shape, groups):
    """``(d, batched, n, c_in, s_in, c_out, s_out, groups, in/out channels per group, kernel size)``
    of a convolution (an unbatched input counts as a batch of one)."""
    d = len(wshape) - 2
    batched = len(xshape) == d + 2
    xs = tuple(xshape) if batched else (1,) + tuple(xshape)
    os_ = tuple(out_shape) if batched else (1,) + tuple(out_shape)
    c_in, c_out = xs[1], os_[1]
    return (d, batched, xs[0], c_in, xs[2:], c_out, os_[2:], groups, c_in // groups, c_out // groups,
            tuple(wshape[2:]))


def conv_prov(px, pw, pb, xshape, wshape, out_shape, stride, padding, dilation, transposed, groups):
    """Provenance of a convolution's output from those of input, weight and bias (any may be ``None``)."""
    d, batched, n, c_in, s_in, c_out, s_out, g, icg, ocg, ksz = _geometry(xshape, wshape, out_shape, groups)
    device = next(p.device for p in (px, pw, pb) if p is not None)
    tabs = [_conv_tables(s_in[j], s_out[j], ksz[j], stride[j], padding[j], dilation[j], transposed, device)
            for j in range(d)]
    out5 = (n, g, ocg) + tuple(s_out)
    numel = _prod(out5)
    parts = []
    if px is not None:
        shp = (n, g, icg) + tuple(s_in)
        if icg > 1:
            px = reduce(px, shp, [2])
            shp = (n, g, 1) + tuple(s_in)
        px, shp = windows(px, shp, 3, [t[0] for t in tabs])
        parts.append(bcast(px, shp, out5))
    if pw is not None:
        if not transposed:  # (G, OCg, ICg, K...)
            shp, red = (g, ocg, icg) + ksz, 2
        else:               # (G, ICg, OCg, K...)
            shp, red = (g, icg, ocg) + ksz, 1
        if icg > 1:
            pw = reduce(pw, shp, [red])
        shp = (g, ocg, 1) + ksz
        pw, shp = windows(pw, shp, 3, [t[1] for t in tabs])
        parts.append(bcast(pw, (1,) + shp[:2] + shp[3:], out5))
    if pb is not None:
        parts.append(bcast(pb, (1, g, ocg) + (1,) * d, out5))
    return _merge(parts, numel, device)


def _live(call, a) -> Optional[torch.Tensor]:
    """Entries of ``a`` that connect the other factor: nonzero, or carrying provenance."""
    live = call.value(a) != 0
    p = call.prov(a)
    if p is not None:
        live |= (p.lengths() > 0).reshape(live.shape)
    return live


def _tap_table(tabs, s_in) -> torch.Tensor:
    """``(prod(S_out), prod(K))``: flat input position read by flat output position ``o`` through
    flat kernel position ``k`` (``-1``: none), from the per-dimension tables."""
    full = None
    for j, (ti, _) in enumerate(tabs):
        if full is None:
            full = ti
            continue
        a, b = full[:, None, :, None], ti[None, :, None, :]
        full = torch.where((a >= 0) & (b >= 0), a * s_in[j] + b, torch.full_like(a * b, -1))
        full = full.reshape(a.shape[0] * b.shape[1], a.shape[2] * b.shape[3])
    return full


def conv_prov_dropping(px, pw, lx, lw, xshape, wshape, out_shape, stride, padding, dilation, transposed,
                       groups) -> Optional[Provenance]:
    """Input and weight parts of a convolution where ``lw`` / ``lx`` (boolean masks of weight and
    input) say which entries connect the other operand: a product with a constant exact zero
    connects nothing (``constant_zeros="drop"``, local mode).  Not separable, so one pair per
    (live weight entry, output position) for the input part, per (live input entry, tap, output
    channel) for the weight part: the cost of the convolution itself."""
    d, batched, n, c_in, s_in, c_out, s_out, g, icg, ocg, ksz = _geometry(xshape, wshape, out_shape, groups)
    kf, so, si = _prod(ksz), _prod(s_out), _prod(s_in)
    device = next(p.device for p in (px, pw) if p is not None)
    tabs = [_conv_tables(s_in[j], s_out[j], ksz[j], stride[j], padding[j], dilation[j], transposed, device)
            for j in range(d)]
    taps = _tap_table(tabs, s_in)                                   # (so, kf)
    numel = n * c_out * so
    bn = torch.arange(n, dtype=I64, device=device).view(-1, 1)
    if not transposed:   # weight (C_out, ICg, K...) as (G, OCg, ICg, Kf)
        wcode = codes((g, ocg, icg, kf), device)
    else:                # weight (C_in, OCg, K...) as (G, ICg, OCg, Kf)
        wcode = codes((g, icg, ocg, kf), device).permute(0, 2, 1, 3)
    parts = []
    if px is not None:
        lw5 = lw.reshape(g, icg, ocg, kf).permute(0, 2, 1, 3) if transposed else lw.reshape(g, ocg, icg, kf)
        gg, oc, ic, kk = lw5.nonzero(as_tuple=True)
        ii = taps[:, kk]                                             # (so, live entries)
        o_idx, e = (ii >= 0).nonzero(as_tuple=True)
        dst = ((gg * ocg + oc)[e] * so + o_idx).view(1, -1) + bn * (c_out * so)
        src = ((gg * icg + ic)[e] * si + ii[o_idx, e]).view(1, -1) + bn * (c_in * si)
        parts.append(scatter(px, dst.reshape(-1), numel, src.reshape(-1)))
    if pw is not None:
        o_idx, kk = (taps >= 0).nonzero(as_tuple=True)               # valid (o, k) pairs
        lxv = lx.reshape(n, g, icg, si)[..., taps[o_idx, kk]]        # (n, g, icg, pairs)
        nn_, gg, ic, e = lxv.nonzero(as_tuple=True)
        oc = torch.arange(ocg, dtype=I64, device=device).view(1, -1)
        dst = ((nn_ * g + gg) * ocg).view(-1, 1) + oc
        dst = dst * so + o_idx[e].view(-1, 1)
        src = wcode[gg.view(-1, 1), oc, ic.view(-1, 1), kk[e].view(-1, 1)]
        parts.append(scatter(pw, dst.reshape(-1), numel, src.reshape(-1)))
    return _merge(parts, numel, device)


def _conv_rule(transposed_default=False):
    def convolution(call):
        x, w = _x(call), call.bound["weight"]
        b = call.bound.get("bias")
        o = call.outs[0]
        d = w.dim() - 2
        transposed = bool(call.bound.get("transposed", transposed_default))
        groups = call.bound.get("groups")
        if groups is None:
            groups = (o.shape[-d - 1] if transposed else x.shape[-d - 1]) // w.shape[1]
        stride = _expand(call.bound.get("stride"), d, 1)
        padding = _expand(call.bound.get("padding"), d, 0)
        dilation = _expand(call.bound.get("dilation"), d, 1)
        pb = call.prov(b) if isinstance(b, torch.Tensor) else None
        px, pw = call.prov(x), call.prov(w)
        args = (x.shape, w.shape, o.shape, stride, padding, dilation, transposed, int(groups))
        if call.drops_zeros:
            lw = _live(call, w) if px is not None else None
            lx = _live(call, x) if pw is not None else None
            masked_x = lw is not None and not bool(lw.all())
            masked_w = lx is not None and not bool(lx.all())
            if masked_x or masked_w:
                parts = [conv_prov_dropping(px if masked_x else None, pw if masked_w else None, lx, lw, *args),
                         conv_prov(None if masked_x else px, None if masked_w else pw, pb, *args)
                         if (not masked_x and px is not None) or (not masked_w and pw is not None)
                         or pb is not None else None]
                return _merge(parts, o.numel(), o.device)
        return conv_prov(px, pw, pb, *args)
    return convolution


register([aten.convolution, aten._convolution, aten.convolution_overrideable], _conv_rule())
register([aten._slow_conv2d_forward, aten.slow_conv3d_forward, aten._nnpack_spatial_convolution,
          aten.slow_conv_dilated2d, aten.slow_conv_dilated3d, aten._conv_depthwise2d,
          aten.conv_depthwise3d, aten.mkldnn_convolution, aten.cudnn_convolution,
          aten.miopen_convolution, aten._mps_convolution], _conv_rule())
register([aten.slow_conv_transpose2d, aten.slow_conv_transpose3d, aten.cudnn_convolution_transpose],
         _conv_rule(transposed_default=True))


def _permuted(prov: Optional[Provenance], shape, perm) -> Optional[Provenance]:
    """Provenance of ``x.permute(perm)`` (row-major)."""
    if prov is None:
        return None
    return prov.gather(codes(shape, prov.device).permute(*perm).reshape(-1))


@rule(aten.conv_tbc)
def conv_tbc(call):
    """``conv_tbc``: input ``(T, B, C_in)``, weight ``(K, C_in, C_out)``, output ``(T', B, C_out)``."""
    x, w, b = call.bound["self"], call.bound["weight"], call.bound["bias"]
    o = call.outs[0]
    pad = int(call.bound.get("pad", 0))
    t, bt, ci = x.shape
    k, _, co = w.shape
    px = _permuted(call.prov(x), x.shape, (1, 2, 0))
    pw = _permuted(call.prov(w), w.shape, (2, 1, 0))
    p = conv_prov(px, pw, call.prov(b), (bt, ci, t), (co, ci, k), (bt, co, o.shape[0]),
                  [1], [pad], [1], False, 1)
    return [_permuted(p, (bt, co, o.shape[0]), (2, 0, 1))]


# -- pooling ------------------------------------------------------------------------------------
def _spatial(x, d):
    """(leading shape, spatial shape) of a pooling input with ``d`` spatial dims."""
    return tuple(x.shape[:-d]), tuple(x.shape[-d:])


def _pool(call, d: int, tables) -> Optional[Provenance]:
    x = _x(call)
    lead, _ = _spatial(x, d)
    p, _ = windows(call.prov(x), x.shape, len(lead), tables)
    return p


def _at_index(call, x, indices: torch.Tensor, d: int) -> Optional[Provenance]:
    """Element at each returned index (indices are flat within each plane)."""
    p = call.prov(x)
    if p is None:
        return None
    lead, sp = _spatial(x, d)
    plane = _prod(sp)
    idx = indices.to(device=p.device, dtype=I64)
    base = codes(lead + (1,) * d, p.device) * plane
    return p.gather((base + idx).reshape(-1))


def _max_pool(d: int):
    def max_pool(call):
        x, o = _x(call), call.outs[0]
        _, s_in = _spatial(x, d)
        s_out = tuple(o.shape[-d:])
        if call.local:
            return [_at_index(call, x, call.outs[1], d), None]
        ks = _expand(call.bound["kernel_size"], d, 1)
        st = _expand(call.bound.get("stride"), d, ks)
        pd = _expand(call.bound.get("padding"), d, 0)
        dl = _expand(call.bound.get("dilation"), d, 1)
        tables = [strided_table(s_in[j], s_out[j], ks[j], st[j], pd[j], dl[j], o.device) for j in range(d)]
        return _pool(call, d, tables)
    return max_pool


register([aten.max_pool2d_with_indices], _max_pool(2))
register([aten.max_pool3d_with_indices], _max_pool(3))


def _avg_pool(d: int):
    def avg_pool(call):
        x, o = _x(call), call.outs[0]
        _, s_in = _spatial(x, d)
        s_out = tuple(o.shape[-d:])
        ks = _expand(call.bound["kernel_size"], d, 1)
        st = _expand(call.bound.get("stride"), d, ks)
        pd = _expand(call.bound.get("padding"), d, 0)
        tables = [strided_table(s_in[j], s_out[j], ks[j], st[j], pd[j], 1, o.device) for j in range(d)]
        return [_pool(call, d, tables)]
    return avg_pool


register([aten.avg_pool2d], _avg_pool(2))
register([aten.avg_pool3d], _avg_pool(3))


def _adaptive(d: int, is_max: bool):
    def adaptive_pool(call):
        x, o = _x(call), call.outs[0]
        if is_max and call.local:
            return _at_index(call, x, call.outs[1], d)
        _, s_in = _spatial(x, d)
        s_out = tuple(o.shape[-d:])
        tables = [_adaptive_table(s_in[j], s_out[j], o.device) for j in range(d)]
        return _pool(call, d, tables)
    return adaptive_pool


register([aten._adaptive_avg_pool2d], _adaptive(2, False))
register([aten._adaptive_avg_pool3d], _adaptive(3, False))
register([aten.adaptive_max_pool2d], _adaptive(2, True))
register([aten.adaptive_max_pool3d], _adaptive(3, True))


def _exact_int_limit(dtype) -> int:
    return {torch.float16: 2048, torch.bfloat16: 256, torch.float32: 1 << 24}.get(dtype, 1 << 53)


def _fractional(d: int):
    def fractional_max_pool(call):
        x, o, idx = _x(call), call.outs[0], call.outs[1]
        if call.local:
            return [_at_index(call, x, idx, d), None]
        p = call.prov(x)
        if p is None:
            return [None, None]
        dev = p.device
        lead, s_in = _spatial(x, d)
        nl = len(lead)
        ks = _expand(call.bound["kernel_size"], d, 1)
        samples = call.value(call.bound["random_samples"])
        xv = call.value(x)
        op = call.func.overloadpacket.default
        # src[lead, out..., k_1, ..., k_d]: input code of window position k of each output element.
        src = codes(lead, dev).view(lead + (1,) * (2 * d)) * _prod(s_in)
        bad = torch.zeros((1,) * (nl + 2 * d), dtype=torch.bool, device=dev)
        for j in range(d):
            stride = _prod(s_in[j + 1:])
            tap = (1,) * (nl + d + j) + (-1,) + (1,) * (d - 1 - j)
            if s_in[j] <= _exact_int_limit(xv.dtype):
                # The window's last position along j is where a ramp along j is largest.
                shape = [1] * xv.dim()
                shape[nl + j] = s_in[j]
                ramp = torch.arange(s_in[j], dtype=xv.dtype, device=xv.device).view(shape)
                flat = op(ramp.expand(xv.shape).contiguous(), call.bound["kernel_size"],
                          call.bound["output_size"], samples)[1]
                end = (flat.to(device=dev, dtype=I64) // stride) % s_in[j]
                pos = (end - ks[j] + 1).view(end.shape + (1,) * d) + \
                    torch.arange(ks[j], dtype=I64, device=dev).view(tap)
            else:  # coordinates not exact in this dtype: the whole dimension (sound)
                pos = torch.arange(s_in[j], dtype=I64, device=dev).view(tap)
            bad = bad | (pos < 0) | (pos >= s_in[j])
            src = src + pos * stride
        outn = o.numel()
        src = torch.where(bad, torch.full_like(src, -1), src)
        src = src.expand(tuple(o.shape) + tuple(src.shape[-d:])).reshape(outn, -1)
        dst = torch.arange(outn, dtype=I64, device=dev).view(-1, 1).expand_as(src)
        keep = src >= 0
        return [scatter(p, dst[keep], outn, src[keep]), None]
    return fractional_max_pool


register([aten.fractional_max_pool2d], _fractional(2))
register([aten.fractional_max_pool3d], _fractional(3))


# -- interpolation ------------------------------------------------------------------------------
def _probe_pairs(op, d, j, li, lo, other, ac, sc, dtype, device):
    """``(input index, output index)`` pairs with a nonzero weight along dim ``j``, from running
    ``op`` on one-hot probes along ``j`` that are constant along the other dims (``other``:
    their common input and output size), so the other dims' weights sum to one."""
    osz = [lo if t == j else other for t in range(d)]
    chunk = max(1, min(li, _PROBE_CHUNK // max(lo * other ** (d - 1), 1)))
    ii, oo = [], []
    for a in range(0, li, chunk):
        m = min(chunk, li - a)
        probe = torch.zeros(m, li, dtype=dtype, device=device)
        probe[torch.arange(m), torch.arange(a, a + m)] = 1
        probe = probe.view([m, 1] + [1] * j + [li] + [1] * (d - 1 - j))
        probe = probe.expand([m, 1] + [li if t == j else other for t in range(d)]).contiguous()
        w = op(probe, osz, ac, *sc)
        w = w[(slice(None), 0) + tuple(slice(None) if t == j else 0 for t in range(d))]
        i, oi = torch.nonzero(w.reshape(m, lo) != 0, as_tuple=True)
        ii.append(i + a)
        oo.append(oi)
    return torch.cat(ii).to(I64), torch.cat(oo).to(I64)


def _interp_tables(call, d: int) -> List[torch.Tensor]:
    """Per dim, the ``(L_out, K)`` table of input indices with a nonzero weight, by probing the op."""
    x, o = _x(call), call.outs[0]
    s_in, s_out = tuple(x.shape[-d:]), tuple(o.shape[-d:])
    ac = bool(call.bound.get("align_corners", False))
    if "scale_factors" in call.bound:
        sf = call.bound.get("scale_factors")
        scales = list(sf) if sf else [None] * d
    else:
        scales = [call.bound.get(a.name) for a in call.func._schema.arguments if a.name.startswith("scales")]
    packet = call.func.overloadpacket
    op = packet.default
    pdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    # torch's antialiased CPU kernels give every output row the weights of row 0 when the
    # output width is 1 (their backward does not): keep both, so either reading is covered.
    aa_quirk = packet in (aten._upsample_bilinear2d_aa, aten._upsample_bicubic2d_aa) and s_out[-1] == 1
    tables = []
    for j in range(d):
        li, lo = s_in[j], s_out[j]
        sc = [scales[j] if t == j else None for t in range(d)]
        # Other dims 2 -> 2: with width 1 the antialiased kernels take the path above.
        i, oi = _probe_pairs(op, d, j, li, lo, 2, ac, sc, pdt, x.device)
        if aa_quirk and j < d - 1:
            i2, o2 = _probe_pairs(op, d, j, li, lo, 1, ac, sc, pdt, x.device)
            keys = torch.unique(torch.cat([oi * max(li, 1) + i, o2 * max(li, 1) + i2]))
            i, oi = keys % max(li, 1), keys // max(li, 1)
        # pack (o, i) pairs into a padded table
        order = torch.argsort(oi * max(li, 1) + i)
        i, oi = i[order], oi[order]
        counts = torch.bincount(oi, minlength=lo)
        k = int(counts.max()) if counts.numel() else 0
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(i.numel(), dtype=I64, device=i.device) - first[oi]
        t = torch.full((lo, k), -1, dtype=I64, device=i.device)
        t[oi, slot] = i
        tables.append(t)
    return tables


def _interp(d: int):
    def interpolate(call):
        x = _x(call)
        p = call.prov(x)
        if p is None:
            return [None]
        lead = tuple(x.shape[:-d])
        res, _ = windows(p, x.shape, len(lead), _interp_tables(call, d))
        return [res]
    return interpolate


register([aten.upsample_linear1d], _interp(1))
register([aten.upsample_bilinear2d, aten.upsample_bicubic2d, aten._upsample_bilinear2d_aa,
          aten._upsample_bicubic2d_aa], _interp(2))
register([aten.upsample_trilinear3d], _interp(3))


# -- grid sampling ------------------------------------------------------------------------------
_ZEROS, _BORDER, _REFLECTION = 0, 1, 2
_BILINEAR, _NEAREST, _BICUBIC = 0, 1, 2


def _unnormalize(g, size: int, ac: bool):
    return (g + 1) / 2 * (size - 1) if ac else ((g + 1) * size - 1) / 2


def _reflect(c, twice_low: int, twice_high: int):
    if twice_low == twice_high:
        return torch.zeros_like(c)
    mn = twice_low / 2
    span = (twice_high - twice_low) / 2
    c = (c - mn).abs()
    extra = torch.fmod(c, span)
    flips = torch.floor(c / span)
    return torch.where(flips % 2 == 0, extra + mn, span - extra + mn)


def _padded(c, size: int, mode: int, ac: bool):
    """Coordinate after the padding mode (before the clip of reflection), and after it."""
    if mode == _BORDER:
        return c, c.clamp(0, size - 1)
    if mode == _REFLECTION:
        r = _reflect(c, 0, 2 * (size - 1)) if ac else _reflect(c, -1, 2 * size - 1)
        return r, r.clamp(0, size - 1)
    return c, c


def _taps(g, size: int, mode: int, interp: int, ac: bool, tol: float):
    """Per grid point: input indices along one dim (``(..., K)``, ``-1`` = none) and
    whether the coordinate's own derivative (padding clip) can be nonzero here."""
    u = _unnormalize(g, size, ac)
    if interp == _BICUBIC:
        lo = torch.floor(u - tol) - 1
        t = lo.unsqueeze(-1) + torch.arange(5, dtype=u.dtype, device=u.device)
        t = torch.where(t <= (torch.floor(u + tol) + 2).unsqueeze(-1), t, torch.full_like(t, float("nan")))
        if mode != _ZEROS:
            t = _padded(t, size, mode, ac)[1]
        moving = torch.ones_like(u, dtype=torch.bool)
    else:
        pre, c = _padded(u, size, mode, ac)
        if mode == _ZEROS:
            moving = torch.ones_like(u, dtype=torch.bool)
        else:
            moving = (pre > -tol) & (pre < size - 1 + tol)
        if interp == _NEAREST:
            t = torch.stack([torch.round(c - tol), torch.round(c + tol)], -1)
        else:
            lo, hi = torch.floor(c - tol), torch.floor(c + tol) + 1
            t = lo.unsqueeze(-1) + torch.arange(3, dtype=u.dtype, device=u.device)
            t = torch.where(t <= hi.unsqueeze(-1), t, torch.full_like(t, float("nan")))
        if mode != _ZEROS:
            # Clearly clipped: the coordinate is exactly 0 or size - 1, a single tap.
            nan = torch.full_like(t[..., 1:], float("nan"))
            t = torch.where((pre <= -tol).unsqueeze(-1), torch.cat([torch.zeros_like(t[..., :1]), nan], -1), t)
            t = torch.where((pre >= size - 1 + tol).unsqueeze(-1),
                            torch.cat([torch.full_like(t[..., :1], size - 1), nan], -1), t)
    ok = (t >= 0) & (t <= size - 1)  # NaN compares False
    idx = torch.where(ok, t, torch.full_like(t, -1)).to(I64)
    return idx, moving


@rule(aten.grid_sampler_2d, aten.grid_sampler_3d, aten._grid_sampler_2d_cpu_fallback)
def grid_sampler(call, interp_default=None, pad_default=None, ac_default=None):
    x, grid, o = _x(call), call.bound["grid"], call.outs[0]
    interp = int(call.bound.get("interpolation_mode", interp_default))
    mode = int(call.bound.get("padding_mode", pad_default))
    ac = bool(call.bound.get("align_corners", ac_default))
    d = x.dim() - 2
    n, c = x.shape[:2]
    s_in = tuple(x.shape[2:])                # (H, W) or (D, H, W)
    s_out = tuple(o.shape[2:])
    px, pg = call.prov(x), call.prov(grid)
    dev = (px if px is not None else pg).device
    numel = o.numel()
    gv = call.value(grid).to(device=dev, dtype=torch.float64)  # (N, *s_out, d), coordinate j is along s_in[d-1-j]
    eps = torch.finfo(grid.dtype if grid.dtype in FLOATING else torch.float32).eps
    parts = []
    taps, moving = [], []
    for j in range(d):
        size = s_in[d - 1 - j]
        tol = 16 * eps * (size + 2)
        t, m = _taps(gv[..., j], size, mode, interp, ac, tol)
        taps.append(t)
        moving.append(m)
    # Combined taps: spatial code of each (point, tap) pair, -1 where some dim is outside.
    plane = _prod(s_in)
    sp = torch.zeros((), dtype=I64, device=dev)
    ok = torch.ones((), dtype=torch.bool, device=dev)
    for j in range(d):  # grid coordinate j indexes spatial dim d-1-j (x is the last dim)
        t = taps[j]
        k = t.shape[-1]
        t = t.view(t.shape[:-1] + (1,) * j + (k,) + (1,) * (d - 1 - j))
        sp = sp + t.clamp(min=0) * _prod(s_in[d - j:])
        ok = ok & (t >= 0)
    sp = torch.where(ok, sp, torch.full_like(sp, -1)).reshape(tuple(gv.shape[:-1]) + (-1,))  # (N, *s_out, T)
    any_tap = (sp >= 0).any(-1)                          # (N, *s_out)
    if px is not None:
        if call.varies(grid):
            red = reduce(px, (n, c, plane), [2])
            parts.append(bcast(red, (n, c) + (1,) * d, tuple(o.shape)))
        else:
            ntap = sp.shape[-1]
            src = (codes((n, c), dev).view(n, c, 1, 1) * plane
                   + sp.reshape(n, 1, -1, ntap))             # (N, C, P, T)
            src = torch.where(sp.reshape(n, 1, -1, ntap) >= 0, src, torch.full_like(src, -1))
            dst = codes((n, c, _prod(s_out)), dev).unsqueeze(-1).expand_as(src)
            keep = src >= 0
            parts.append(scatter(px, dst[keep], numel, src[keep]))
    if pg is not None and interp != _NEAREST:
        # grid (N, *s_out, d): output (n, c, p) depends on grid (n, p, j)
        cols = []
        for j in range(d):
            size = s_in[d - 1 - j]
            if ac and size == 1:
                continue  # the unnormalization scale is zero: no derivative
            if call.local:
                ok = moving[j] & any_tap
            else:
                ok = torch.ones(gv.shape[:-1], dtype=torch.bool, device=dev)
            gcode = codes(tuple(gv.shape), dev)[..., j]             # (N, *s_out)
            gcode = torch.where(ok, gcode, torch.full_like(gcode, -1))
            cols.append(gcode.reshape(n, 1, -1).expand(n, c, -1).reshape(-1))
        if cols:
            src = torch.stack(cols, -1)
            dst = torch.arange(numel, dtype=I64, device=dev).view(-1, 1).expand_as(src)
            keep = src >= 0
            parts.append(scatter(pg, dst[keep], numel, src[keep]))
    return [_merge(parts, numel, dev)]


@rule(aten.cudnn_grid_sampler)
def cudnn_grid_sampler(call):
    """``cudnn_grid_sampler(self, grid)``: bilinear, zeros padding, ``align_corners=True``."""
    return grid_sampler(call, _BILINEAR, _ZEROS, True)


# -- embedding bags -----------------------------------------------------------------------------
@rule(aten._embedding_bag, aten._embedding_bag_forward_only, indices=("indices", "offsets"),
      candidates=all_candidates)
def embedding_bag(call):
    w, o = call.bound["weight"], call.outs[0]
    idx = call.value(call.bound["indices"]).to(I64)
    off = call.value(call.bound["offsets"]).to(I64)
    mode = int(call.bound.get("mode", 0))
    psw = call.bound.get("per_sample_weights")
    pad = call.bound.get("padding_idx", -1)
    pad = -1 if pad is None else int(pad)
    nbag, dim = o.shape[0], w.shape[1]
    pw = call.prov(w)
    pp = call.prov(psw) if isinstance(psw, torch.Tensor) else None
    dev = (pw if pw is not None else pp).device if (pw is not None or pp is not None) else o.device
    idx, off = idx.to(dev), off.to(dev)
    if idx.dim() == 2:
        bag = torch.arange(idx.shape[0], device=dev).repeat_interleave(idx.shape[1])
        idx = idx.reshape(-1)
        valid = torch.ones_like(idx, dtype=torch.bool)
    else:
        j = torch.arange(idx.numel(), dtype=I64, device=dev)
        # Elements past the last offset of include_last_offset=True: some kernels add them to
        # the last bag (max, padding_idx), others drop them; keeping them is sound either way.
        bag = torch.searchsorted(off[:nbag].contiguous(), j, right=True) - 1
        valid = bag >= 0
    if pad >= 0:
        valid &= idx != pad
    numel = o.numel()
    dd = torch.arange(dim, dtype=I64, device=dev).view(1, -1)
    bv, iv = bag[valid].view(-1, 1), idx[valid].view(-1, 1)
    parts = []
    if pw is not None:
        if mode == 2 and call.local:
            size = torch.bincount(bag[valid], minlength=nbag)
            mi = call.outs[3].to(device=dev, dtype=I64).reshape(nbag, dim)
            src = torch.where((size > 0).view(-1, 1), mi * dim + dd, torch.full_like(mi, -1))
            parts.append(pw.gather(src.reshape(-1)))
        else:
            parts.append(scatter(pw, (bv * dim + dd).reshape(-1), numel, (iv * dim + dd).reshape(-1)))
    if pp is not None:
        jv = torch.arange(idx.numel(), dtype=I64, device=dev)[valid].view(-1, 1)
        parts.append(scatter(pp, (bv * dim + dd).reshape(-1), numel, jv.expand(-1, dim).reshape(-1)))
    return _merge(parts, numel, dev)
