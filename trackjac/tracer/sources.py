"""Global id ranges of source tensors.

Every ``Tracked(x)`` source owns ``x.numel()`` consecutive integer ids; a
provenance entry is one such id, so one computation can mix any number of
sources.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

_lock = threading.Lock()
_cursor = 0
_local: list = []   # [first, end) of every source made with local=True


@dataclass(frozen=True)
class Source:
    first: int
    numel: int
    shape: tuple


def allocate(numel: int, shape, local: bool = False) -> Source:
    """Reserve ``numel`` fresh ids (``local``: for a source whose choices resolve at this point)."""
    global _cursor
    with _lock:
        first = _cursor
        _cursor += max(numel, 1)
        if local:
            _local.append((first, first + max(numel, 1)))
        return Source(first, numel, tuple(shape))


def local_ranges(device=None) -> torch.Tensor:
    """``(k, 2)`` ``[first, end)`` id ranges of the local sources."""
    with _lock:
        return torch.tensor(_local, dtype=torch.int64, device=device).reshape(-1, 2)

