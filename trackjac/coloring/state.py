"""A partial coloring with one bit word per row, and clash detection between proposals.

A row's *word* is the OR of ``1 << color`` over its colored vertices (62
colors per int64 word); a vertex's forbidden colors are the OR of its rows'
words, and its lowest free color is the lowest clear bit.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .._bitops import or_dim1
from .graph import Graph

__all__ = ["BITS", "BIG", "State", "Proposal", "mex", "clashes", "commit_unclashed", "num_colors"]

BITS = 62  # colors per int64 word: the sign bit stays clear and log2 stays exact
_FULL = (1 << BITS) - 1
BIG = torch.iinfo(torch.long).max


def num_colors(colors: Tensor) -> int:
    return int(colors.max()) + 1 if colors.numel() else 0


def _lowest_clear_bit(f: Tensor) -> Tensor:
    # the lowest clear bit is a power of two, exact in float64; frexp gives its exponent + 1
    # (frexp rather than log2: log2 is several times slower on CPU)
    return torch.frexp((~f & (f + 1)).double())[1].long() - 1


def mex(forb: List[Tensor]) -> Tensor:
    """Lowest color absent from the words ``forb`` (one (k,) tensor per 62 colors)."""
    if len(forb) == 1:
        return _lowest_clear_bit(forb[0])
    F = torch.stack(forb + [torch.zeros_like(forb[0])], 1)  # a free word always exists
    word = (F != _FULL).to(torch.int8).argmax(1)
    return word * BITS + _lowest_clear_bit(F.gather(1, word.unsqueeze(1)).squeeze(1))


class State:
    """A partial coloring (-1 = uncolored) and one word per row per 62 colors."""

    def __init__(self, g: Graph):
        self.g = g
        self.colors = torch.full((g.n,), -1, dtype=torch.long)
        self.words = [torch.zeros(g.m + 1, dtype=torch.long)]

    @classmethod
    def of(cls, g: Graph, colors: Tensor) -> "State":
        """The state of a valid (partial) coloring."""
        st = cls(g)
        done = (colors >= 0).nonzero().squeeze(1)
        for Sb, tab in g.split(done):
            st.commit(Sb, tab, colors.index_select(0, Sb))
        return st

    def gather(self, table: Tensor) -> List[Tensor]:
        """Words of the rows in ``table`` (k, d): one (k, d) tensor per word."""
        flat = table.reshape(-1)
        return [w.index_select(0, flat).view(table.shape) for w in self.words]

    def propose(self, table: Tensor, skip: Optional[Tensor] = None) -> Tensor:
        """Lowest free color for each vertex whose rows are ``table`` (k, d); with ``skip``
        (k,), the ``skip``-th lowest instead (single-word colorings only)."""
        forb = [or_dim1(w) for w in self.gather(table)]
        if skip is not None and len(forb) == 1:
            f = forb[0]
            for t in range(int(skip.max()) if skip.numel() else 0):
                low = ~f & (f + 1)   # stop at color 62 (the next word): clashes sort out the rest
                f = torch.where((skip > t) & (low < (1 << BITS)), f | low, f)
            forb = [f]
        return mex(forb)

    def _add(self, table: Tensor, c: Tensor, sign: int) -> None:
        # Within a valid coloring a row holds each color at most once, so adding
        # or subtracting 1 << color sets or clears exactly that bit.
        need = int(c.max()) // BITS + 1
        while len(self.words) < need:
            self.words.append(torch.zeros(self.g.m + 1, dtype=torch.long))
        flat = table.reshape(-1)
        d = table.shape[1]
        word, bit = c // BITS, sign * (1 << (c % BITS))
        for i, w in enumerate(self.words):
            b = bit if len(self.words) == 1 else torch.where(word == i, bit, 0)
            w.index_add_(0, flat, b.repeat_interleave(d))
            w[self.g.m] = 0

    def commit(self, S: Tensor, table: Tensor, c: Tensor) -> None:
        """Color ``S`` with ``c``; vertices sharing a row must get distinct colors."""
        if S.numel():
            self._add(table, c, 1)
            self.colors.index_copy_(0, S, c)

    def uncolor(self, S: Tensor) -> None:
        for Sb, tab in self.g.split(S):
            self._add(tab, self.colors.index_select(0, Sb), -1)
            self.colors.index_fill_(0, Sb, -1)

    def color_independent(self, S: Tensor) -> None:
        for Sb, tab in self.g.split(S):
            self.commit(Sb, tab, self.propose(tab))


Proposal = Tuple[Tensor, Tensor, Tensor]  # vertices, their rows table, proposed colors


def clashes(g: Graph, props: List[Proposal], rank: Tensor) -> Tensor:
    """Vertices sharing a row and a proposed color with a lower-ranked one (bool, n).

    Hashing (row, color) can only add false clashes, which merely defer a
    vertex, so committing the others is always safe.
    """
    keys, ranks, owners = [], [], []
    for Sb, tab, c in props:
        d = tab.shape[1]
        flat = tab.reshape(-1)
        keys.append(flat.long() * 1_000_003 + c.repeat_interleave(d))
        r = rank.index_select(0, Sb).repeat_interleave(d)
        ranks.append(torch.where(flat == g.m, BIG, r))  # padding never clashes
        owners.append(Sb.repeat_interleave(d))
    lost = torch.zeros(g.n, dtype=torch.bool)
    if not keys:
        return lost
    key, rk, own = torch.cat(keys), torch.cat(ranks), torch.cat(owners)
    H = 4 * key.numel() + 1
    slot = torch.remainder(key, H)
    best = torch.full((H,), BIG, dtype=torch.long).scatter_reduce_(0, slot, rk, "amin")
    lost_inc = (best.index_select(0, slot) != rk) & (rk != BIG)
    lost.index_fill_(0, own[lost_inc], True)
    return lost


def commit_unclashed(st: State, props: List[Proposal], rank: Tensor) -> Tensor:
    """Commit every proposal that does not clash; return the clashing vertices."""
    lost = clashes(st.g, props, rank)
    out = [torch.empty(0, dtype=torch.long)]
    for Sb, tab, c in props:
        lb = lost.index_select(0, Sb)
        keep = ~lb
        st.commit(Sb[keep], tab[keep], c[keep])
        out.append(Sb[lb])
    return torch.cat(out)
