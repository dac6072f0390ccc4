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

__all__ = ["BITS", "BIG", "State", "Proposal", "mex", "kth_free", "popcount", "positions", "clashes", "commit_unclashed",
           "commit_except",
           "num_colors"]

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


def popcount(x: Tensor) -> Tensor:
    """Set bits of each int64 word (SWAR: a dozen elementwise ops, no gathers; the masks make the
    arithmetic shifts act as logical ones)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56  # the top byte sums the bytes; it wraps, never carries


def kth_free(forb: List[Tensor], k: Tensor) -> Tensor:
    """The ``k``-th (from 0) color absent from the words ``forb``, per vertex (``k`` is (v,))."""
    F = torch.stack(forb, 1)  # (v, words)
    seen = torch.cumsum(BITS - popcount(F), 1)
    word = (seen <= k.unsqueeze(1)).sum(1)  # the word holding it; len(forb): past the last word
    before = torch.where(word > 0, seen.gather(1, (word - 1).clamp(min=0).unsqueeze(1)).squeeze(1), 0)
    r = k - before  # its rank among the free bits of that word
    inside = word < F.shape[1]
    free = ~F.gather(1, word.clamp(max=F.shape[1] - 1).unsqueeze(1)).squeeze(1) & _FULL
    # binary search for the lowest bit p with more than r free bits in bits 0..p: 6 steps
    lo, hi = torch.zeros_like(r), torch.full_like(r, BITS - 1)
    two = torch.full_like(r, 2)
    for _ in range(BITS.bit_length()):
        mid = (lo + hi) >> 1
        up = popcount(free & (torch.bitwise_left_shift(two, mid) - 1)) > r
        hi, lo = torch.where(up, mid, hi), torch.where(up, lo, mid + 1)
    return torch.where(inside, word * BITS + lo, F.shape[1] * BITS + r)  # past the words all is free


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

    def forbidden(self, table: Tensor) -> List[Tensor]:
        """Colors taken in the rows ``table`` (k, d) of each vertex: one (k,) word per 62 colors."""
        return [or_dim1(w) for w in self.gather(table)]

    def propose(self, table: Tensor) -> Tensor:
        """Lowest free color for each vertex whose rows are ``table`` (k, d)."""
        return mex(self.forbidden(table))

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
_SPAN_PER_KEY = 8  # (row, color) slots per incidence up to which groups are counted, not sorted


def _groups(g: Graph, props: List[Proposal], rank: Tensor) -> Optional[Tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Incidences of the proposals grouped by (row, proposed color), by rank inside a group:
    (owner, rank, position in the group, rank of the group's first), or None if there are none.
    Groups of a single incidence may be left out (position 0, never a clash).

    Exact: the groups come from a stable sort, never a hash, so that a vertex with many
    rows (a camera column in bundle adjustment) is not deferred again and again by
    false clashes.
    """
    props = [(Sb, tab, c) for Sb, tab, c in props if Sb.numel()]
    if not props:
        return None
    K = max(int(c.max()) for _, _, c in props) + 1
    keys, owners = [], []
    for Sb, tab, c in props:
        d = tab.shape[1]
        flat = tab.reshape(-1).long()
        real = flat != g.m  # padding never clashes
        keys.append((flat * K + c.repeat_interleave(d))[real])
        owners.append(Sb.repeat_interleave(d)[real])
    key, own = torch.cat(keys), torch.cat(owners)
    span_k = (g.m + 1) * K
    if 0 < key.numel() and span_k <= _SPAN_PER_KEY * key.numel():
        # a group of one neither clashes nor moves: count the groups (O(keys) memory, as the
        # bound says) and sort only the incidences in larger ones, often none of them
        multi_g = torch.bincount(key, minlength=span_k) > 1
        multi = multi_g.index_select(0, key)
        key, own = key[multi], own[multi]
        if key.numel():  # renumber the larger groups 0..G-1 (order kept): the sort key then fits int32
            gid = torch.cumsum(multi_g, 0) - 1
            span_k = int(gid[-1]) + 1
            key = gid.index_select(0, key)
    if key.numel() == 0:
        return None
    rk = rank.index_select(0, own)
    top = int(rk.max()) + 1
    span = span_k * top
    if span < 2**62:  # one sort by (row, color, rank); int32 sorts about twice as fast
        combined = key * top + rk
        perm = torch.sort(combined.int() if span < 2**31 else combined).indices
    else:
        by_rank = torch.argsort(rk)
        perm = by_rank.index_select(0, torch.sort(key.index_select(0, by_rank), stable=True).indices)
    _, counts = torch.unique_consecutive(key.index_select(0, perm), return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(perm.numel()) - torch.repeat_interleave(first, counts)
    rk = rk.index_select(0, perm)
    return own.index_select(0, perm), rk, pos, torch.repeat_interleave(rk.index_select(0, first), counts)


def positions(g: Graph, props: List[Proposal], rank: Tensor) -> Tensor:
    """For each proposing vertex, its largest position by ``rank`` among the proposers of its
    color in one of its rows (n,): the j-th of a group can take its j-th free color instead."""
    out = torch.zeros(g.n, dtype=torch.long)
    grp = _groups(g, props, rank)
    if grp is None:
        return out
    own, _, pos, _ = grp
    return out.scatter_reduce_(0, own, pos, "amax")


def clashes(g: Graph, props: List[Proposal], rank: Tensor) -> Tensor:
    """Vertices sharing a row and a proposed color with a lower-ranked one (bool, n)."""
    lost = torch.zeros(g.n, dtype=torch.bool)
    grp = _groups(g, props, rank)
    if grp is not None:
        own, rk, _, first = grp
        lost.index_fill_(0, own[rk != first], True)  # a vertex listed twice in a row is no clash
    return lost


def commit_unclashed(st: State, props: List[Proposal], rank: Tensor) -> Tensor:
    """Commit every proposal that does not clash; return the clashing vertices."""
    return commit_except(st, props, clashes(st.g, props, rank))


def commit_except(st: State, props: List[Proposal], lost: Tensor) -> Tensor:
    """Commit the proposals of the vertices not in ``lost`` (bool, n); return those in it."""
    out = [torch.empty(0, dtype=torch.long)]
    for Sb, tab, c in props:
        lb = lost.index_select(0, Sb)
        keep = ~lb
        st.commit(Sb[keep], tab[keep], c[keep])
        out.append(Sb[lb])
    return torch.cat(out)
