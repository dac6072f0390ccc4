"""Pointwise ops: each output element depends on the broadcast-matching element of every input.

Three refinements on the broadcasting union:
* ops whose derivative is zero everywhere (``floor``, ``sign`` ...) give no dependencies;
* some inputs carry no derivative (``copysign``'s ``other``);
* *selections* (``where``, ``clamp``, ``relu``, ``maximum`` ...) keep every candidate
  in global mode, and only the branch taken at this point in local mode (ties keep both).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch

from ..dtypes import DIFFERENTIABLE
from .shapes import bcast, union_opt

aten = torch.ops.aten


def _out(call):
    return call.outs[0]


def _float_tensors(call, skip=()):
    return [(name, a) for name, a in call.bound.items()
            if name not in skip and isinstance(a, torch.Tensor) and a.dtype in DIFFERENTIABLE]


def generic(call, skip=()) -> List[Optional[object]]:
    """Union of the broadcast inputs, for every floating output."""
    res = []
    for o in call.outs:
        if o.dtype not in DIFFERENTIABLE:
            res.append(None)
            continue
        parts = [bcast(call.prov(a), a.shape, o.shape) for _, a in _float_tensors(call, skip)]
        res.append(union_opt(parts, o.numel(), o.device))
    return res


def zero_derivative(call):
    return [None] * len(call.outs)


def ignoring(*names) -> Callable:
    """Generic rule that skips inputs with no derivative."""
    return lambda call: generic(call, skip=names)


def _select(call, masks: Dict[str, torch.Tensor]):
    """Union of inputs, each kept only where its mask is ``True`` (broadcast to the output)."""
    o = _out(call)
    parts = []
    for name, a in _float_tensors(call):
        m = masks.get(name)
        parts.append(bcast(call.prov(a), a.shape, o.shape, None if m is None else m.expand(o.shape)))
    return [union_opt(parts, o.numel(), o.device)]


def _choice(mask_fn: Callable) -> Callable:
    """A selection made by the tracked values themselves: all candidates unless local."""
    def rule(call):
        if not call.local:
            return generic(call)
        return _select(call, mask_fn(call))
    return rule


def _v(call, name):
    a = call.bound.get(name)
    return call.value(a) if isinstance(a, torch.Tensor) else a


def _within(x, lo, hi):
    m = torch.ones_like(x, dtype=torch.bool)
    if lo is not None:
        m &= x >= lo
    if hi is not None:
        m &= x <= hi
    return m


def _clamp_masks(call):
    """``min(max(x, lo), hi)``: ``x`` where ``lo <= x <= hi``, ``lo`` where ``x <= lo <= hi``, ``hi``
    where ``max(x, lo) >= hi`` (so ``hi`` wins when ``lo > hi``).  Ties keep both."""
    x, lo, hi = _v(call, "self"), _v(call, "min"), _v(call, "max")
    m = {"self": _within(x, lo, hi)}
    if isinstance(lo, torch.Tensor):
        m["min"] = (x <= lo) if hi is None else (x <= lo) & (lo <= hi)
    if isinstance(hi, torch.Tensor):
        m["max"] = (x >= hi) if lo is None else torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype)) >= hi
    return m


def _binary_extreme(larger: bool):
    def masks(call):
        a, b = _v(call, "self"), _v(call, "other")
        return {"self": a >= b if larger else a <= b, "other": b >= a if larger else b <= a}
    return masks


def _where(call):
    cond = call.bound["condition"]
    if call.is_derived(cond) and not call.local:
        return generic(call)
    c = call.value(cond)
    return _select(call, {"self": c, "other": ~c})


def _masked_fill(call):
    mask = call.bound["mask"]
    if call.is_derived(mask) and not call.local:
        return generic(call)
    m = call.value(mask)
    return _select(call, {"self": ~m, "value": m})


def _threshold_masks(call):
    return {"self": _v(call, "self") >= _v(call, "threshold")}


def _shrink_masks(call):
    return {"self": _v(call, "self").abs() >= _v(call, "lambd")}


def _remainder_masks(rounding):
    """``self - rounding(self / other) * other``: ``d/dother = -rounding(self / other)``, zero while
    the quotient rounds to 0 (a neighbourhood property, so local mode drops ``other`` there)."""
    def masks(call):
        b = _v(call, "other")
        if not isinstance(b, torch.Tensor):
            return {}
        return {"other": rounding(_v(call, "self") / b) != 0}
    return masks


def _div(call):
    if call.bound.get("rounding_mode") is not None:   # floor/trunc division: piecewise constant
        return zero_derivative(call)
    return generic(call)


def _logit_masks(call):
    eps = _v(call, "eps")
    return {} if eps is None else {"self": _within(_v(call, "self"), eps, 1 - eps)}


def _dropout_backward(call):
    """``grad * mask * scale``: the mask is a constant choice (the dropout's random draw);
    with ``constant_zeros="drop"`` a zero ``scale`` cuts everything."""
    mask = call.bound["mask"]
    if call.is_derived(mask) and not call.local:
        return generic(call)
    live = call.value(mask)
    if call.drops_zeros and call.bound["scale"] == 0:
        live = torch.zeros_like(live)
    return _select(call, {"grad_output": live})


def _nonzero_factor(call, name: str, factor=lambda v: v) -> torch.Tensor:
    """Where ``factor(value of name)`` is not an exact zero, or ``name`` carries provenance."""
    v = call.bound.get(name)
    if not isinstance(v, torch.Tensor):
        return torch.tensor(factor(v) != 0, device=_out(call).device)
    m = factor(call.value(v)) != 0
    p = call.prov(v)
    if p is not None:
        m = m | (p.lengths() > 0).reshape(m.shape)
    return m


def _mul(call):
    """``x * y``; with ``constant_zeros="drop"`` an exact zero without provenance cuts the other factor."""
    if not call.drops_zeros:
        return generic(call)
    return _select(call, {"self": _nonzero_factor(call, "other"), "other": _nonzero_factor(call, "self")})


def _lerp(call):
    """``self + weight * (end - self)``: ``d/dself = 1 - weight``, ``d/dend = weight``; with
    ``constant_zeros="drop"`` a constant weight of exactly 1 (0) cuts ``self`` (``end``)."""
    if not call.drops_zeros:
        return generic(call)
    return _select(call, {"self": _nonzero_factor(call, "weight", lambda w: 1 - w),
                          "end": _nonzero_factor(call, "weight")})


TABLE: Dict[object, Callable] = {
    aten.mul: _mul,
    aten.lerp: _lerp,
    # derivative zero everywhere
    **{op: zero_derivative for op in (
        aten.floor, aten.ceil, aten.round, aten.trunc, aten.fix, aten.sign,
        aten.heaviside, aten.floor_divide, aten.signbit, aten.bernoulli)},
    aten.copysign: ignoring("other"),
    aten.nextafter: ignoring("other"),   # autograd: d/dself = 1 (a step of one ulp), d/dother = 0
    aten.div: _div,
    aten.rrelu_with_noise: ignoring("noise"),   # noise: the random slopes, written, no derivative
    aten.native_dropout_backward: _dropout_backward,
    # selections
    aten.where: _where,
    aten.masked_fill: _masked_fill,
    aten.relu: _choice(lambda c: {"self": _v(c, "self") >= 0}),
    aten.relu6: _choice(lambda c: {"self": _within(_v(c, "self"), 0, 6)}),
    aten.hardtanh: _choice(lambda c: {"self": _within(_v(c, "self"), _v(c, "min_val"), _v(c, "max_val"))}),
    aten.hardsigmoid: _choice(lambda c: {"self": _within(_v(c, "self"), -3, 3)}),
    aten.hardswish: _choice(lambda c: {"self": _v(c, "self") >= -3}),
    aten.threshold: _choice(_threshold_masks),
    aten.hardshrink: _choice(_shrink_masks),
    aten.softshrink: _choice(_shrink_masks),
    aten.clamp: _choice(_clamp_masks),
    aten.clip: _choice(_clamp_masks),
    aten.clamp_min: _choice(lambda c: {"self": _v(c, "self") >= _v(c, "min"),
                                       **({"min": _v(c, "self") <= _v(c, "min")}
                                          if isinstance(_v(c, "min"), torch.Tensor) else {})}),
    aten.clamp_max: _choice(lambda c: {"self": _v(c, "self") <= _v(c, "max"),
                                       **({"max": _v(c, "self") >= _v(c, "max")}
                                          if isinstance(_v(c, "max"), torch.Tensor) else {})}),
    aten.maximum: _choice(_binary_extreme(True)),
    aten.minimum: _choice(_binary_extreme(False)),
    aten.fmax: _choice(_binary_extreme(True)),
    aten.fmin: _choice(_binary_extreme(False)),
    aten.remainder: _choice(_remainder_masks(torch.floor)),
    aten.fmod: _choice(_remainder_masks(torch.trunc)),
    aten.logit: _choice(_logit_masks),
}


def fresh_constant(call):
    """Factory-like ops (``zeros_like``, ``rand_like`` ...): values not computed from the input."""
    call.derived = False
    return [None] * len(call.outs)


for _op in (aten.zeros_like, aten.ones_like, aten.empty_like, aten.full_like, aten.rand_like,
            aten.randn_like, aten.randint_like):
    TABLE[_op] = fresh_constant
