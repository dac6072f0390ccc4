"""Greedy coloring, vectorized: speculative greedy in a vertex order, then iterated greedy.

1. *Speculative greedy*: vertices are taken in a vertex order, a chunk at a
   time. A chunk picks colors at once; chunk members that share a row and
   picked one color are spread over their next free colors (the j-th takes the
   j-th), the clashes left are found exactly by sorting (row, color), and the
   later ones go first in the next chunk. The coloring stays valid at every step.
2. *Iterated greedy* (Culberson): recoloring class by class never increases the
   number of colors (a class is independent, so it is one vectorized step).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .graph import Graph, sort_perm
from .state import Proposal, State, clashes, commit_except, kth_free, mex, num_colors, positions

__all__ = ["speculative_greedy", "sequential_greedy", "iterated_greedy", "class_order", "SMALL"]

_CHUNKS = 24  # speculative steps per order: fewer is faster, more is closer to sequential
_MIN_CHUNK = 256
_GROW = 4  # a chunk that rarely clashes may grow to this many times its first size
SMALL = 20_000  # structural nonzeros up to which the sequential greedy is the faster one
# speculative steps after which the rest is colored one vertex at a time: on a band in natural
# order each step resolved a few vertices (28,455 steps, 22 s, for a 100,000-column tridiagonal)
_MAX_ROUNDS = 4 * _CHUNKS + 200


def _spread(g: Graph, props: List[Tuple[Tensor, Tensor, List[Tensor], Tensor]], rank: Tensor
            ) -> Tuple[List[Proposal], Tensor]:
    """Vertices that share a row and picked one color: the j-th of them (by rank) takes its j-th
    free color instead, so that a clique (the rows of one camera) is colored in one step
    instead of one vertex per step. Returns the proposals and the vertices that lose."""
    skip = positions(g, [(Sb, tab, c) for Sb, tab, _, c in props], rank)
    out: List[Proposal] = []
    touched = torch.zeros(g.m + 1, dtype=torch.bool)
    for Sb, tab, forb, c in props:
        s = skip.index_select(0, Sb)
        move = (s > 0).nonzero().squeeze(1)
        if move.numel():
            c = c.index_copy(0, move, kth_free([f.index_select(0, move) for f in forb], s.index_select(0, move)))
            touched[tab.index_select(0, move).reshape(-1).long()] = True
        out.append((Sb, tab, c))
    touched[g.m] = False
    # the first proposals clashed only where a vertex moved: check the rows of those alone
    only = [(Sb, torch.where(touched[tab.long()], tab, g.m), c) for Sb, tab, c in out]
    return out, clashes(g, only, rank)


def speculative_greedy(g: Graph, order: Tensor) -> Tensor:
    """Greedy coloring in ``order``, a chunk at a time; clashing vertices go first next time."""
    st = State(g)
    n = g.n
    chunk = full = max(_MIN_CHUNK, -(-n // _CHUNKS))
    pending = order[:0]
    rank = torch.empty(n, dtype=torch.long)
    p = 0
    rounds = 0
    while p < n or pending.numel():
        rounds += 1
        if rounds > _MAX_ROUNDS:   # stalled (a band in natural order: every neighbor clashes)
            return sequential_greedy(g, torch.cat([pending, order[p:]]), st.colors)
        take = max(chunk - pending.numel(), 0)
        S = torch.cat([pending, order[p : p + take]])
        p += take
        rank.index_copy_(0, S, torch.arange(S.numel()))  # earlier in the chunk wins
        props = []
        for Sb, tab in g.split(S):
            forb = st.forbidden(tab)
            props.append((Sb, tab, forb, mex(forb)))
        spread, lost_mask = _spread(g, props, rank)
        lost = commit_except(st, spread, lost_mask)
        pending = lost[torch.argsort(rank.index_select(0, lost))]
        # adapt to the clash rate: chains of neighbors in the order (natural, BFS) or
        # high-degree vertices clash often and need smaller chunks, others can grow back
        if pending.numel() > S.numel() // 2:
            chunk = max(chunk // 2, 8)
        elif pending.numel() < S.numel() // 8:
            chunk = min(chunk * 2, _GROW * full)
    return st.colors


def sequential_greedy(g: Graph, order: Tensor, start: Optional[Tensor] = None) -> Tensor:
    """Plain one-vertex-at-a-time greedy in ``order`` (Python loops: for small patterns, where it
    costs less than the vectorized steps' overhead, and where chains of neighbors in the order,
    such as a bidiagonal, get the 2 colors a speculative step cannot see). ``start``: a valid
    partial coloring (-1: uncolored) that the vertices of ``order`` complete."""
    ptr = g.ptr.tolist()
    inc = g.inc_rows.tolist()
    row_colors: List[set] = [set() for _ in range(g.m)]
    colors = [0] * g.n if start is None else start.tolist()
    if start is not None:
        for v, c in enumerate(colors):
            if c >= 0:
                for r in inc[ptr[v] : ptr[v + 1]]:
                    row_colors[r].add(c)
    for v in order.tolist():
        rows = inc[ptr[v] : ptr[v + 1]]
        used = set().union(*(row_colors[r] for r in rows)) if rows else set()
        c = 0
        while c in used:
            c += 1
        colors[v] = c
        for r in rows:
            row_colors[r].add(c)
    return torch.tensor(colors, dtype=torch.long)


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
