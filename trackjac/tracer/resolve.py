"""Which rule an op gets, in order: the registered rule (its packet's, its functional
packet's, a tag's), a ``torch.library`` custom op's backward or body, PyTorch's
decomposition run on the tracked inputs, and otherwise none (the caller then uses
the conservative pattern, with a warning)."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..rules import find_with_kind
from . import autograd_function, decomp

aten = torch.ops.aten


def _resolve(func):
    rule, kind = find_with_kind(func)
    if rule is not None:
        return rule, kind
    if func.namespace == "prims":   # a primitive (from a reference decomposition): its ATen twin's rule
        twin = getattr(getattr(aten, func.overloadpacket.__name__, None), "default", None)
        rule, kind = find_with_kind(twin) if twin is not None else (None, None)
        if rule is not None:
            return rule, kind
    if func.namespace != "aten":
        rule = autograd_function.custom_op_rule(func)
        if rule is not None:
            return rule, "custom op"
    rule = decomp.find(func)
    if rule is not None:
        return rule, "decomposition"
    return None, None


def lookup(func) -> Optional[Callable]:
    """The rule for an ATen overload, or ``None`` if there is none."""
    return _resolve(func)[0]


def rule_kind(func) -> Optional[str]:
    """Where :func:`lookup` finds the rule of ``func``: ``table:<module>``, ``pointwise tag``,
    ``custom op``, ``decomposition`` or ``None`` (conservative)."""
    return _resolve(func)[1]
