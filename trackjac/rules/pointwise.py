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
from .gradient import structural_zeros
from .registry import register, rule, tag_rule
from .shapes import bcast, union_opt

aten = torch.ops.aten


def _out(call):
    return call.outs[0]


def _float_tensors(call, skip=()):
    return [(name, a) for name, a in call.bound.items()
            if name not in skip and isinstance(a, torch.Tensor) and a.dtype in DIFFERENTIABLE]


@tag_rule(torch.Tag.pointwise)
def generic(call, skip=()) -> List[Optional[object]]:
    """Union of the broadcast inputs, for every floating output (the rule of every op tagged
    ``torch.Tag.pointwise`` without its own)."""
    res = []
    for o in call.outs:
        if o.dtype not in DIFFERENTIABLE:
            res.append(None)
            continue
        parts = [bcast(call.prov(a), a.shape, o.shape) for _, a in _float_tensors(call, skip)]
        res.append(union_opt(parts, o.numel(), o.device))
    return res


@rule(aten.floor, aten.ceil, aten.round, aten.trunc, aten.fix, aten.sign,
      aten.heaviside, aten.floor_divide, aten.signbit)
def zero_derivative(call) -> Optional[object]:
    """Derivative zero everywhere: no dependencies."""
    return None


@rule(aten.bernoulli, always=True)
def _bernoulli(call) -> Optional[object]:
    """Random draws (no derivative): marked as random, so value-aware rules do not take their
    zeros for constants (``always``: marked even when no input carries provenance)."""
    call.random = True
    return None


def ignoring(*names) -> Callable:
    """Generic rule that skips inputs with no derivative."""
    def run(call):
        return generic(call, skip=names)
    run.__name__ = run.__qualname__ = "ignoring_" + "_".join(names)
    return run


register([aten.copysign], ignoring("other"))
register([aten.nextafter], ignoring("other"))   # autograd: d/dself = 1 (a step of one ulp), d/dother = 0
register([aten.rrelu_with_noise], ignoring("noise"))   # noise: the random slopes, written, no derivative


def _select(call, masks: Dict[str, torch.Tensor]):
    """Union of inputs, each kept only where its mask is ``True`` (broadcast to the output)."""
    o = _out(call)
    parts = []
    for name, a in _float_tensors(call):
        m = masks.get(name)
        parts.append(bcast(call.prov(a), a.shape, o.shape, None if m is None else m.expand(o.shape)))
    return [union_opt(parts, o.numel(), o.device)]


def _nan_kept(call, masks: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Where an operand is nan, every input stays: comparisons are ``False`` at nan, while some of
    autograd's formulas pass the derivative through there (``relu``'s ``threshold_backward`` zeroes
    only where ``result <= 0``; ``hardtanh``/``relu6`` where ``x <= lo or x >= hi``; ``threshold``,
    ``hardswish``, the shrinks, ``logit``, ``maximum``).  ``clamp`` and ``hardsigmoid`` test
    ``lo <= x <= hi`` instead: 0 at nan, as here."""
    o = _out(call)
    nan = None
    for _, a in _float_tensors(call):
        v = call.value(a)
        if v.is_floating_point() or v.is_complex():
            n = torch.isnan(v).expand(o.shape)
            nan = n if nan is None else nan | n
    if nan is None or not bool(nan.any()):
        return masks
    return {name: m.expand(o.shape) | nan for name, m in masks.items()}


def _choice(mask_fn: Callable, keep_nan: bool = False) -> Callable:
    """A selection made by the tracked values themselves: all candidates unless local, where the
    branch taken is kept (ties keep both; ``keep_nan``: autograd's formula passes the derivative
    where an operand is nan, so every input stays there)."""
    def run(call):
        if not call.local:
            return generic(call)
        masks = mask_fn(call)
        return _select(call, _nan_kept(call, masks) if keep_nan else masks)
    run.__name__ = run.__qualname__ = "choice" + mask_fn.__name__
    return run


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


def _relu_masks(call):
    return {"self": _v(call, "self") >= 0}


def _relu6_masks(call):
    return {"self": _within(_v(call, "self"), 0, 6)}


def _hardtanh_masks(call):
    return {"self": _within(_v(call, "self"), _v(call, "min_val"), _v(call, "max_val"))}


def _hardsigmoid_masks(call):
    return {"self": _within(_v(call, "self"), -3, 3)}


def _hardswish_masks(call):
    return {"self": _v(call, "self") >= -3}


register([aten.relu], _choice(_relu_masks, keep_nan=True))
register([aten.relu6], _choice(_relu6_masks, keep_nan=True))
register([aten.hardtanh], _choice(_hardtanh_masks, keep_nan=True))
register([aten.hardsigmoid], _choice(_hardsigmoid_masks))
register([aten.hardswish], _choice(_hardswish_masks, keep_nan=True))


def _clamp_masks(call):
    """``min(max(x, lo), hi)``: ``x`` where ``lo <= x <= hi``, ``lo`` where ``x <= lo <= hi``, ``hi``
    where ``x >= hi`` or ``hi <= lo`` (so ``hi`` wins when ``lo > hi``).  Ties keep both."""
    x, lo, hi = _v(call, "self"), _v(call, "min"), _v(call, "max")
    m = {"self": _within(x, lo, hi)}
    if isinstance(lo, torch.Tensor):
        m["min"] = (x <= lo) if hi is None else (x <= lo) & (lo <= hi)
    if isinstance(hi, torch.Tensor):
        # autograd: ``x > hi or hi < lo`` (not ``max(x, lo) >= hi``, which is False at a nan x)
        m["max"] = (x >= hi) if lo is None else (x >= hi) | (hi <= torch.as_tensor(lo, dtype=x.dtype))
    return m


register([aten.clamp, aten.clip], _choice(_clamp_masks))


def _clamp_min_masks(call):
    x, lo = _v(call, "self"), _v(call, "min")
    m = {"self": x >= lo}
    if isinstance(lo, torch.Tensor):
        m["min"] = x <= lo
    return m


def _clamp_max_masks(call):
    x, hi = _v(call, "self"), _v(call, "max")
    m = {"self": x <= hi}
    if isinstance(hi, torch.Tensor):
        m["max"] = x >= hi
    return m


register([aten.clamp_min], _choice(_clamp_min_masks))
register([aten.clamp_max], _choice(_clamp_max_masks))


def _binary_extreme(larger: bool):
    def masks(call):
        a, b = _v(call, "self"), _v(call, "other")
        return {"self": a >= b if larger else a <= b, "other": b >= a if larger else b <= a}
    masks.__name__ = masks.__qualname__ = "_larger_masks" if larger else "_smaller_masks"
    return masks


def _nan_ignoring_extreme(larger: bool):
    """``fmax``/``fmin``: a nan operand loses (the other is the result, and gets the derivative);
    autograd's formula: ``self`` where ``self >= other or other is nan``, ``other`` elsewhere."""
    ext = _binary_extreme(larger)

    def masks(call):
        a, b = _v(call, "self"), _v(call, "other")
        m = ext(call)
        return {"self": m["self"] | torch.isnan(b), "other": m["other"] | torch.isnan(a)}
    masks.__name__ = masks.__qualname__ = "_fmax_masks" if larger else "_fmin_masks"
    return masks


# the binary ``max``/``min`` overloads (:mod:`.reductions`) use these too; at nan both sides get
# a derivative (``where(self == other, grad / 2, grad)`` masked where the other side wins)
maximum = register([aten.maximum], _choice(_binary_extreme(True), keep_nan=True))
minimum = register([aten.minimum], _choice(_binary_extreme(False), keep_nan=True))
register([aten.fmax], _choice(_nan_ignoring_extreme(True)))
register([aten.fmin], _choice(_nan_ignoring_extreme(False)))


@rule(aten.where, indices=("condition",), candidates=generic)
def _where(call):
    """A derived condition in global mode keeps both inputs (``candidates``, see the registry)."""
    c = call.value(call.bound["condition"])
    return _select(call, {"self": c, "other": ~c})


@rule(aten.masked_fill, indices=("mask",), candidates=generic)
def _masked_fill(call):
    m = call.value(call.bound["mask"])
    return _select(call, {"self": ~m, "value": m})


def _threshold_masks(call):
    return {"self": _v(call, "self") >= _v(call, "threshold")}


def _shrink_masks(call):
    return {"self": _v(call, "self").abs() >= _v(call, "lambd")}


register([aten.threshold], _choice(_threshold_masks, keep_nan=True))
register([aten.hardshrink, aten.softshrink], _choice(_shrink_masks, keep_nan=True))


@rule(aten.threshold_backward)
def _threshold_backward(call):
    """``grad * ~(self <= threshold)`` (``relu``'s backward): piecewise constant in ``self``, so only
    ``grad_output`` flows, which keeps relu's Hessian empty.  Local mode keeps it where autograd
    does: not at a tie, since relu passes its result (exactly 0 wherever ``x < 0``)."""
    if not call.local:
        return generic(call, skip=("self",))
    s = _v(call, "self")
    return _select(call, {"grad_output": ~(s <= _v(call, "threshold")),
                          "self": torch.zeros((), dtype=torch.bool, device=s.device)})


def _remainder_masks(rounding):
    """``self - rounding(self / other) * other``: ``d/dother = -rounding(self / other)``, zero while
    the quotient rounds to 0 (a neighbourhood property, so local mode drops ``other`` there)."""
    def masks(call):
        b = _v(call, "other")
        if not isinstance(b, torch.Tensor):
            return {}
        return {"other": rounding(_v(call, "self") / b) != 0}
    masks.__name__ = masks.__qualname__ = f"_remainder_masks_{rounding.__name__}"
    return masks


register([aten.remainder], _choice(_remainder_masks(torch.floor)))
register([aten.fmod], _choice(_remainder_masks(torch.trunc)))


@rule(aten.div)
def _div(call):
    if call.bound.get("rounding_mode") is not None:   # floor/trunc division: piecewise constant
        return zero_derivative(call)
    return generic(call)


def _logit_masks(call):
    eps = _v(call, "eps")
    return {} if eps is None else {"self": _within(_v(call, "self"), eps, 1 - eps)}


register([aten.logit], _choice(_logit_masks, keep_nan=True))


def _varying_mask_kept(call):
    """``native_dropout_backward`` with a mask that varies (derived, or drawn at random): the
    product connects ``grad_output`` everywhere, except that a zero ``scale`` still cuts it."""
    if call.drops_zeros and call.bound["scale"] == 0:
        return None
    return generic(call)


@rule(aten.native_dropout_backward, indices=("mask",), candidates=_varying_mask_kept)
def _dropout_backward(call):
    """``grad * mask * scale``: the mask is the dropout's draw (a constant when built outside and
    not derived); with ``constant_zeros="drop"`` a zero ``scale`` cuts everything."""
    mask = call.bound["mask"]
    if call.varies(mask):   # a random draw in global mode: another draw at the next call
        return _varying_mask_kept(call)
    live = call.value(mask)
    if call.drops_zeros and call.bound["scale"] == 0:
        live = torch.zeros_like(live)
    return _select(call, {"grad_output": live})


def _nonzero_factor(call, name: str, factor=lambda v: v) -> torch.Tensor:
    """Where ``factor(value of name)`` is not an exact zero, or ``name`` carries provenance, or its
    values vary (computed from tracked values, ``x * (x > 0)``, or drawn at random, dropout masks:
    a zero here is not a zero at another point; see :meth:`.api.Call.varies`)."""
    v = call.bound.get(name)
    if not isinstance(v, torch.Tensor):
        return torch.tensor(factor(v) != 0, device=_out(call).device)
    if call.varies(v) and call.prov(v) is None:   # see linalg._live
        return torch.ones(v.shape, dtype=torch.bool, device=v.device)
    m = factor(call.value(v)) != 0
    p = call.prov(v)
    if p is not None:
        m = m | (p.lengths() > 0).reshape(m.shape)
    return m


@rule(aten.mul)
def _mul(call):
    """``x * y``; with ``constant_zeros="drop"`` an exact zero without provenance cuts the other
    factor, and so does, in a traced backward pass, a structurally zero gradient element (see
    :mod:`.gradient`)."""
    zs = [structural_zeros(call, call.bound.get(n)) for n in ("self", "other")]
    if not call.drops_zeros and zs[0] is None and zs[1] is None:
        return generic(call)
    keep = {"self": _nonzero_factor(call, "other"), "other": _nonzero_factor(call, "self")} \
        if call.drops_zeros else {}
    cut = zs[0] if zs[1] is None else zs[1] if zs[0] is None else zs[0] | zs[1]
    if cut is not None:
        shape = _out(call).shape
        keep = {n: (keep[n].expand(shape) if n in keep else torch.ones(shape, dtype=torch.bool, device=cut.device))
                & ~cut.expand(shape) for n in ("self", "other")}
    return _select(call, keep)


@rule(aten.lerp)
def _lerp(call):
    """``self + weight * (end - self)``: ``d/dself = 1 - weight``, ``d/dend = weight``; with
    ``constant_zeros="drop"`` a constant weight of exactly 1 (0) cuts ``self`` (``end``)."""
    if not call.drops_zeros:
        return generic(call)
    return _select(call, {"self": _nonzero_factor(call, "weight", lambda w: 1 - w),
                          "end": _nonzero_factor(call, "weight")})


@rule(aten.zeros_like, aten.ones_like, aten.empty_like, aten.full_like, always=True)
def fresh_constant(call) -> Optional[object]:
    """Factory-like ops (``zeros_like`` ...): values not computed from the input.
    ``always``: the outputs are marked as fresh constants even when no input carries provenance."""
    call.derived = False
    return None


@rule(aten.rand_like, aten.randn_like, aten.randint_like, always=True)
def fresh_random(call) -> Optional[object]:
    """``rand_like`` ...: not computed from the input, but drawn at random (not constants)."""
    call.derived = False
    call.random = True
    return None
