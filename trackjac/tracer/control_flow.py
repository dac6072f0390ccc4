"""Python reading a tracked value: the pattern then holds on this control-flow path only."""
from __future__ import annotations

import warnings

from ..errors import ControlFlowWarning, StrictModeError, user_stacklevel
from .origin import GLOBAL
from .state import config


# reads that hand Python a number (not just a branch): the value can leave torch
_NUMBER_READS = ("item()", "tolist()", "numpy()")


def control_flow(what, flat_tracked) -> None:
    """Python is about to read tracked values: warn (global mode) or raise (strict)."""
    cfg = config()
    if not any(t._store.derived for t in flat_tracked):
        return
    if cfg.local or not any(t._store.origin & GLOBAL for t in flat_tracked):
        return   # only local sources' values were read: their pattern is the one at this point
    cfg.path_dependent = True
    if cfg.read_log is not None:
        cfg.read_log.append((str(what), _value_read(what, flat_tracked)))
    if cfg.strict:
        raise StrictModeError(
            f"Python read the value of a tracked tensor ({what}): the pattern would hold only on "
            "this control-flow path. Use torch.where / masks instead of Python branching, or pass "
            "strict=False (then a ControlFlowWarning is issued) or local=True.")
    if not cfg.warned_control_flow:
        cfg.warned_control_flow = True
        leaves = ""
        if any(k in str(what) for k in _NUMBER_READS):
            leaves = (" The value also left torch as a Python number: anything built from it "
                      "(torch.tensor(t.item()), a NumPy round trip) carries no dependency on the inputs, "
                      "as autograd gives it no derivative; keep it a tensor (t, t.clone(), torch.where) "
                      "where the derivative should flow.")
        warnings.warn(
            f"Python read the value of a tracked tensor ({what}: bool(), item(), tolist() or "
            "'if t > 0:'): the Jacobian pattern holds only for inputs that take the same "
            f"control-flow path.{leaves}", ControlFlowWarning, stacklevel=user_stacklevel())


def _value_read(what, flat_tracked):
    """The Python value Python is about to read, where it is one tensor's (else None)."""
    if len(flat_tracked) != 1:
        return None   # aten.equal of two tracked tensors: not one tensor's value
    v = flat_tracked[0].value
    if what == "tolist()":
        return v.tolist()
    if what == "item()":
        return v.item()
    if isinstance(what, str) or v.numel() != 1:
        return None
    return v.item()
