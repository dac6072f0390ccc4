"""Provenance rules, one module per kind of op, registered with :func:`~.registry.rule`.

A rule takes a :class:`~.api.Call` and returns the provenance of the op's tensor
outputs.  In-place variants (``add_``) use the rule of their functional op
(``add``); ``out=`` overloads share their packet's rule; ops tagged
``torch.Tag.pointwise`` without a rule get the broadcasting union.  What the tracer
does for ops with no registered rule (decompositions, custom ops, the conservative
pattern) is in :mod:`trackjac.tracer.resolve`.

Adding an op is one decorator on the function of its kind's module::

    @rule(aten.my_op)
    def my_op(call):
        ...
"""
from . import (conv, factorizations, foreach, indexing, linalg, movement, nn, pointwise,  # noqa: F401
               reductions, spectral)
from . import rnn  # noqa: F401
from . import backward  # noqa: F401  (after conv and pointwise, whose tables it reuses)
from . import nondiff  # noqa: F401,I001  (last: it covers only packets the others leave without a rule)
from .api import Call, Carrier, conservative, conservative_from
from .registry import find, find_with_kind, register, rule, tag_rule

__all__ = ["Call", "Carrier", "conservative", "conservative_from", "find", "find_with_kind", "register", "rule",
           "tag_rule"]
