"""Class elimination: a min-conflicts local search that tries to empty the smallest class.

Repeated while it succeeds; this is what takes stencil patterns from greedy's
11-13 colors to 9-10.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .._bitops import or_dim1
from .graph import Graph, ragged
from .state import BITS, Proposal, State, clashes, commit_unclashed, mex, num_colors

__all__ = ["eliminate", "reduce_classes"]


def _bit_counts(words: List[Tensor], k: int) -> Tensor:
    """From gathered row words (one (v, d) per word): how many rows hold each color < k, (v, k)."""
    c = torch.arange(k)
    out = torch.zeros((words[0].shape[0], k), dtype=torch.long)
    for i, w in enumerate(words):
        sel = c[c // BITS == i]
        if sel.numel():
            out[:, sel] = ((w.unsqueeze(2) >> (sel % BITS)) & 1).sum(1)
    return out


def eliminate(
    g: Graph, colors: Tensor, X: int, k: int, gen: torch.Generator, window: int, budget: List[int]
) -> Optional[Tensor]:
    """Try to empty class ``X`` by local search, keeping the other ``k - 1`` colors.

    Min-conflicts with ejection: an uncolored vertex takes a free color if it
    has one, else the color blocked by the fewest of its rows, evicting the
    blockers, which then look for a color themselves. An evicted vertex may not
    retake its old color for a few rounds (tabu), which prevents cycling. All
    uncolored vertices move at once; clashing moves wait by random rank.
    Returns the coloring (class ``X`` empty), or None when progress stalls or
    the shared round ``budget[0]`` runs out.
    """
    n = g.n
    st = State.of(g, torch.where(colors == X, -1, colors))
    U = (colors == X).nonzero().squeeze(1)
    row_ptr, row_cols = g.row_csr()
    tabu_color = torch.full((n,), -1, dtype=torch.long)
    tabu_until = torch.zeros(n, dtype=torch.long)
    rank = torch.empty(n, dtype=torch.long)
    best = checkpoint = U.numel()
    best_it = it = 0
    while U.numel():
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        it += 1
        rank.index_copy_(0, U, torch.randperm(U.numel(), generator=gen))
        free: List[Proposal] = []
        stuck: List[Proposal] = []
        for Ub, tab in g.split(U):
            words = st.gather(tab)
            forb = [or_dim1(w) for w in words]
            tb = tabu_until.index_select(0, Ub) > it
            tc = tabu_color.index_select(0, Ub).clamp(min=0)
            for i in range(len(forb)):  # never X; not the tabu color for a while
                tabu_bit = torch.where(tb & (tc // BITS == i), 1 << (tc % BITS), 0)
                forb[i] = forb[i] | tabu_bit | ((1 << (X % BITS)) if X // BITS == i else 0)
            c = mex(forb)
            ok = c < k
            free.append((Ub[ok], tab[ok], c[ok]))
            if bool(ok.all()):
                continue
            no = ~ok
            cost = _bit_counts([w[no] for w in words], k)  # rows blocking each color
            cost[:, X] = 1 << 40
            tbs = tb[no]
            cost[tbs, tc[no][tbs]] += 1 << 20
            noise = torch.rand(cost.shape, generator=gen, dtype=torch.float64)
            stuck.append((Ub[no], tab[no], (cost.double() + noise).argmin(1)))
        waiting = [commit_unclashed(st, free, rank)]
        lost = clashes(g, stuck, rank)
        movers: List[Proposal] = []
        for Sb, tab, c in stuck:
            lb = lost.index_select(0, Sb)
            waiting.append(Sb[lb])
            movers.append((Sb[~lb], tab[~lb], c[~lb]))
        if any(s.numel() for s, _, _ in movers):
            # blockers: the vertices holding a mover's new color in the mover's rows;
            # only rows whose word has that color need scanning
            rows = torch.cat([t.reshape(-1) for _, t, _ in movers]).long()
            want = torch.cat([c.repeat_interleave(t.shape[1]) for _, t, c in movers])
            has = torch.zeros_like(rows, dtype=torch.bool)
            for i, w in enumerate(st.words):
                wi = want // BITS == i
                has |= wi & (((w.index_select(0, rows) >> (want % BITS)) & 1) == 1)
            rows, want = rows[has], want[has]
            nb = ragged(row_cols, row_ptr, g.row_len, rows)
            want = want.repeat_interleave(g.row_len.index_select(0, rows))
            blockers = torch.unique(nb[st.colors.index_select(0, nb) == want])
            tabu_color.index_copy_(0, blockers, st.colors.index_select(0, blockers))
            # random tenure: a fixed one lets longer cycles repeat forever
            tenure = torch.randint(5, 16, (blockers.numel(),), generator=gen)
            tabu_until.index_copy_(0, blockers, it + tenure)
            st.uncolor(blockers)
            for Sb, tab, c in movers:
                st.commit(Sb, tab, c)
            waiting.append(blockers)
        U = torch.cat(waiting)
        # demand steady progress so that hopeless attempts end early: halve the
        # uncolored count every window, and find a new best within two windows
        if U.numel() < best:
            best, best_it = U.numel(), it
        if it - best_it > 2 * window:
            return None
        if it % window == 0:
            if U.numel() > 64 and U.numel() > 0.5 * checkpoint:
                return None
            checkpoint = U.numel()
    return st.colors


def reduce_classes(g: Graph, colors: Tensor, lower: int, gen: torch.Generator, window: int, rounds: int) -> Tensor:
    """Drop the smallest class while the local search can rehome its vertices (``rounds`` in all)."""
    k = num_colors(colors)
    budget = [rounds]
    while k > lower and budget[0] >= 2 * window:   # an elimination takes several windows:
        X = int(torch.argmin(torch.bincount(colors, minlength=k)))  # too little budget only costs time
        new = eliminate(g, colors, X, k, gen, window, budget)
        if new is None:
            break
        colors = new - (new > X).long()
        k -= 1
    return colors
