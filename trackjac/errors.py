"""Warning and error classes raised by trackjac, and the one place that issues them."""
from __future__ import annotations

import sys
import warnings


class TrackJacWarning(UserWarning):
    """Base class of trackjac's warnings."""


class UnsupportedOpWarning(TrackJacWarning):
    """An op had no provenance rule; a conservative (dense) pattern was used."""


class ControlFlowWarning(TrackJacWarning):
    """Python read a tracked value (``bool``, ``item``, ``tolist``): the pattern holds on this path only."""


class DenseColoringWarning(TrackJacWarning):
    """The pattern is (nearly) dense: coloring saves under 10% of the products, so each row or
    column gets its own color; dense ``torch.func.jacrev`` / ``jacfwd`` do the same work."""


class StrictModeError(RuntimeError):
    """Raised in ``strict=True`` mode where a warning would otherwise be issued."""


class TrackingError(RuntimeError):
    """Provenance cannot be tracked here (e.g. a tracked value written into a plain tensor)."""


def user_stacklevel() -> int:
    """Stack level of the first frame outside trackjac and torch, so warnings point at user code."""
    f, level = sys._getframe(1), 1
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if not (mod.startswith("trackjac.") or mod == "trackjac" or mod.startswith("torch")):
            return level
        f, level = f.f_back, level + 1
    return 1


def warn_or_raise(msg: str, category, strict: bool) -> None:
    """Warn with ``category`` at the user's line, or raise :class:`StrictModeError` when ``strict``."""
    if strict:
        raise StrictModeError(msg)
    warnings.warn(msg, category, stacklevel=user_stacklevel())
