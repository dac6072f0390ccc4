"""Identical rows are one constraint: merge them before coloring, check the result after.

Two rows with the same vertex set forbid the same color pairs, so the coloring
only needs one of them. Bundle adjustment has two rows per observation (column
coloring) and 9 identical camera columns (row coloring): merging halves, or
divides by six, the incidences every greedy step gathers and sorts.

Rows are merged by a random 62-bit hash of their vertex sets (no sort of the
nonzeros, which would cost as much as the merge saves). A hash collision would
merge two different rows, so the final coloring is checked against every
original row (:func:`distinct_in_rows`, also sort-free) and the caller colors
again without merging when the check fails.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .state import BITS, popcount

__all__ = ["merge_identical_rows", "distinct_in_rows"]

def merge_identical_rows(rows: Tensor, cols: Tensor, m: int, n: int, seed: int = 12345
                         ) -> Optional[Tuple[Tensor, Tensor, int]]:
    """``(rows, cols, m)`` keeping one row of each group with equal hashed vertex sets (renumbered
    0..m'-1), or None when every row is distinct (nothing to gain)."""
    gen = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 2**62, (n,), generator=gen)
    # wrapping int64 sums of random words: equal sets give equal keys, the length guards
    # against the commonest accidental equalities (a subset summing alike is 2^-62 likely)
    key = torch.zeros(m, dtype=torch.long).index_add_(0, rows, r.index_select(0, cols))
    key = key * 1_000_003 + torch.bincount(rows, minlength=m)
    uniq, inv = torch.unique(key, return_inverse=True)
    k = uniq.numel()
    if k == m:
        return None
    first = torch.full((k,), m, dtype=torch.long).scatter_reduce_(0, inv, torch.arange(m), "amin")
    keep = first.index_select(0, inv.index_select(0, rows)) == rows
    return inv.index_select(0, rows[keep]), cols[keep], k


def distinct_in_rows(rows: Tensor, cols: Tensor, m: int, colors: Tensor) -> bool:
    """Whether no row holds two vertices (columns) of one color, without sorting: per row, a sum
    of ``1 << color`` has as many set bits as terms exactly when the colors are distinct (every
    repeat carries, and each carry loses a bit). A vertex listed twice in a row counts as a clash."""
    if rows.numel() == 0:
        return True
    c = colors.index_select(0, cols)
    if int(c.min()) < 0:
        return False
    words = int(c.max()) // BITS + 1
    bit = torch.ones((), dtype=torch.long) << (c % BITS)
    # one sum per (row, word) in a single pass, or a pass per word where m x words would
    # outgrow the nonzeros (many colors, short rows)
    passes = [None] if m * words <= 2 * rows.numel() + 1024 else list(range(words))
    bits = torch.zeros(m, dtype=torch.long)
    for i in passes:
        if i is None:
            slot, add, width = (rows if words == 1 else rows * words + c // BITS), bit, words
        else:
            slot, add, width = rows, bit * (c // BITS == i), 1
        acc = torch.zeros(m * width, dtype=torch.long).index_add_(0, slot, add)
        bits += popcount(acc).view(m, width).sum(1)
    return torch.equal(bits, torch.bincount(rows, minlength=m))
