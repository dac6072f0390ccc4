"""Warning and error classes raised by trackjac."""


class TrackJacWarning(UserWarning):
    """Base class of trackjac's warnings."""


class UnsupportedOpWarning(TrackJacWarning):
    """An op had no provenance rule; a conservative (dense) pattern was used."""


class ControlFlowWarning(TrackJacWarning):
    """Python read a tracked value (``bool``, ``item``, ``tolist``): the pattern holds on this path only."""


class StrictModeError(RuntimeError):
    """Raised in ``strict=True`` mode where a warning would otherwise be issued."""


class TrackingError(RuntimeError):
    """Provenance cannot be tracked here (e.g. a tracked value written into a plain tensor)."""
