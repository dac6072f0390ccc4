"""Provenance: for each element of a tensor, the set of input ids it depends on.

Stored as CSR (``ptr``, ``col``) on the values' device, so memory and time are
proportional to the number of structural dependencies, never to
``numel x n_inputs``.  Every operation is vectorized torch code; sets are merged
by sorting packed ``row * K + col`` keys.

Input ids are global: every source tensor owns a contiguous id range (see
:mod:`trackjac.sources`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

_I64 = torch.int64


class Prov:
    """Per-element dependency sets of ``numel`` elements in row-major order."""

    __slots__ = ("ptr", "col")

    def __init__(self, ptr: torch.Tensor, col: torch.Tensor):
        self.ptr = ptr  # (numel + 1,) int64, ptr[0] == 0
        self.col = col  # (nnz,) int64, unique within each row (not necessarily sorted)

    # -- construction -------------------------------------------------------
    @staticmethod
    def empty(numel: int, device) -> "Prov":
        return Prov(torch.zeros(numel + 1, dtype=_I64, device=device),
                    torch.zeros(0, dtype=_I64, device=device))

    @staticmethod
    def identity(numel: int, first_id: int, device) -> "Prov":
        """Element ``i`` depends on id ``first_id + i`` (a source)."""
        return Prov(torch.arange(numel + 1, dtype=_I64, device=device),
                    torch.arange(first_id, first_id + numel, dtype=_I64, device=device))

    @staticmethod
    def from_pairs(rows: torch.Tensor, cols: torch.Tensor, numel: int,
                   assume_unique: bool = False) -> "Prov":
        """Build from (row, id) pairs, merging duplicates."""
        device = rows.device
        if cols.numel() == 0:
            return Prov.empty(numel, device)
        if not assume_unique:
            k = int(cols.max()) + 1
            if numel * k < 2 ** 62:
                keys = torch.unique(rows * k + cols)
                rows, cols = keys // k, keys % k
            else:  # key would overflow: two stable sorts instead of one packed sort
                order = torch.argsort(cols, stable=True)
                rows, cols = rows[order], cols[order]
                order = torch.argsort(rows, stable=True)
                rows, cols = rows[order], cols[order]
                keep = torch.ones_like(rows, dtype=torch.bool)
                keep[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
                rows, cols = rows[keep], cols[keep]
        counts = torch.bincount(rows, minlength=numel)
        ptr = torch.zeros(numel + 1, dtype=_I64, device=device)
        torch.cumsum(counts, 0, out=ptr[1:])
        return Prov(ptr, cols)

    # -- queries --------------------------------------------------------------
    @property
    def numel(self) -> int:
        return self.ptr.numel() - 1

    @property
    def nnz(self) -> int:
        return self.col.numel()

    @property
    def device(self):
        return self.ptr.device

    def lengths(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def rows(self) -> torch.Tensor:
        """Row index of every stored entry."""
        return torch.repeat_interleave(
            torch.arange(self.numel, dtype=_I64, device=self.device), self.lengths(),
            output_size=self.nnz)

    def to(self, device) -> "Prov":
        return Prov(self.ptr.to(device), self.col.to(device))

    # -- transformations -------------------------------------------------------
    def entries_of(self, idx: torch.Tensor):
        """Entries of rows ``idx`` (``-1`` = none): ``(position in idx, id)`` pairs."""
        device = self.device
        idx = idx.reshape(-1)
        valid = idx >= 0
        safe = torch.where(valid, idx, torch.zeros_like(idx))
        starts = self.ptr[safe]
        lens = torch.where(valid, self.ptr[safe + 1] - starts, torch.zeros_like(idx))
        total = int(lens.sum()) if idx.numel() else 0
        pos = torch.repeat_interleave(torch.arange(idx.numel(), dtype=_I64, device=device),
                                      lens, output_size=total)
        first = torch.cumsum(lens, 0) - lens
        off = torch.arange(total, dtype=_I64, device=device) - first[pos]
        return pos, self.col[starts[pos] + off]

    def gather(self, idx: torch.Tensor) -> "Prov":
        """Row ``i`` of the result is row ``idx[i]`` of self (``-1``: empty row)."""
        idx = idx.reshape(-1)
        if self.nnz == 0:
            return Prov.empty(idx.numel(), self.device)
        pos, cols = self.entries_of(idx)
        valid = idx >= 0
        safe = torch.where(valid, idx, torch.zeros_like(idx))
        lens = torch.where(valid, self.ptr[safe + 1] - self.ptr[safe], torch.zeros_like(idx))
        ptr = torch.zeros(idx.numel() + 1, dtype=_I64, device=self.device)
        torch.cumsum(lens, 0, out=ptr[1:])
        return Prov(ptr, cols)

    def scatter(self, out_rows: torch.Tensor, numel: int, in_rows: Optional[torch.Tensor] = None) -> "Prov":
        """Union-push: row ``in_rows[k]`` of self is merged into result row ``out_rows[k]``.

        ``in_rows`` defaults to ``arange(self.numel)``.  Negative targets are dropped.
        """
        out_rows = out_rows.reshape(-1)
        if in_rows is None:
            rows, cols = self.rows(), self.col
            tgt = out_rows[rows]
        else:
            pos, cols = self.entries_of(in_rows)
            tgt = out_rows[pos]
        keep = tgt >= 0
        return Prov.from_pairs(tgt[keep], cols[keep], numel)

    def replace_rows(self, idx: torch.Tensor, new: "Prov") -> "Prov":
        """Copy with rows ``idx`` replaced by the rows of ``new`` (in-place writes)."""
        idx = idx.reshape(-1)
        mask = torch.ones(self.numel, dtype=torch.bool, device=self.device)
        mask[idx] = False
        rows = self.rows()
        keep = mask[rows]
        r = torch.cat([rows[keep], idx[new.rows()]])
        c = torch.cat([self.col[keep], new.col])
        if r.numel() == 0:
            return Prov.empty(self.numel, self.device)
        order = torch.argsort(r, stable=True)
        return Prov.from_pairs(r[order], c[order], self.numel, assume_unique=_unique_targets(idx))

    def to_coo(self, lo: int, n: int, layout=torch.sparse_coo) -> torch.Tensor:
        """2-D boolean pattern ``(numel, n)`` of the ids in ``[lo, lo + n)``."""
        keep = (self.col >= lo) & (self.col < lo + n)
        rows = self.rows()[keep]
        cols = self.col[keep] - lo
        if n and rows.numel() and self.numel * n < 2 ** 62:  # coalesced order: rows, then columns
            keys = torch.sort(rows * n + cols).values
            rows, cols = keys // n, keys % n
        elif rows.numel():
            order = torch.argsort(cols, stable=True)
            order = order[torch.argsort(rows[order], stable=True)]
            rows, cols = rows[order], cols[order]
        if layout == torch.strided:
            out = torch.zeros(self.numel, n, dtype=torch.bool, device=self.device)
            out[rows, cols] = True
            return out
        vals = torch.ones(rows.numel(), dtype=torch.bool, device=self.device)
        t = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (self.numel, n),
                                    is_coalesced=True, check_invariants=False)
        return t if layout == torch.sparse_coo else t.to_sparse(layout=layout)


def _unique_targets(idx: torch.Tensor) -> bool:
    return idx.numel() <= 1 or torch.unique(idx).numel() == idx.numel()


_PADDED_MAX = 16  # rows this short are merged in a padded matrix, without a global sort


def union(provs: Sequence[Prov], numel: Optional[int] = None) -> Prov:
    """Element-wise union of provenances of equal length."""
    provs = [p for p in provs if p is not None]
    if not provs:
        raise ValueError("union of nothing")
    n = provs[0].numel if numel is None else numel
    nonempty, seen = [], set()
    for p in provs:
        key = (id(p.ptr), id(p.col))
        if p.nnz and key not in seen:  # x * x: the same sets twice
            seen.add(key)
            nonempty.append(p)
    if not nonempty:
        return Prov.empty(n, provs[0].device)
    if len(nonempty) == 1:
        return nonempty[0]
    lens = [p.lengths() for p in nonempty]
    widths = [int(l.max()) for l in lens]
    if sum(widths) <= _PADDED_MAX:
        return _padded_union(nonempty, lens, widths, n)
    rows = torch.cat([p.rows() for p in nonempty])
    cols = torch.cat([p.col for p in nonempty])
    return Prov.from_pairs(rows, cols, n)


def _padded_union(provs, lens, widths, n) -> Prov:
    """Union of short rows: pad to a (rows, width) matrix and drop repeats by pairwise comparison."""
    device = provs[0].device
    blocks = []
    for p, ln, w in zip(provs, lens, widths):
        ar = torch.arange(w, dtype=_I64, device=device)
        valid = ar < ln[:, None]
        pos = torch.clamp(p.ptr[:-1, None] + ar, max=max(p.nnz - 1, 0))
        blocks.append(torch.where(valid, p.col[pos], torch.full_like(pos, -1)))
    c = torch.cat(blocks, dim=1)
    keep = c >= 0
    for j in range(1, c.shape[1]):
        keep[:, j] &= ~(c[:, j:j + 1] == c[:, :j]).any(1)
    counts = keep.sum(1)
    ptr = torch.zeros(n + 1, dtype=_I64, device=device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return Prov(ptr, c[keep])


def all_ids(prov: Prov) -> torch.Tensor:
    """Sorted unique ids appearing anywhere in ``prov``."""
    return torch.unique(prov.col)


def broadcast_row(ids: torch.Tensor, numel: int) -> Prov:
    """Every one of ``numel`` rows holds the same id set ``ids``."""
    device = ids.device
    k = ids.numel()
    ptr = torch.arange(numel + 1, dtype=_I64, device=device) * k
    return Prov(ptr, ids.repeat(numel))
