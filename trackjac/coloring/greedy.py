"""Greedy coloring, vectorized: speculative greedy in a vertex order, then iterated greedy.

1. *Speculative greedy*: vertices are taken in a vertex order, a chunk at a
   time. A chunk picks colors at once; chunk members that share a row and
   picked one color are caught by hashing (row, color), and the later ones go
   first in the next chunk. The coloring stays valid at every step.
2. *Iterated greedy* (Culberson): recoloring class by class never increases the
   number of colors (a class is independent, so it is one vectorized step).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .graph import Graph, sort_perm
from .state import State, commit_unclashed, num_colors

__all__ = ["speculative_greedy", "iterated_greedy", "class_order"]

_CHUNKS = 24  # speculative steps per order: fewer is faster, more is closer to sequential
_MIN_CHUNK = 256


def _twin_rank(g: Graph, S: Tensor, rank: Tensor) -> Optional[Tensor]:
    """Position of each vertex of ``S`` among its twins in ``S`` (by rank): twins have the same
    free colors, so the j-th takes the j-th free one instead of all clashing on the first."""
    keys = g.twin_keys()
    if keys is None:
        return None
    key = keys.index_select(0, S)
    by_rank = torch.argsort(rank.index_select(0, S))
    perm = by_rank.index_select(0, torch.sort(key.index_select(0, by_rank), stable=True).indices)
    _, counts = torch.unique_consecutive(key.index_select(0, perm), return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    j = torch.empty_like(perm)
    j.index_copy_(0, perm, torch.arange(perm.numel()) - starts)
    return j


def speculative_greedy(g: Graph, order: Tensor) -> Tensor:
    """Greedy coloring in ``order``, a chunk at a time; clashing vertices go first next time."""
    st = State(g)
    n = g.n
    chunk = full = max(_MIN_CHUNK, -(-n // _CHUNKS))
    pending = order[:0]
    rank = torch.empty(n, dtype=torch.long)
    p = 0
    while p < n or pending.numel():
        take = max(chunk - pending.numel(), 0)
        S = torch.cat([pending, order[p : p + take]])
        p += take
        rank.index_copy_(0, S, torch.arange(S.numel()))  # earlier in the chunk wins
        lost = commit_unclashed(
            st, [(Sb, tab, st.propose(tab, _twin_rank(g, Sb, rank))) for Sb, tab in g.split(S)], rank)
        pending = lost[torch.argsort(rank.index_select(0, lost))]
        # adapt to the clash rate: chains of neighbors in the order (natural, BFS) or
        # high-degree vertices clash often and need smaller chunks, others can grow back
        if pending.numel() > S.numel() // 2:
            chunk = max(chunk // 2, 8)
        elif pending.numel() < S.numel() // 8:
            chunk = min(chunk * 2, full)
    return st.colors


def iterated_greedy(g: Graph, colors: Tensor, class_order: Sequence[int]) -> Tensor:
    """Recolor the classes of ``colors`` one at a time, in ``class_order``."""
    k = num_colors(colors)
    perm = sort_perm(colors)
    perm = torch.arange(g.n) if perm is None else perm
    ptr = [0] + torch.cumsum(torch.bincount(colors, minlength=k), 0).tolist()
    st = State(g)
    for c in class_order:
        st.color_independent(perm[ptr[c] : ptr[c + 1]])
    return st.colors


def class_order(colors: Tensor, k: int, gen: torch.Generator, step: int) -> List[int]:
    """Culberson's class orders, alternated: smallest class first, then random."""
    if step % 2 == 0:
        return torch.argsort(torch.bincount(colors, minlength=k), stable=True).tolist()
    return torch.randperm(k, generator=gen).tolist()
