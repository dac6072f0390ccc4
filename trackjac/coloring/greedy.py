"""Distance-2 coloring of Jacobian sparsity patterns, vectorized with torch ops.

Columns ``j`` and ``k`` of a pattern conflict when some row holds both; a
*column coloring* gives conflicting columns different colors, so the columns of
one color are structurally orthogonal and one jvp per color recovers them all.
A *row coloring* is the column coloring of the transpose (one vjp per color).

The column-intersection graph is never built: every step works on the
bipartite row/column incidence, so memory stays O(nnz). A row's *word* is the
OR of ``1 << color`` over its colored columns (62 colors per int64 word); a
column's forbidden colors are the OR of its rows' words, and it takes the
lowest clear bit.

Greedy coloring is sequential; three vectorized stages replace the loop:

1. *Speculative greedy*: vertices are taken in a vertex order, a chunk at a
   time. A chunk picks colors at once; chunk members that share a row and
   picked one color are caught by hashing (row, color), and the later ones go
   first in the next chunk. The coloring stays valid at every step.
2. *Iterated greedy* (Culberson): recoloring class by class never increases the
   number of colors (a class is independent, so it is one vectorized step).
3. *Class elimination*: a min-conflicts local search with ejection and tabu
   tries to empty the smallest class; repeated while it succeeds. This is what
   takes stencil patterns from greedy's 11-13 colors to 9-10.

Vertices are bucketed by degree into dense (vertices x degree) tables of row
ids, padded with a dummy row whose word stays zero, so a step is a few gathers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._bitops import or_dim1
from .._sparse import structural_coo
from .._threads import intra_op_threads

__all__ = [
    "Coloring",
    "ORDERS",
    "DEFAULT_ORDERS",
    "color_columns",
    "color_rows",
    "is_structurally_orthogonal",
]

ORDERS = ("largest_first", "smallest_last", "incidence_degree", "random", "natural")
DEFAULT_ORDERS = ("largest_first", "smallest_last", "random")
_BITS = 62  # colors per int64 word: the sign bit stays clear and log2 stays exact
_FULL = (1 << _BITS) - 1
_CHUNKS = 24  # speculative steps per order: fewer is faster, more is closer to sequential
_MIN_CHUNK = 256
_BIG_N = 200_000  # above this many vertices, only the first order seeds (time)
_BIG = torch.iinfo(torch.long).max


@dataclass(frozen=True)
class Coloring:
    """A coloring: ``colors[v]`` in ``[0, num_colors)`` for each column (or row)."""

    colors: Tensor
    num_colors: int
    axis: str  # "columns" or "rows"
    order: str  # the vertex order that seeded the kept coloring
    lower_bound: int  # a clique size: max nonzeros in a row (columns) or column (rows)


PatternLike = Union[Tensor, Tuple[Tensor, Tensor, Tuple[int, int]]]


def _coo(pattern: PatternLike) -> Tuple[Tensor, Tensor, int, int]:
    """(rows, cols, m, n) on the CPU from a sparse/dense tensor or (rows, cols, (m, n))."""
    if isinstance(pattern, tuple):
        rows, cols, (m, n) = pattern
        return rows.detach().cpu().long(), cols.detach().cpu().long(), int(m), int(n)
    if not isinstance(pattern, Tensor) or pattern.dim() != 2:
        raise TypeError("pattern must be a 2-D tensor (sparse or dense) or (rows, cols, (m, n))")
    return structural_coo(pattern)


def _sort_perm(x: Tensor) -> Optional[Tensor]:
    """Stable sorting permutation of ``x``, or None when it is already sorted."""
    if x.numel() < 2 or bool((x[1:] >= x[:-1]).all()):
        return None
    if x.numel() and int(x.max()) < 2**31:  # int32 sorts about twice as fast
        x = x.int()
    return torch.sort(x, stable=True).indices


def _ragged(values: Tensor, ptr: Tensor, lens_all: Tensor, S: Tensor) -> Tensor:
    """Concatenated segments ``values[ptr[s]:ptr[s] + lens_all[s]]`` for s in ``S``."""
    lens = lens_all.index_select(0, S)
    seg = torch.repeat_interleave(torch.arange(S.numel()), lens)
    pos = torch.arange(seg.numel()) - (torch.cumsum(lens, 0) - lens).index_select(0, seg)
    return values.index_select(0, ptr.index_select(0, S).index_select(0, seg) + pos)


# ----------------------------------------------------------------------------
# Incidence tables
# ----------------------------------------------------------------------------


class _Graph:
    """Rows of every vertex, in dense per-degree-bucket tables padded with row ``m``.

    Buckets hold degrees in (2^(b-1), 2^b], which bounds padding by 2x.
    """

    def __init__(self, rows: Tensor, cols: Tensor, m: int, n: int):
        self.m, self.n = m, n
        # int32 row ids halve the memory traffic of the gathers that dominate
        self.idx = torch.int32 if m < 2**31 - 1 else torch.long
        self._rows, self._cols = rows, cols  # kept for the lazy row view
        perm = _sort_perm(cols)
        self.inc_rows = rows if perm is None else rows.index_select(0, perm)
        self.deg = torch.bincount(cols, minlength=n)
        self.row_len = torch.bincount(rows, minlength=m)
        self.ptr = torch.zeros(n + 1, dtype=torch.long)
        torch.cumsum(self.deg, 0, out=self.ptr[1:])
        bucket = torch.ceil(torch.log2(self.deg.clamp(min=1).double())).long()
        self.buckets: List[Tuple[int, Tensor, Tensor]] = []  # (bucket id, vertices, table)
        ids = torch.unique(bucket).tolist()
        self.single = len(ids) == 1
        if self.single:
            self.bucket_of = self.local = None
            self.buckets.append((ids[0], torch.arange(n), self._table(torch.arange(n))))
            return
        self.bucket_of = bucket
        self.local = torch.empty(n, dtype=torch.long)  # index of a vertex inside its bucket
        for b in ids:
            verts = (bucket == b).nonzero().squeeze(1)
            self.local[verts] = torch.arange(verts.numel())
            self.buckets.append((b, verts, self._table(verts)))

    def _table(self, verts: Tensor) -> Tensor:
        deg = self.deg.index_select(0, verts)
        d = int(deg.max()) if verts.numel() else 0
        if verts.numel() == self.n and bool((deg == d).all()) and d:
            return self.inc_rows.to(self.idx).view(self.n, d)  # uniform degree: CSC is the table
        table = torch.full((verts.numel(), max(d, 1)), self.m, dtype=self.idx)
        if d:
            seg = torch.repeat_interleave(torch.arange(verts.numel()), deg)
            pos = torch.arange(seg.numel()) - (torch.cumsum(deg, 0) - deg).index_select(0, seg)
            src = self.ptr.index_select(0, verts).index_select(0, seg) + pos
            vals = self.inc_rows.index_select(0, src).to(self.idx)
            table.view(-1).index_copy_(0, seg * table.shape[1] + pos, vals)
        return table

    def split(self, S: Tensor) -> List[Tuple[Tensor, Tensor]]:
        """Vertices ``S`` per bucket, with their table rows: [(vertices, rows table)]."""
        if self.single:
            return [(S, self.buckets[0][2].index_select(0, S))]
        out = []
        b_of = self.bucket_of.index_select(0, S)
        for b, _, table in self.buckets:
            Sb = S[b_of == b]
            if Sb.numel():
                out.append((Sb, table.index_select(0, self.local.index_select(0, Sb))))
        return out

    def twin_keys(self) -> Optional[Tensor]:
        """A hash of each vertex's row set, or None if all differ: equal for twins (identical
        rows, such as the 9 parameters of one camera), which all need distinct colors.
        Collisions only cost time."""
        if not hasattr(self, "_twin"):
            gen = torch.Generator().manual_seed(12345)
            r = torch.randint(0, 2**40, (self.m + 1,), generator=gen)
            key = torch.zeros(self.n, dtype=torch.long).index_add_(0, self._cols, r[self._rows])
            self._twin = key if torch.unique(key).numel() < self.n else None
        return self._twin

    def row_csr(self) -> Tuple[Tensor, Tensor]:
        """(row_ptr, vertices of each row): the other direction, built on first use."""
        if not hasattr(self, "_csr"):
            perm = _sort_perm(self._rows)
            row_cols = self._cols if perm is None else self._cols.index_select(0, perm)
            row_ptr = torch.zeros(self.m + 1, dtype=torch.long)
            torch.cumsum(self.row_len, 0, out=row_ptr[1:])
            self._csr = (row_ptr, row_cols)
        return self._csr


# ----------------------------------------------------------------------------
# Coloring state: colors and row words
# ----------------------------------------------------------------------------


def _lowest_clear_bit(f: Tensor) -> Tensor:
    # the lowest clear bit is a power of two, exact in float64; frexp gives its exponent + 1
    # (frexp rather than log2: log2 is several times slower on CPU)
    return torch.frexp((~f & (f + 1)).double())[1].long() - 1


def _mex(forb: List[Tensor]) -> Tensor:
    """Lowest color absent from the words ``forb`` (one (k,) tensor per 62 colors)."""
    if len(forb) == 1:
        return _lowest_clear_bit(forb[0])
    F = torch.stack(forb + [torch.zeros_like(forb[0])], 1)  # a free word always exists
    word = (F != _FULL).to(torch.int8).argmax(1)
    return word * _BITS + _lowest_clear_bit(F.gather(1, word.unsqueeze(1)).squeeze(1))


class _State:
    """A partial coloring (-1 = uncolored) and one word per row per 62 colors."""

    def __init__(self, g: _Graph):
        self.g = g
        self.colors = torch.full((g.n,), -1, dtype=torch.long)
        self.words = [torch.zeros(g.m + 1, dtype=torch.long)]

    @classmethod
    def of(cls, g: _Graph, colors: Tensor) -> "_State":
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
                f = torch.where((skip > t) & (low < (1 << _BITS)), f | low, f)
            forb = [f]
        return _mex(forb)

    def _add(self, table: Tensor, c: Tensor, sign: int) -> None:
        # Within a valid coloring a row holds each color at most once, so adding
        # or subtracting 1 << color sets or clears exactly that bit.
        need = int(c.max()) // _BITS + 1
        while len(self.words) < need:
            self.words.append(torch.zeros(self.g.m + 1, dtype=torch.long))
        flat = table.reshape(-1)
        d = table.shape[1]
        word, bit = c // _BITS, sign * (1 << (c % _BITS))
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


def _clashes(g: _Graph, props: List[Proposal], rank: Tensor) -> Tensor:
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
        ranks.append(torch.where(flat == g.m, _BIG, r))  # padding never clashes
        owners.append(Sb.repeat_interleave(d))
    lost = torch.zeros(g.n, dtype=torch.bool)
    if not keys:
        return lost
    key, rk, own = torch.cat(keys), torch.cat(ranks), torch.cat(owners)
    H = 4 * key.numel() + 1
    slot = torch.remainder(key, H)
    best = torch.full((H,), _BIG, dtype=torch.long).scatter_reduce_(0, slot, rk, "amin")
    lost_inc = (best.index_select(0, slot) != rk) & (rk != _BIG)
    lost.index_fill_(0, own[lost_inc], True)
    return lost


def _commit_unclashed(st: _State, props: List[Proposal], rank: Tensor) -> Tensor:
    """Commit every proposal that does not clash; return the clashing vertices."""
    lost = _clashes(st.g, props, rank)
    out = [torch.empty(0, dtype=torch.long)]
    for Sb, tab, c in props:
        lb = lost.index_select(0, Sb)
        keep = ~lb
        st.commit(Sb[keep], tab[keep], c[keep])
        out.append(Sb[lb])
    return torch.cat(out)


# ----------------------------------------------------------------------------
# Greedy stages
# ----------------------------------------------------------------------------


def _twin_rank(g: _Graph, S: Tensor, rank: Tensor) -> Optional[Tensor]:
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


def _speculative_greedy(g: _Graph, order: Tensor) -> Tensor:
    """Greedy coloring in ``order``, a chunk at a time; clashing vertices go first next time."""
    st = _State(g)
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
        lost = _commit_unclashed(
            st, [(Sb, tab, st.propose(tab, _twin_rank(g, Sb, rank))) for Sb, tab in g.split(S)], rank)
        pending = lost[torch.argsort(rank.index_select(0, lost))]
        # adapt to the clash rate: chains of neighbors in the order (natural, BFS) or
        # high-degree vertices clash often and need smaller chunks, others can grow back
        if pending.numel() > S.numel() // 2:
            chunk = max(chunk // 2, 8)
        elif pending.numel() < S.numel() // 8:
            chunk = min(chunk * 2, full)
    return st.colors


def _iterated_greedy(g: _Graph, colors: Tensor, class_order: Sequence[int]) -> Tensor:
    """Recolor the classes of ``colors`` one at a time, in ``class_order``."""
    k = _num(colors)
    perm = _sort_perm(colors)
    perm = torch.arange(g.n) if perm is None else perm
    ptr = [0] + torch.cumsum(torch.bincount(colors, minlength=k), 0).tolist()
    st = _State(g)
    for c in class_order:
        st.color_independent(perm[ptr[c] : ptr[c + 1]])
    return st.colors


def _class_order(colors: Tensor, k: int, gen: torch.Generator, step: int) -> List[int]:
    """Culberson's class orders, alternated: smallest class first, then random."""
    if step % 2 == 0:
        return torch.argsort(torch.bincount(colors, minlength=k), stable=True).tolist()
    return torch.randperm(k, generator=gen).tolist()


def _bit_counts(words: List[Tensor], k: int) -> Tensor:
    """From gathered row words (one (v, d) per word): how many rows hold each color < k, (v, k)."""
    c = torch.arange(k)
    out = torch.zeros((words[0].shape[0], k), dtype=torch.long)
    for i, w in enumerate(words):
        sel = c[c // _BITS == i]
        if sel.numel():
            out[:, sel] = ((w.unsqueeze(2) >> (sel % _BITS)) & 1).sum(1)
    return out


def _eliminate(
    g: _Graph, colors: Tensor, X: int, k: int, gen: torch.Generator, window: int, budget: List[int]
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
    st = _State.of(g, torch.where(colors == X, -1, colors))
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
                tabu_bit = torch.where(tb & (tc // _BITS == i), 1 << (tc % _BITS), 0)
                forb[i] = forb[i] | tabu_bit | ((1 << (X % _BITS)) if X // _BITS == i else 0)
            c = _mex(forb)
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
        waiting = [_commit_unclashed(st, free, rank)]
        lost = _clashes(g, stuck, rank)
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
                wi = want // _BITS == i
                has |= wi & (((w.index_select(0, rows) >> (want % _BITS)) & 1) == 1)
            rows, want = rows[has], want[has]
            nb = _ragged(row_cols, row_ptr, g.row_len, rows)
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


def _reduce(g: _Graph, colors: Tensor, lower: int, gen: torch.Generator, window: int, rounds: int) -> Tensor:
    """Drop the smallest class while the local search can rehome its vertices (``rounds`` in all)."""
    k = _num(colors)
    budget = [rounds]
    while k > lower and budget[0] >= 2 * window:   # an elimination takes several windows:
        X = int(torch.argmin(torch.bincount(colors, minlength=k)))  # too little budget only costs time
        new = _eliminate(g, colors, X, k, gen, window, budget)
        if new is None:
            break
        colors = new - (new > X).long()
        k -= 1
    return colors


# ----------------------------------------------------------------------------
# Vertex orders
# ----------------------------------------------------------------------------


def _distance2_degree(g: _Graph) -> Tensor:
    """Upper bound on each vertex's neighbor count: sum over its rows of (row length - 1)."""
    rl = torch.cat([g.row_len, g.row_len.new_zeros(1)])  # the padding row counts 0
    out = torch.empty(g.n, dtype=torch.long)
    for _, verts, tab in g.buckets:
        out[verts] = rl.index_select(0, tab.reshape(-1)).view(tab.shape).sum(1)
    return out - g.deg


def _smallest_last_level(g: _Graph) -> Tensor:
    """Batched smallest-last: peel every vertex of minimum degree at once (later peels first)."""
    n = g.n
    level = torch.full((n,), 64, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)
    row_len = g.row_len.clone()
    seg = torch.repeat_interleave(torch.arange(n), g.deg)
    for step in range(64):  # the tail barely matters for greedy quality
        deg = torch.zeros(n, dtype=torch.long).index_add_(0, seg, row_len.index_select(0, g.inc_rows) - 1)
        deg = torch.where(alive, deg, _BIG)
        peel = alive & (deg <= deg.min())
        level[peel] = step
        alive &= ~peel
        row_len -= torch.zeros_like(row_len).index_add_(0, g.inc_rows, peel.index_select(0, seg).long())
        if not bool(alive.any()):
            break
    return level


def _bfs_level(g: _Graph, gen: torch.Generator) -> Tensor:
    """Incidence-degree-like order: breadth-first layers from random seeds (earlier first).

    Sequential incidence-degree coloring grows one region, preferring vertices
    with many colored neighbors; BFS layers grow the same kind of front.
    """
    level = torch.full((g.n,), -1, dtype=torch.long)
    row_ptr, row_cols = g.row_csr()
    depth = 0
    while True:
        rest = (level < 0).nonzero().squeeze(1)
        if rest.numel() == 0:
            break
        front = rest[torch.randint(rest.numel(), (1,), generator=gen)]
        while front.numel():
            level[front] = depth
            depth += 1
            rows = torch.unique(_ragged(g.inc_rows, g.ptr, g.deg, front))
            cols = torch.unique(_ragged(row_cols, row_ptr, g.row_len, rows))
            front = cols[level.index_select(0, cols) < 0]
    return level


def _order(g: _Graph, name: str, gen: torch.Generator) -> Tensor:
    """Vertices in the named order; ties are broken at random."""
    n = g.n
    if name == "natural":
        return torch.arange(n)
    tie = torch.randperm(n, generator=gen)
    if name == "random":
        return tie
    if name == "largest_first":
        key = -_distance2_degree(g)
    elif name == "smallest_last":
        key = -_smallest_last_level(g)
    elif name == "incidence_degree":
        key = _bfs_level(g, gen)
    else:
        raise ValueError(f"unknown order {name!r}; expected one of {ORDERS}")
    return torch.argsort((key - key.min()) * n + tie)


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def _num(colors: Tensor) -> int:
    return int(colors.max()) + 1 if colors.numel() else 0


def _color(
    rows: Tensor,
    cols: Tensor,
    m: int,
    n: int,
    orders: Optional[Sequence[str]],
    polish: int,
    local_search: Union[bool, int],
    seed: int,
    axis: str,
) -> Coloring:
    if orders is None:
        orders = DEFAULT_ORDERS[:1] if n > _BIG_N else DEFAULT_ORDERS
    if isinstance(orders, str):
        orders = (orders,)
    for o in orders:
        if o not in ORDERS:
            raise ValueError(f"unknown order {o!r}; expected one of {ORDERS}")
    if rows.numel() == 0:  # no structural nonzero: nothing to evaluate
        return Coloring(torch.zeros(n, dtype=torch.long), 0, axis, "empty", 0)
    g = _Graph(rows, cols, m, n)
    lower = int(g.row_len.max())
    gen = torch.Generator().manual_seed(seed)
    best: Optional[Tuple[int, Tensor, str]] = None
    for name in orders:
        colors = _speculative_greedy(g, _order(g, name, gen))
        for step in range(polish):  # iterated greedy never increases the count
            colors = _iterated_greedy(g, colors, _class_order(colors, _num(colors), gen, step))
        k = _num(colors)
        if best is None or k < best[0]:
            best = (k, colors, name)
        if k <= lower:
            break
    assert best is not None
    k, colors, name = best
    if local_search and k > lower:
        rounds = local_search if not isinstance(local_search, bool) else (120 if n <= _BIG_N else 80)
        colors = _reduce(g, colors, lower, gen, window=15, rounds=int(rounds))
    return Coloring(colors, _num(colors), axis, name, lower)


def color_columns(
    pattern: PatternLike,
    *,
    orders: Optional[Sequence[str]] = None,
    polish: int = 3,
    local_search: Union[bool, int] = True,
    seed: int = 0,
) -> Coloring:
    """Distance-2 coloring of the columns of ``pattern`` (m, n): columns of one color share no row.

    Each vertex order in ``orders`` (default: all of ``DEFAULT_ORDERS``, or
    only the first above 200k vertices) seeds a greedy coloring, polished by
    ``polish`` iterated-greedy passes; the fewest colors win, then a local
    search drops classes while it can. Deterministic for a given ``seed``.
    """
    rows, cols, m, n = _coo(pattern)
    with intra_op_threads(1):
        return _color(rows, cols, m, n, orders, polish, local_search, seed, "columns")


def color_rows(
    pattern: PatternLike,
    *,
    orders: Optional[Sequence[str]] = None,
    polish: int = 3,
    local_search: Union[bool, int] = True,
    seed: int = 0,
) -> Coloring:
    """Distance-2 coloring of the rows of ``pattern``: rows of one color share no column."""
    rows, cols, m, n = _coo(pattern)
    with intra_op_threads(1):
        return _color(cols, rows, n, m, orders, polish, local_search, seed, "rows")


def is_structurally_orthogonal(pattern: PatternLike, colors: Tensor, axis: str = "columns") -> bool:
    """True when no row (axis="columns") or column (axis="rows") holds two vertices of one color."""
    rows, cols, m, n = _coo(pattern)
    if axis == "rows":
        rows, cols, m, n = cols, rows, n, m
    elif axis != "columns":
        raise ValueError("axis must be 'columns' or 'rows'")
    colors = colors.detach().cpu().long()
    if colors.shape != (n,) or (n and int(colors.min()) < 0):
        return False
    if rows.numel() == 0:
        return True
    key = rows * (int(colors.max()) + 1) + colors.index_select(0, cols)
    return torch.unique(key).numel() == key.numel()
