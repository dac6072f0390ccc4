"""What a rule sees: one op application (:class:`Call`), and what it returns.

A rule is a function ``rule(call)`` returning the row-major provenance of the op's
tensor outputs: a list (shorter lists are padded with ``None``), or a single
provenance or ``None`` for the first output (the others get none).  ``None``
means "no dependencies".  Rules are registered with :func:`~.registry.rule`.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch.utils._pytree import tree_flatten

from ..dtypes import DIFFERENTIABLE
from ..provenance import Provenance, broadcast_row


class Carrier:
    """A tensor that carries provenance; the tracer's ``Tracked`` is the one implementation.

    It has ``value`` (the plain tensor), ``_store`` (``prov``, ``derived``, ``local`` of its
    storage), ``_prov()`` (its provenance in row-major element order) and ``_nonlinear()`` (the
    part of it through which its derivative is not constant, ``None`` if empty).
    """

    __slots__ = ()


class Call:
    """One op application as seen by a rule."""

    __slots__ = ("func", "args", "kwargs", "bound", "outs", "local", "derived", "random", "constant_zeros",
                 "has_prov", "plain", "nonlinear", "_pre")

    def __init__(self, func, args, kwargs, bound, outs, local, derived, pre, constant_zeros=None,
                 has_prov=True, nonlinear=False):
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.bound = bound          # schema argument name -> original (possibly tracked) object
        self.outs = outs            # flattened output values (plain tensors)
        self.local = local
        self.derived = derived      # set False for outputs that are fresh constants (factories, RNG)
        self.random = False         # set True for outputs drawn at random (RNG ops: not constants)
        self.constant_zeros = constant_zeros  # "keep", "drop" or None (see drops_zeros)
        self.has_prov = has_prov    # whether any tensor argument carries provenance
        self.plain = ()             # positions of outputs to hand back as plain tensors (C++ reads them)
        self._pre = pre             # id(tracked) -> value before an in-place op mutated it
        # True: prov() reads the nonlinear dependencies instead (a linear op's rule run on them)
        self.nonlinear = nonlinear

    def sub(self, func, bound: dict, outs: List[torch.Tensor]) -> "Call":
        """A call of another op on some of this call's objects (a per-tensor op of ``_foreach_*``)."""
        return Call(func, (), {}, bound, outs, self.local, self.derived, self._pre, self.constant_zeros,
                    nonlinear=self.nonlinear)

    def value(self, a: Any) -> Any:
        """Plain value of ``a`` (as it was before the op ran)."""
        if isinstance(a, Carrier):
            return self._pre.get(id(a), a.value)
        return a

    def prov(self, a: Any) -> Optional[Provenance]:
        """Row-major provenance of ``a``; ``None`` if ``a`` carries no dependencies.  With
        ``nonlinear``: the ids through which ``a``'s derivative is not constant."""
        if isinstance(a, Carrier) and a.dtype in DIFFERENTIABLE and a._store.prov is not None:
            return a._nonlinear() if self.nonlinear else a._prov()
        return None

    @property
    def drops_zeros(self) -> bool:
        """Value-aware products: ``constant_zeros="drop"``, or unset (``None``) in local mode."""
        cz = self.constant_zeros
        return cz == "drop" or (cz is None and self.local)

    def is_derived(self, a: Any) -> bool:
        """Whether ``a``'s values were computed from tracked values (choices made by it are not constant)."""
        return isinstance(a, Carrier) and a._store.derived

    def varies(self, a: Any) -> bool:
        """Whether ``a``'s values may differ at another point: computed from tracked values or drawn
        at random.  Value-aware rules (``constant_zeros="drop"``) may treat an exact zero of ``a`` as
        a constant only where this is ``False``; in local mode the values at this point count, so
        this is ``False`` there."""
        return not self.local and isinstance(a, Carrier) and a._store.origin != 0

    def tensor_args(self) -> List[Any]:
        return [a for a in tree_flatten((self.args, self.kwargs))[0] if isinstance(a, torch.Tensor)]


def all_candidates(call: Call) -> List[Optional[Provenance]]:
    """Every float output element may come from any tracked element the op reads (a choice made
    by tracked values, with no tighter bound known)."""
    return conservative_from([call.prov(a) for a in call.tensor_args()], call.outs)


def conservative_from(provs: List[Optional[Provenance]], outs: List[torch.Tensor]) -> List[Optional[Provenance]]:
    """Every float element of ``outs`` depends on every id in ``provs``."""
    cols = [p.col for p in provs if p is not None]
    ids = torch.unique(torch.cat(cols)) if cols else None
    return [None if ids is None or o.dtype not in DIFFERENTIABLE else broadcast_row(ids.to(o.device), o.numel())
            for o in outs]


def conservative(call: Call) -> List[Optional[Provenance]]:
    """The rule of an op without one: every float output element depends on every tracked
    element the op reads."""
    return conservative_from([call.prov(a) for a in call.tensor_args()], call.outs)
