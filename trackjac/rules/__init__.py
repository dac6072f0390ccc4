"""Provenance rules, one table per kind of op, keyed by ATen overload packet.

A rule takes a :class:`~trackjac.dispatch.Call` and returns one provenance (or
``None``: no dependencies) per tensor output of the op, in row-major order.
In-place variants (``add_``) use the rule of their functional op (``add``);
``out=`` overloads share their packet's rule.  Packets tagged
``torch.Tag.pointwise`` without an entry get the broadcasting union rule; other ops
without an entry run PyTorch's decomposition on the tracked inputs (:mod:`.decomp`),
``torch.library`` custom ops their registered backward or Python body
(:mod:`.autograd_function`, which also hooks ``torch.autograd.Function.apply``), and
only then fall back to the conservative pattern.

Adding an op is one line in the table of its kind::

    TABLE[aten.my_op] = some_rule
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from . import (autograd_function, conv, decomp, factorizations, foreach, indexing, linalg, movement,
               nn, pointwise, reductions, spectral)

aten = torch.ops.aten

RULES: Dict[object, Callable] = {}
KIND: Dict[object, str] = {}   # packet -> name of the table that holds its rule
for _mod in (pointwise, reductions, movement, indexing, linalg, factorizations, nn, conv, spectral,
             foreach):
    RULES.update(_mod.TABLE)
    KIND.update({p: "table:" + _mod.__name__.rsplit(".", 1)[-1] for p in _mod.TABLE})


def _functional(packet):
    name = packet.__name__
    if name.endswith("_") and not name.endswith("__"):
        return getattr(aten, name[:-1], None)
    return None


def _is_pointwise(packet) -> bool:
    return any(torch.Tag.pointwise in getattr(packet, o).tags for o in packet.overloads())


def lookup(func) -> Optional[Callable]:
    """The rule for an ATen overload, or ``None`` if there is none.

    In order: the op's table entry, its functional op's (``clamp_min_`` -> ``clamp_min``: the
    table beats the pointwise tag, which the in-place op carries too), the pointwise tag,
    PyTorch's decomposition run on the tracked inputs (:mod:`.decomp`).
    """
    packets = [p for p in (func.overloadpacket, _functional(func.overloadpacket)) if p is not None]
    for p in packets:
        rule = RULES.get(p)
        if rule is not None:
            return rule
    if any(_is_pointwise(p) for p in packets):
        return pointwise.generic
    if func.namespace != "aten":
        rule = autograd_function.custom_op_rule(func)
        if rule is not None:
            return rule
    return decomp.find(func)


def rule_kind(func) -> Optional[str]:
    """Where :func:`lookup` finds the rule of ``func``: ``table:<module>``, ``pointwise tag``,
    ``decomposition`` or ``None`` (conservative)."""
    packets = [p for p in (func.overloadpacket, _functional(func.overloadpacket)) if p is not None]
    for p in packets:
        if p in RULES:
            return KIND.get(p, "table")
    if any(_is_pointwise(p) for p in packets):
        return "pointwise tag"
    if func.namespace != "aten" and autograd_function.custom_op_rule(func) is not None:
        return "custom op"
    if decomp.find(func) is not None:
        return "decomposition"
    return None
