"""The bipartite row/vertex incidence of a pattern, as dense per-degree tables.

The coloring never builds the vertex-intersection graph: every step gathers
from these tables, so memory stays O(nnz).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["Graph", "sort_perm", "ragged"]


def sort_perm(x: Tensor) -> Optional[Tensor]:
    """Stable sorting permutation of ``x``, or None when it is already sorted."""
    if x.numel() < 2 or bool((x[1:] >= x[:-1]).all()):
        return None
    if x.numel() and int(x.max()) < 2**31:  # int32 sorts about twice as fast
        x = x.int()
    return torch.sort(x, stable=True).indices


def ragged(values: Tensor, ptr: Tensor, lens_all: Tensor, S: Tensor) -> Tensor:
    """Concatenated segments ``values[ptr[s]:ptr[s] + lens_all[s]]`` for s in ``S``."""
    lens = lens_all.index_select(0, S)
    seg = torch.repeat_interleave(torch.arange(S.numel()), lens)
    pos = torch.arange(seg.numel()) - (torch.cumsum(lens, 0) - lens).index_select(0, seg)
    return values.index_select(0, ptr.index_select(0, S).index_select(0, seg) + pos)


class Graph:
    """Rows of every vertex, in dense per-degree-bucket tables padded with row ``m``.

    Vertices are the colored side (columns of ``rows, cols``); a row is a
    clique of them. Buckets hold degrees in (2^(b-1), 2^b], which bounds
    padding by 2x; the padding row's word stays zero, so a step is a few gathers.
    """

    def __init__(self, rows: Tensor, cols: Tensor, m: int, n: int):
        self.m, self.n = m, n
        # int32 row ids halve the memory traffic of the gathers that dominate
        self.idx = torch.int32 if m < 2**31 - 1 else torch.long
        self._rows, self._cols = rows, cols  # kept for the lazy row view
        perm = sort_perm(cols)
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
            perm = sort_perm(self._rows)
            row_cols = self._cols if perm is None else self._cols.index_select(0, perm)
            row_ptr = torch.zeros(self.m + 1, dtype=torch.long)
            torch.cumsum(self.row_len, 0, out=row_ptr[1:])
            self._csr = (row_ptr, row_cols)
        return self._csr

    def distance2_degree(self) -> Tensor:
        """Upper bound on each vertex's neighbor count: sum over its rows of (row length - 1)."""
        rl = torch.cat([self.row_len, self.row_len.new_zeros(1)])  # the padding row counts 0
        out = torch.empty(self.n, dtype=torch.long)
        for _, verts, tab in self.buckets:
            out[verts] = rl.index_select(0, tab.reshape(-1)).view(tab.shape).sum(1)
        return out - self.deg
