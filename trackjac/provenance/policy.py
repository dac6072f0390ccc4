"""Which representation new provenance uses: a setting of this package, set by its caller.

The tracer sets it for the span of a traced computation (``tracking(representation=...)``);
the algebra only reads it, so it depends on no tracing state.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

#: ``representation="auto"`` uses bitmasks when a computation tracks at most this many
#: input elements (measured on this project's benchmarks: see docs/performance.md).
AUTO_MAX_INPUTS = 1024
#: Mixed operations stay in bitmasks while the ids involved span at most this many bits.
AUTO_MAX_SPAN = AUTO_MAX_INPUTS + 128

REPRESENTATIONS = ("auto", "sets", "bits")

_state = threading.local()


def representation() -> str:
    """The representation in force in this thread: ``"auto"``, ``"sets"`` or ``"bits"``."""
    return getattr(_state, "rep", "auto")


@contextlib.contextmanager
def using(rep: str) -> Iterator[None]:
    """Use representation ``rep`` inside the block (this thread only)."""
    if rep not in REPRESENTATIONS:
        raise ValueError(f"representation must be 'auto', 'sets' or 'bits', got {rep!r}")
    saved = representation()
    _state.rep = rep
    try:
        yield
    finally:
        _state.rep = saved


def choose(n_inputs: int) -> str:
    """Representation for a computation with ``n_inputs`` tracked input elements."""
    rep = representation()
    if rep == "auto":
        return "bits" if n_inputs <= AUTO_MAX_INPUTS else "sets"
    return rep


def smaller_as_bits(numel: int, span: int, nnz: int) -> bool:
    """Whether ``numel`` rows of ``span`` bits take at most half the memory of ``nnz`` CSR ids."""
    return numel * span <= 32 * nnz


def keep_bits(span: int, numel: int = 0, nnz: int = 0) -> bool:
    """Whether provenances of ``numel`` rows whose ids span ``span`` bits (``nnz`` ids in
    all, as sets) are combined as bitmasks."""
    rep = representation()
    if rep == "auto":
        return span <= AUTO_MAX_SPAN or smaller_as_bits(numel, span, nnz)
    return rep == "bits"
