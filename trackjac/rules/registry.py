"""The rule registry: ``@rule(aten.op, ...)`` on the function, one rule per overload packet.

Modeled on ``torch/utils/flop_counter.py``'s ``register_flop_formula``: the
decorator sits on the rule, so the ops a function handles are written next to
it.  The registry does each rule's preamble once:

* a rule may return one provenance (or ``None``) for the first output, or a list
  shorter than the op's outputs: the rest is padded with ``None``;
* a call whose tensor arguments carry no provenance gets ``None`` for every output
  without running the rule, unless the rule is registered with ``always=True``
  (rules that mark outputs as fresh constants, or refuse an op).

* ``indices=("index", ...)`` names the arguments that are indices or masks (a tensor or a list
  of tensors).  In global mode, when one of them is derived from tracked values or drawn at
  random (it may differ at another point or draw), the choice it
  makes is not a constant: the rule is not run, ``candidates(call)`` is (default: every output
  element depends on every tracked element the op reads, :func:`.api.all_candidates`).  In local
  mode, or with constant indices, the rule runs and may read the index values.  Every rule that
  reads index or mask values declares them, so no rule can follow a derived index by mistake.

Whole families are one call: ``register(ops, fn)``.  A second rule for the same
packet is refused.  A rule for every op tagged ``torch.Tag.pointwise`` without an
entry is registered with :func:`tag_rule`.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch

from .api import Call, all_candidates

aten = torch.ops.aten

Rule = Callable[[Call], list]

RULES: Dict[object, Rule] = {}      # overload packet -> normalized rule
KIND: Dict[object, str] = {}        # overload packet -> "table:<module>"
TAG_RULES: Dict[object, Rule] = {}  # torch.Tag -> normalized rule
INDICES: Dict[object, Tuple[str, ...]] = {}   # overload packet -> its index/mask argument names


def index_tensors(call: Call, names: Sequence[str]) -> list:
    """The tensors passed as the arguments ``names`` (lists of tensors flattened)."""
    out = []
    for name in names:
        v = call.bound.get(name)
        for t in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(t, torch.Tensor):
                out.append(t)
    return out


def derived_index(call: Call, names: Sequence[str]) -> bool:
    """Global mode and one of the index arguments ``names`` computed from tracked values."""
    return bool(names) and any(call.varies(t) for t in index_tensors(call, names))


def _normalized(fn: Callable, always: bool, indices: Sequence[str] = (),
                candidates: Optional[Callable] = None) -> Rule:
    indices = tuple(indices)
    fallback = candidates or all_candidates

    def run(call: Call) -> list:
        n = len(call.outs)
        if not (always or call.has_prov):
            return [None] * n
        res = fallback(call) if derived_index(call, indices) else fn(call)
        if not isinstance(res, (list, tuple)):
            return [res] + [None] * (n - 1)
        if len(res) < n:
            return list(res) + [None] * (n - len(res))
        return res
    run.__name__ = getattr(fn, "__name__", "rule")
    run.__doc__ = fn.__doc__
    run.__wrapped__ = fn
    return run


def _kind(fn: Callable) -> str:
    return "table:" + getattr(fn, "__module__", "?").rsplit(".", 1)[-1]


def present(*names: str) -> list:
    """The ``aten`` ops of these names that this torch has: a rule written for an op added in a
    later torch release registers nothing on an older one (where no program can call it)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def register(ops: Iterable, fn: Callable, *, always: bool = False, kind: Optional[str] = None,
             indices: Sequence[str] = (), candidates: Optional[Callable] = None) -> Callable:
    """Register ``fn`` as the rule of every overload packet in ``ops``; returns ``fn``.

    ``kind`` names where the rule lives (default: ``table:<module of fn>``); ``indices`` and
    ``candidates``: see the module docstring."""
    wrapped = _normalized(fn, always, indices, candidates)
    for op in ops:
        if not isinstance(op, torch._ops.OpOverloadPacket):
            raise TypeError(f"rules are registered per overload packet (aten.add), got {op!r}")
        if op in RULES:
            raise ValueError(f"a rule for {op} is already registered "
                             f"({RULES[op].__name__} in {KIND[op]}); refusing {fn.__name__}")
        RULES[op] = wrapped
        KIND[op] = kind or _kind(fn)
        INDICES[op] = tuple(indices)
    return fn


def rule(*ops, always: bool = False, indices: Sequence[str] = (),
         candidates: Optional[Callable] = None) -> Callable[[Callable], Callable]:
    """Decorator: ``@rule(aten.trace)`` registers the function as the rule of ``aten.trace``
    (``indices``, ``candidates``: see the module docstring)."""
    def deco(fn: Callable) -> Callable:
        return register(ops, fn, always=always, indices=indices, candidates=candidates)
    return deco


def tag_rule(tag, *, always: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: the rule of ops carrying ``tag`` (``torch.Tag.pointwise``) without an entry."""
    def deco(fn: Callable) -> Callable:
        if tag in TAG_RULES:
            raise ValueError(f"a rule for tag {tag} is already registered")
        TAG_RULES[tag] = _normalized(fn, always)
        return fn
    return deco


def functional(packet):
    """The functional packet of an in-place packet (``add_`` -> ``add``), or ``None``."""
    name = packet.__name__
    if name.endswith("_") and not name.endswith("__"):
        return getattr(aten, name[:-1], None)
    return None


def _tagged(packet, tag) -> bool:
    return any(tag in getattr(packet, o).tags for o in packet.overloads())


def find(func) -> Optional[Rule]:
    """The registered rule of an ATen overload: its packet's entry, its functional packet's
    (``clamp_min_`` -> ``clamp_min``: the entry beats the tag, which the in-place op carries
    too), then a tag rule.  ``None`` if there is none."""
    return find_with_kind(func)[0]


def find_with_kind(func):
    """``(rule, where)`` as :func:`find`; ``where`` is ``table:<module>`` or ``<tag> tag``."""
    packets = [p for p in (func.overloadpacket, functional(func.overloadpacket)) if p is not None]
    for p in packets:
        r = RULES.get(p)
        if r is not None:
            return r, KIND[p]
    for tag, r in TAG_RULES.items():
        if any(_tagged(p, tag) for p in packets):
            return r, f"{tag.name} tag"
    return None, None
