"""Word-level bit tricks shared by the bitmask provenance and the coloring."""
from __future__ import annotations

import torch


def or_dim1(x: torch.Tensor) -> torch.Tensor:
    """OR over dim 1 of ``(n, c, ...)`` int words by pairwise halving: ``log2(c)`` steps."""
    while x.shape[1] > 1:
        h = x.shape[1] // 2
        y = x[:, :h] | x[:, h:2 * h]
        if x.shape[1] % 2:
            y[:, 0] |= x[:, 2 * h]
        x = y
    return x[:, 0]
