"""Star coloring as a distance-2 coloring with the rows of an independent set of hubs removed.

A coloring is a star coloring when it is proper and no path on four vertices
is 2-colored. If the hubs form an independent set and every non-hub's closed
neighborhood gets distinct colors, both hold: a 2-colored path ``w-x-y-z``
needs ``x`` (two neighbors of ``color(y)``) and ``y`` (two of ``color(x)``)
to be hubs, yet they are adjacent; and every edge has a non-hub end whose
neighborhood holds both ends. So the star coloring is the column coloring of
``H + I`` with the hubs' rows deleted, done by the vectorized distance-2
greedy (:func:`~trackjac.coloring.color_columns`). High-degree hubs remove the
widest rows (an arrowhead's dense row), so hubs are a maximal independent set
chosen by degree first.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .api import color_columns

__all__ = ["independent_hubs", "star_coloring"]


def independent_hubs(rows: Tensor, cols: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """A maximal independent set (bool, n) of the graph ``(rows, cols)`` (off-diagonal, both
    directions), highest degree first, random among equal degrees (Luby-style rounds)."""
    deg = torch.bincount(rows, minlength=n)
    key = deg * n + torch.randperm(n, generator=gen)  # distinct: ties broken at random
    state = torch.zeros(n, dtype=torch.int8)  # 0 undecided, 1 hub, 2 not a hub
    while True:
        und = state == 0
        if not bool(und.any()):
            return state == 1
        live = und.index_select(0, rows) & und.index_select(0, cols)
        r, c = rows[live], cols[live]
        best = torch.full((n,), -1, dtype=torch.long).scatter_reduce_(0, r, key.index_select(0, c), "amax")
        new = und & (key > best)  # a local maximum among undecided neighbors
        state[new] = 1
        hit = new.index_select(0, r)
        state[c[hit]] = 2


def star_coloring(rows: Tensor, cols: Tensor, n: int, seed: int) -> Tensor:
    """Colors (n,) of a star coloring of the symmetric pattern ``(rows, cols)``."""
    off = rows != cols
    r, c = rows[off], cols[off]
    gen = torch.Generator().manual_seed(seed)
    hub = independent_hubs(r, c, n, gen)
    keep = ~hub.index_select(0, r)
    # a non-hub's closed neighborhood includes itself; a hub with a diagonal entry needs a color too
    own = (~hub | (torch.bincount(rows[~off], minlength=n) > 0)).nonzero().squeeze(1)
    red_rows = torch.cat([r[keep], own])
    red_cols = torch.cat([c[keep], own])
    return color_columns((red_rows, red_cols, (n, n)), seed=seed).colors
