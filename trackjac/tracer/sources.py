"""Global id ranges of source tensors.

Every ``Tracked(x)`` source owns ``x.numel()`` consecutive integer ids; a
provenance entry is one such id, so one computation can mix any number of
sources.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

_lock = threading.Lock()
_cursor = 0


@dataclass(frozen=True)
class Source:
    first: int
    numel: int
    shape: tuple


def allocate(numel: int, shape) -> Source:
    """Reserve ``numel`` fresh ids."""
    global _cursor
    with _lock:
        first = _cursor
        _cursor += max(numel, 1)
        return Source(first, numel, tuple(shape))

