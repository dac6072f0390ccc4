"""Tracing state of this thread: the mode flags of the innermost ``tracking()``."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

#: ``_Store.nonlinear`` (see :mod:`.tensor`) when every dependency is nonlinear: nothing known
SAME: Any = object()


@dataclass
class Config:
    local: bool = False
    strict: bool = False
    depth: int = 0  # > 0 inside tracking()
    path_dependent: bool = False  # Python control flow read a tracked value
    warned_control_flow: bool = False
    threads: int = 1  # intra-op threads for provenance bookkeeping (0: leave torch's setting)
    n_inputs: Optional[int] = None  # tracked input elements of the computation, if known
    constant_zeros: Optional[str] = None  # "drop": a product with an exact zero that has no provenance
    # drops; "keep": it connects; None: "drop" in local mode only (rules' Call.drops_zeros)
    # when a list: control_flow appends (what, Python value read) for each read that makes the
    # pattern path-dependent, in order (plans record it; tracking() leaves it alone)
    read_log: Optional[list] = None
    # an id owned by no source (allocated on first use): with constant_zeros="drop" in global mode,
    # a value computed from tracked values (or drawn at random) without a derivative carries it, so
    # that value-aware rules see, element by element, that its zeros are not constants; patterns,
    # which read only source id ranges, never show it
    varying_id: Optional[int] = None
    # jacobian_sparsity(classify=True): stores also keep the nonlinear dependencies (_Store.nonlinear)
    classify: bool = False
    # while classifying: Python read a number from a varying float tensor (item(), tolist()); that
    # number may enter the derivatives, so no entry can be called constant
    read_varying: bool = False


_state = threading.local()


def config() -> Config:
    cfg = getattr(_state, "cfg", None)
    if cfg is None:
        cfg = _state.cfg = Config()
    return cfg
