"""Dependency sets as CSR: :class:`SetProv`, memory and time proportional to the nonzeros.

``ptr``/``col`` live on the values' device, so a pattern never costs ``numel x
n_inputs``.  When every row holds the same number ``w`` of ids (a source, a
stencil, a batch of equal-sized blocks: the usual case) the CSR is *uniform*:
``col`` viewed as a ``(numel, w)`` matrix, ``ptr`` implicit, and gathers and
unions are plain row copies and column comparisons.  Every operation is
vectorized torch code; the only host reads are a few scalars per operation.

Operations here take and return sets only; :mod:`.mixed` combines them with
bitmasks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._sparse import bool_coo

_I64 = torch.int64
_PADDED_MAX = 24   # unions whose rows hold at most this many ids (all inputs together) skip the sort
_ROW_SORT_MAX = 64  # rows at most this wide are deduplicated by a per-row sort instead of a global one


def _ar(n: int, device) -> torch.Tensor:
    return torch.arange(n, dtype=_I64, device=device)


def _is_arange(idx: torch.Tensor) -> bool:
    n = idx.numel()
    return n == 0 or (int(idx[0]) == 0 and int(idx[-1]) == n - 1
                      and torch.equal(idx, _ar(n, idx.device)))


def _min(t: torch.Tensor) -> int:
    return int(t.min()) if t.numel() else 0


class SetProv:
    """Per-element dependency sets of ``numel`` elements in row-major order (CSR).

    ``col`` holds the ids of row ``i`` at ``col[ptr[i]:ptr[i + 1]]``, unique within
    a row, not necessarily sorted.  ``width`` is the common row length when all rows
    have the same length and ``-1`` otherwise.  Uniform provenances computed here are
    stored column-major (``tmatrix()``, ``(width, numel)``: the ``j``-th id of every
    row is one contiguous vector, which is what gathers and unions work on); ``ptr``
    and ``col`` are then derived on first use.
    """

    __slots__ = ("_ptr", "_col", "_t", "_n", "_w")

    def __init__(self, ptr: Optional[torch.Tensor], col: Optional[torch.Tensor], *,
                 width: Optional[int] = None, numel: Optional[int] = None,
                 t: Optional[torch.Tensor] = None):
        self._ptr = ptr   # (numel + 1,) int64, or None when the rows are uniform
        self._col = col   # (nnz,) int64 row-major, or None when ``t`` is given
        self._t = t       # (width, numel) int64 column-major, uniform rows only
        if t is not None:
            width, numel = t.shape
            if width <= 1 and col is None:
                self._col = t.reshape(-1)
        if ptr is not None:
            self._n = ptr.numel() - 1
        elif numel is not None:
            self._n = numel
        else:
            self._n = col.numel() // width
        self._w = width   # None: not yet known; -1: rows differ in length

    # -- construction -------------------------------------------------------
    @staticmethod
    def empty(numel: int, device) -> "SetProv":
        return SetProv(None, None, t=torch.zeros(0, numel, dtype=_I64, device=device))

    @staticmethod
    def uniform(mat: torch.Tensor) -> "SetProv":
        """Rows of a row-major ``(numel, w)`` id matrix (ids unique within each row)."""
        return SetProv(None, mat.reshape(-1), width=mat.shape[1], numel=mat.shape[0])

    @staticmethod
    def columns(t: torch.Tensor) -> "SetProv":
        """Rows of a column-major ``(w, numel)`` id matrix (ids unique within each row)."""
        return SetProv(None, None, t=t)

    @staticmethod
    def identity(numel: int, first_id: int, device) -> "SetProv":
        """Element ``i`` depends on id ``first_id + i`` (a source)."""
        return SetProv.columns(torch.arange(first_id, first_id + numel, dtype=_I64, device=device).view(1, numel))

    @staticmethod
    def from_pairs(rows: torch.Tensor, cols: torch.Tensor, numel: int,
                   assume_unique: bool = False) -> "SetProv":
        """Build from (row, id) pairs, merging duplicates (``assume_unique``: pairs are
        distinct and already grouped by row in row order)."""
        device = rows.device
        if cols.numel() == 0:
            return SetProv.empty(numel, device)
        if not assume_unique:
            lo, hi = (int(v) for v in torch.stack(torch.aminmax(cols)).tolist())
            k = hi - lo + 1
            if numel * k < 2 ** 62:
                keys = torch.unique(rows * k + (cols - lo))
                rows = torch.div(keys, k, rounding_mode="floor")
                cols = keys - rows * k + lo
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
        return SetProv(ptr, cols)

    # -- queries --------------------------------------------------------------
    @property
    def ptr(self) -> torch.Tensor:
        p = self._ptr
        if p is None:
            p = self._ptr = _ar(self._n + 1, self.device) * self._w
        return p

    @property
    def col(self) -> torch.Tensor:
        c = self._col
        if c is None:
            c = self._col = self._t.t().reshape(-1)
        return c

    @property
    def numel(self) -> int:
        return self._n

    @property
    def nnz(self) -> int:
        return (self._t if self._col is None else self._col).numel()

    @property
    def device(self):
        return (self._t if self._col is None else self._col).device

    @property
    def width(self) -> int:
        """Common length of all rows, ``-1`` if they differ."""
        w = self._w
        if w is None:
            n, nnz = self._n, self._col.numel()
            if n == 0 or nnz == 0:
                w = 0
            elif nnz % n:
                w = -1
            else:
                lens = self._ptr[1:] - self._ptr[:-1]
                w = nnz // n if bool((lens == nnz // n).all()) else -1
            self._w = w
        return w

    def matrix(self) -> torch.Tensor:
        """Row-major ``(numel, width)`` view of ``col`` (uniform rows only)."""
        return self.col.view(self._n, self._w)

    def tmatrix(self) -> torch.Tensor:
        """Column-major ``(width, numel)`` ids (uniform rows only); computed once."""
        t = self._t
        if t is None:
            t = self._t = self.matrix().t().contiguous()
        return t

    def lengths(self) -> torch.Tensor:
        if self.width >= 0:
            return torch.full((self._n,), self._w, dtype=_I64, device=self.device)
        p = self.ptr
        return p[1:] - p[:-1]

    def rows(self) -> torch.Tensor:
        """Row index of every stored entry."""
        ar = _ar(self._n, self.device)
        if self.width >= 0:
            return torch.repeat_interleave(ar, self._w)
        return torch.repeat_interleave(ar, self.lengths(), output_size=self.nnz)

    def to(self, device) -> "SetProv":
        mv = (lambda x: None if x is None else x.to(device))
        return SetProv(mv(self._ptr), mv(self._col), width=self._w, numel=self._n, t=mv(self._t))

    def to_sets(self) -> "SetProv":
        return self

    # -- transformations -------------------------------------------------------
    def gather(self, idx: torch.Tensor) -> "SetProv":
        """Row ``i`` of the result is row ``idx[i]`` of self (``-1``: empty row)."""
        idx = idx.reshape(-1)
        m, device = idx.numel(), self.device
        if m == 0 or self.nnz == 0:
            return SetProv.empty(m, device)
        neg = _min(idx) < 0
        w = self.width
        if not neg and m == self._n and _is_arange(idx):
            return self
        if w >= 0:
            t = self.tmatrix()
            if not neg:
                return SetProv.columns(torch.index_select(t, 1, idx))
            keep = torch.nonzero(idx >= 0).squeeze(1)
            sel = torch.index_select(t, 1, torch.index_select(idx, 0, keep))
            lens = torch.zeros(m, dtype=_I64, device=device)
            lens.index_fill_(0, keep, w)
            ptr = torch.zeros(m + 1, dtype=_I64, device=device)
            torch.cumsum(lens, 0, out=ptr[1:])
            return SetProv(ptr, sel.t().reshape(-1), width=w if keep.numel() == m else -1)
        ptr = self.ptr
        if neg:
            valid = idx >= 0
            safe = torch.where(valid, idx, torch.zeros_like(idx))
            starts = ptr[safe]
            lens = torch.where(valid, ptr[safe + 1] - starts, torch.zeros_like(idx))
        else:
            starts = ptr[idx]
            lens = ptr[idx + 1] - starts
        optr = torch.zeros(m + 1, dtype=_I64, device=device)
        torch.cumsum(lens, 0, out=optr[1:])
        total = int(optr[-1])
        src = _ar(total, device) + torch.repeat_interleave(starts - optr[:-1], lens, output_size=total)
        return SetProv(optr, torch.index_select(self.col, 0, src))

    def scatter(self, out_rows: torch.Tensor, numel: int, in_rows: Optional[torch.Tensor] = None) -> "SetProv":
        """Union-push: row ``in_rows[k]`` of self is merged into result row ``out_rows[k]``.

        ``in_rows`` defaults to ``arange(self.numel)``.  Negative targets are dropped.
        """
        out_rows = out_rows.reshape(-1)
        src = self if in_rows is None else self.gather(in_rows)
        device = self.device
        if out_rows.numel() == 0 or src.nnz == 0:
            return SetProv.empty(numel, device)
        if _min(out_rows) < 0:
            keep = torch.nonzero(out_rows >= 0).squeeze(1)
            src, out_rows = src.gather(keep), torch.index_select(out_rows, 0, keep)
            if src.nnz == 0:
                return SetProv.empty(numel, device)
        counts = torch.bincount(out_rows, minlength=numel)
        cmin, cmax = (int(v) for v in torch.stack(torch.aminmax(counts)).tolist())
        if cmax <= 1:  # injective: a gather by the inverse map
            inv = torch.full((numel,), -1, dtype=_I64, device=device)
            inv.index_copy_(0, out_rows, _ar(out_rows.numel(), device))
            return src.gather(inv)
        w = src.width
        if w >= 0 and cmin == cmax and ((cmax - 1) * w <= _PADDED_MAX or cmax * w <= _ROW_SORT_MAX):
            # every target receives the same number of equally long rows
            order = None if bool((out_rows[1:] >= out_rows[:-1]).all()) else torch.argsort(out_rows, stable=True)
            if (cmax - 1) * w <= _PADDED_MAX:
                t = src.tmatrix()
                if order is not None:
                    t = torch.index_select(t, 1, order)
                g = t.view(w, numel, cmax)
                return _union_columns([g[:, :, r].contiguous() for r in range(cmax)], numel, False)
            mat = src.matrix()
            if order is not None:
                mat = torch.index_select(mat, 0, order)
            return _dedupe_rows(mat.reshape(numel, cmax * w))
        rows, cols = src.rows(), src.col
        return SetProv.from_pairs(torch.index_select(out_rows, 0, rows), cols, numel)

    def replace_rows(self, idx: torch.Tensor, new: "SetProv") -> "SetProv":
        """Copy with rows ``idx`` (distinct) replaced by the rows of ``new`` (in-place writes)."""
        idx = idx.reshape(-1)
        n, k, device = self._n, idx.numel(), self.device
        if k == 0:
            return self
        if self.nnz == 0 and new.nnz == 0:
            return SetProv.empty(n, device)
        # result = rows of cat(self, new), picked by a map sending idx[j] to n + j
        src = _ar(n, device)
        src.index_copy_(0, idx, _ar(k, device) + n)
        if self.nnz == 0:
            return new.gather(src - n)   # negative: an empty row
        if new.nnz == 0:
            return self.gather(torch.where(src < n, src, torch.full_like(src, -1)))
        return cat_sets([self, new]).gather(src)

    def to_coo(self, lo: int, n: int, layout=torch.sparse_coo) -> torch.Tensor:
        """2-D boolean pattern ``(numel, n)`` of the ids in ``[lo, lo + n)``."""
        device = self.device
        p = self
        if p.nnz:
            mn, mx = (int(v) for v in torch.stack(torch.aminmax(p._t if p._col is None else p._col)).tolist())
            if mn < lo or mx >= lo + n:
                keep = (p.col >= lo) & (p.col < lo + n)
                pos = torch.nonzero(keep).squeeze(1)
                p = SetProv.from_pairs(p.rows()[pos], p.col[pos], p.numel, assume_unique=True)
        rows, cols = _sorted_entries(p)
        cols = cols - lo
        if layout == torch.strided:
            out = torch.zeros(p.numel, n, dtype=torch.bool, device=device)
            out[rows, cols] = True
            return out
        t = bool_coo(rows, cols, (p.numel, n))
        return t if layout == torch.sparse_coo else t.to_sparse(layout=layout)

    def __repr__(self) -> str:
        return f"SetProv(numel={self._n}, nnz={self.nnz}, width={self._w})"


def _sorted_entries(p: SetProv):
    """``(rows, ids)`` of every entry, ids ascending within each row."""
    device = p.device
    if p.nnz == 0:
        z = torch.zeros(0, dtype=_I64, device=device)
        return z, z
    w = p.width
    if w >= 0:
        if w <= 1 or (p._col is None and w <= 16):   # narrow: sort across the column vectors
            cols = torch.sort(p.tmatrix(), dim=0).values.t().reshape(-1)
        else:
            cols = torch.sort(p.matrix(), dim=1).values.reshape(-1)
        return torch.repeat_interleave(_ar(p.numel, device), w), cols
    lens = p.lengths()
    wmax = int(lens.max())
    rows = p.rows()
    if wmax <= _ROW_SORT_MAX and p.numel * wmax <= 4 * p.nnz:
        # pad to (numel, wmax) with a sentinel larger than any id, sort each row, drop the padding
        mat = _padded(p, lens, wmax, fill=torch.iinfo(_I64).max)
        cols = torch.sort(mat, dim=1).values
        cols = cols[_ar(wmax, device) < lens[:, None]]
        return rows, cols
    lo, hi = (int(v) for v in torch.stack(torch.aminmax(p.col)).tolist())
    k = hi - lo + 1
    if p.numel * k < 2 ** 62:
        keys = torch.sort(rows * k + (p.col - lo)).values
        return torch.div(keys, k, rounding_mode="floor"), keys % k + lo
    order = torch.argsort(p.col, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]
    return rows[order], p.col[order]


def _padded(p: SetProv, lens: torch.Tensor, w: int, fill: int = -1) -> torch.Tensor:
    """Row-major ``(numel, w)`` matrix of the rows of ``p`` (``w >= max length``), padded with ``fill``."""
    if p.width >= 0 and p.width == w:
        return p.matrix()
    return _padded_t(p, lens, w, fill).t()


def _padded_t(p: SetProv, lens: torch.Tensor, w: int, fill: int = -1) -> torch.Tensor:
    """Column-major ``(w, numel)`` ids of the rows of ``p`` padded with ``fill``."""
    if p.width >= 0 and p.width == w:
        return p.tmatrix()
    device = p.device
    ar = _ar(w, device)[:, None]
    valid = ar < lens
    pos = torch.clamp(p.ptr[:-1] + ar, max=max(p.nnz - 1, 0))
    vals = torch.index_select(p.col, 0, pos.reshape(-1)).view(pos.shape) if p.nnz else torch.zeros_like(pos)
    return torch.where(valid, vals, torch.full_like(pos, fill))


def _from_matrix(c: torch.Tensor, keep: Optional[torch.Tensor]) -> SetProv:
    """Rows of the row-major id matrix ``c`` restricted to ``keep`` (``None``: everything)."""
    if keep is None:
        return SetProv.uniform(c)
    counts = keep.sum(1)
    n = c.shape[0]
    col = c[keep]
    w = col.numel() // n if n else 0
    if n and col.numel() % n == 0 and bool((counts == w).all()):
        return SetProv.uniform(col.view(n, w))
    ptr = torch.zeros(n + 1, dtype=_I64, device=c.device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return SetProv(ptr, col, width=-1)


def _dedupe_rows(c: torch.Tensor) -> SetProv:
    """Rows of a row-major id matrix (``-1``: padding) with repeated ids dropped, by a per-row sort."""
    s = torch.sort(c, dim=1).values
    keep = s >= 0
    keep[:, 1:] &= s[:, 1:] != s[:, :-1]
    return _from_matrix(s, None if bool(keep.all()) else keep)


def _union_columns(blocks: Sequence[torch.Tensor], n: int, padded: bool) -> SetProv:
    """Union of column-major blocks ``(w_b, n)`` (rows unique within a block; ``-1``:
    padding when ``padded``), column by column: every id column of a block is compared
    with the blocks before it.

    Blocks go widest first, so a narrower one contained in it (``x * y + x``) shows as
    columns that repeat in every row and are dropped whole; only columns that repeat in
    some rows but not others need a per-entry compaction.  The widest block is never
    compared, so a wide block joined by a few narrow ones costs ``width`` comparisons
    per narrow column, not a sort.
    """
    blocks = sorted(blocks, key=lambda t: -t.shape[0])
    parts = [blocks[0]]       # column-major pieces of the result, in order
    masks = [None]            # per piece: None (keep all) or (k, n) bool of entries to keep
    for b, ct in enumerate(blocks[1:], 1):
        earlier = blocks[:b]
        for v in ct.unbind(0):
            dup, tmp = None, None
            for e in earlier:
                if e.shape[0] > 16:
                    d = (e == v).any(0)
                    dup = d if dup is None else dup.logical_or_(d)
                    continue
                for u in e.unbind(0):
                    if dup is None:
                        dup = torch.eq(v, u)
                    else:
                        tmp = torch.eq(v, u, out=tmp)
                        dup.logical_or_(tmp)
            k = int(dup.sum())
            if k == n:        # repeated in every row: drop the column
                continue
            parts.append(v.unsqueeze(0))
            masks.append(None if k == 0 else ~dup.unsqueeze(0))
    if not padded and all(m is None for m in masks):
        return SetProv.columns(parts[0] if len(parts) == 1 else torch.cat(parts, 0))
    c = torch.cat(parts, 0).t()
    keep = torch.cat([p >= 0 if m is None else m for p, m in zip(parts, masks)], 0).t()
    if padded:
        keep &= c >= 0
    return _from_matrix(c, keep)


def union_sets(provs: Sequence["SetProv"], n: int) -> "SetProv":
    """Element-wise union of at least two distinct, non-empty set provenances of ``n`` rows
    (:func:`~.mixed.union` filters and dispatches)."""
    seen, uniq = set(), []
    for p in provs:  # two provenances sharing their id arrays (views of one store)
        key = id(p._t) if p._t is not None else id(p._col)
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    if len(uniq) == 1:
        return uniq[0]
    ws = [p.width for p in uniq]
    if all(w >= 0 for w in ws):
        widths, lens = ws, None
    else:
        lens = [p.lengths() for p in uniq]
        widths = [w if w >= 0 else int(ln.max()) for w, ln in zip(ws, lens)]
    if sum(widths) <= _PADDED_MAX or (lens is None and sum(widths) - max(widths) <= _PADDED_MAX):
        blocks = [p.tmatrix() if lens is None else _padded_t(p, lens[i], widths[i])
                  for i, p in enumerate(uniq) if widths[i]]
        if not blocks:  # every operand is empty (width 0), though distinct objects
            return SetProv.empty(n, uniq[0].device)
        return _union_columns(blocks, n, lens is not None)
    if lens is None and sum(widths) <= _ROW_SORT_MAX:
        return _dedupe_rows(torch.cat([p.matrix() for p in uniq], 1))
    rows = torch.cat([p.rows() for p in uniq])
    cols = torch.cat([p.col for p in uniq])
    return SetProv.from_pairs(rows, cols, n)


def cat_sets(provs: Sequence["SetProv"]) -> "SetProv":
    """Rows of several set provenances one after the other (``torch.cat`` of flattened tensors)."""
    provs = list(provs)
    if len(provs) == 1:
        return provs[0]
    device = provs[0].device
    total = sum(p.numel for p in provs)
    if all(p.nnz == 0 for p in provs):
        return SetProv.empty(total, device)
    ws = [p.width for p in provs]
    if ws[0] >= 0 and all(w == ws[0] for w in ws):
        if all(p._col is None for p in provs) or ws[0] <= 1:
            return SetProv.columns(torch.cat([p.tmatrix() for p in provs], 1))
        return SetProv(None, torch.cat([p.col for p in provs]), width=ws[0], numel=total)
    ptrs, base = [], 0
    for p in provs:
        ptrs.append(p.ptr[:-1] + base)
        base += p.nnz
    ptrs.append(torch.tensor([base], dtype=_I64, device=device))
    return SetProv(torch.cat(ptrs), torch.cat([p.col for p in provs]))
