"""Packed bitmask provenance for computations with few inputs.

:class:`BitProv` stores one row of ``W`` int64 words per element: bit ``k`` of a
row (bit ``k % 64`` of word ``k // 64``) says whether the element depends on
input id ``lo + k``.  ``lo`` is a multiple of 64, so two bitmasks over different
id ranges line up word by word.  Memory is ``numel x W x 8`` bytes whatever the
pattern, so bitmasks pay off only when the id range is small: unions are word
ORs, gathers are row copies, and nothing is ever sorted.

Both representations implement :class:`~.protocol.Provenance`; ``ptr`` and
``col`` (the CSR form) are computed on first use.  Operations here take bitmasks
over one id range; :mod:`.mixed` aligns ranges and representations first.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import torch

from .._bitops import or_dim1
from .._sparse import bool_coo
from .sets import SetProv, _ar, _min

_I64 = torch.int64

_CHUNK_BITS = 1 << 25   # rows are unpacked to booleans in chunks of at most this many bits
_LITTLE = sys.byteorder == "little"


# -- bit tricks ---------------------------------------------------------------------------

def _popcount32(x: torch.Tensor) -> torch.Tensor:
    """Set bits of non-negative int64 values below ``2**32``."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24) & 0xFF


def popcount(words: torch.Tensor) -> torch.Tensor:
    """Number of set bits of every int64 word."""
    return _popcount32(words & 0xFFFFFFFF) + _popcount32((words >> 32) & 0xFFFFFFFF)


def _unpack(words: torch.Tensor) -> torch.Tensor:
    """``(n, W)`` words -> ``(n, 64 W)`` booleans, bit ``k`` of a row at column ``k``."""
    n, W = words.shape
    if _LITTLE:
        b = words.contiguous().view(torch.uint8).view(n, W * 8, 1)
        shifts = torch.arange(8, dtype=torch.uint8, device=words.device)
        return ((b >> shifts) & 1).view(n, W * 64).bool()
    shifts = torch.arange(64, dtype=_I64, device=words.device)
    return ((words.unsqueeze(2) >> shifts) & 1).view(n, W * 64).bool()


def set_bits(words: torch.Tensor):
    """``(row, bit)`` of every set bit of ``(n, W)`` words, in row-major order.

    Only nonzero words are unpacked, so the cost is ``n x W`` word tests plus 64 per
    nonzero word, not ``n x 64 W``.
    """
    W = words.shape[1]
    flat = words.reshape(-1)
    f = torch.nonzero(flat).squeeze(1)               # nonzero words, row-major
    pos = torch.nonzero(_unpack(torch.index_select(flat, 0, f).view(-1, 1)).view(-1)).squeeze(1)
    fi = torch.index_select(f, 0, pos >> 6)          # the word of every set bit
    rows = torch.div(fi, W, rounding_mode="floor")
    return rows, (fi - rows * W) * 64 + (pos & 63)


def _all_set(words: torch.Tensor, first: int, last: int) -> bool:
    """Whether bits ``first .. last - 1`` of every row of ``(n, W)`` words are all set."""
    W = words.shape[1]
    inner = words[:, 1:-1] if W > 2 else words[:, :0]
    if inner.numel() and not bool((inner == -1).all()):
        return False
    edges = [0] if W == 1 else [0, W - 1]
    bits = _unpack(words[:, edges])   # (n, 64 or 128) booleans of the first and last words
    if W == 1:
        return bool(bits[:, first:last].all())
    return bool(bits[:, first:64].all()) and bool(bits[:, 64:64 + last - 64 * (W - 1)].all())


def _chunks(n: int, W: int):
    step = max(1, _CHUNK_BITS // max(64 * W, 1))
    for s in range(0, n, step):
        yield s, min(n, s + step)


def or_reduce(src: torch.Tensor, tgt: torch.Tensor, n: int) -> torch.Tensor:
    """``out[t] = OR of src[k] with tgt[k] == t`` for ``(m, W)`` words and targets in ``[0, n)``."""
    m, W = src.shape
    device = src.device
    out = torch.zeros(n, W, dtype=_I64, device=device)
    if m == 0 or n == 0:
        return out
    counts = torch.bincount(tgt, minlength=n)
    cmin, cmax = (int(v) for v in torch.stack(torch.aminmax(counts)).tolist())
    if cmax == 1:
        return out.index_copy_(0, tgt, src)
    order = None
    if not bool((tgt[1:] >= tgt[:-1]).all()):
        order = torch.argsort(tgt, stable=True)
        src, tgt = torch.index_select(src, 0, order), torch.index_select(tgt, 0, order)
    if cmin == cmax:  # every target receives cmax rows: a regular (n, cmax, W) block
        return or_dim1(src.view(n, cmax, W))
    if n * cmax <= 4 * m:  # pad each target's rows to cmax with zeros
        first = torch.cumsum(counts, 0) - counts
        slot = _ar(m, device) - first[tgt]
        buf = torch.zeros(n * cmax, W, dtype=_I64, device=device)
        buf.index_copy_(0, tgt * cmax + slot, src)
        return or_dim1(buf.view(n, cmax, W))
    # a few very long segments: segmented inclusive OR-scan by doubling, keep each segment's last
    d = 1
    while d < cmax:
        same = (tgt[d:] == tgt[:-d]).unsqueeze(1)
        nxt = src.clone()
        nxt[d:] |= torch.where(same, src[:-d], torch.zeros_like(src[:-d]))
        src, d = nxt, 2 * d
    last = torch.ones(m, dtype=torch.bool, device=device)
    last[:-1] = tgt[1:] != tgt[:-1]
    pos = torch.nonzero(last).squeeze(1)
    return out.index_copy_(0, torch.index_select(tgt, 0, pos), torch.index_select(src, 0, pos))


class BitProv:
    """Per-element dependency sets as packed bitmasks over ids ``[lo, lo + 64 W)``."""

    __slots__ = ("words", "lo", "_csr")

    def __init__(self, words: torch.Tensor, lo: int):
        self.words = words  # (numel, W) int64
        self.lo = lo        # multiple of 64
        self._csr: Optional[SetProv] = None

    # -- construction -------------------------------------------------------
    @staticmethod
    def empty(numel: int, lo: int, W: int, device) -> "BitProv":
        return BitProv(torch.zeros(numel, W, dtype=_I64, device=device), lo)

    @staticmethod
    def identity(numel: int, first_id: int, device) -> "BitProv":
        """Element ``i`` depends on id ``first_id + i`` (a source)."""
        lo = first_id - first_id % 64
        b = _ar(numel, device) + (first_id - lo)
        W = max(1, -(-(first_id - lo + numel) // 64))
        words = torch.zeros(numel, W, dtype=_I64, device=device)
        words.scatter_(1, (b >> 6).unsqueeze(1), (torch.ones_like(b) << (b & 63)).unsqueeze(1))
        return BitProv(words, lo)

    # -- queries --------------------------------------------------------------
    @property
    def W(self) -> int:
        return self.words.shape[1]

    @property
    def hi(self) -> int:
        return self.lo + 64 * self.W

    @property
    def numel(self) -> int:
        return self.words.shape[0]

    @property
    def nnz(self) -> int:
        if self._csr is not None:
            return self._csr.nnz
        return int(popcount(self.words).sum()) if self.words.numel() else 0

    @property
    def device(self):
        return self.words.device

    @property
    def width(self) -> int:
        return self.to_sets().width

    def lengths(self) -> torch.Tensor:
        if self._csr is not None:
            return self._csr.lengths()
        return popcount(self.words).sum(1)

    def to_sets(self) -> SetProv:
        """The same sets as CSR (ids ascending within each row); computed once."""
        if self._csr is None:
            r, b = set_bits(self.words)
            self._csr = SetProv.from_pairs(r, b + self.lo, self.numel, assume_unique=True)
        return self._csr

    @property
    def ptr(self) -> torch.Tensor:
        return self.to_sets().ptr

    @property
    def col(self) -> torch.Tensor:
        return self.to_sets().col

    def rows(self) -> torch.Tensor:
        return self.to_sets().rows()

    def all_ids(self) -> torch.Tensor:
        """Sorted ids set in any row."""
        if self.numel == 0:
            return torch.zeros(0, dtype=_I64, device=self.device)
        acc = or_dim1(self.words.unsqueeze(0))   # (1, W)
        return torch.nonzero(_unpack(acc)[0]).squeeze(1) + self.lo

    def to(self, device) -> "BitProv":
        return BitProv(self.words.to(device), self.lo)

    # -- transformations -------------------------------------------------------
    def gather(self, idx: torch.Tensor) -> "BitProv":
        """Row ``i`` of the result is row ``idx[i]`` of self (``-1``: empty row)."""
        idx = idx.reshape(-1)
        if self.numel == 0:
            return BitProv.empty(idx.numel(), self.lo, self.W, self.device)
        if _min(idx) < 0:
            out = torch.index_select(self.words, 0, idx.clamp(min=0))
            return BitProv(out.mul_((idx >= 0).unsqueeze(1)), self.lo)
        return BitProv(torch.index_select(self.words, 0, idx), self.lo)

    def scatter(self, out_rows: torch.Tensor, numel: int, in_rows: Optional[torch.Tensor] = None) -> "BitProv":
        """Union-push: row ``in_rows[k]`` of self is merged into result row ``out_rows[k]``."""
        src = self.words if in_rows is None else self.gather(in_rows).words
        tgt = out_rows.reshape(-1)
        if _min(tgt) < 0:
            keep = torch.nonzero(tgt >= 0).squeeze(1)
            src, tgt = torch.index_select(src, 0, keep), torch.index_select(tgt, 0, keep)
        return BitProv(or_reduce(src, tgt, numel), self.lo)

    def replace_rows(self, idx: torch.Tensor, new: "BitProv") -> "BitProv":
        """Copy with rows ``idx`` replaced by the rows of ``new`` (same id range; repeated rows:
        their union)."""
        idx = idx.reshape(-1)
        n = self.numel
        out = self.words.clone()
        if idx.numel() == 0:
            return BitProv(out, self.lo)
        counts = torch.bincount(idx, minlength=n)
        if int(counts.max()) <= 1:
            return BitProv(out.index_copy_(0, idx, new.words), self.lo)
        out.index_fill_(0, idx, 0)
        return BitProv(out | or_reduce(new.words, idx, n), self.lo)

    def to_coo(self, lo: int, n: int, layout=torch.sparse_coo) -> torch.Tensor:
        """2-D boolean pattern ``(numel, n)`` of the ids in ``[lo, lo + n)``."""
        numel, device = self.numel, self.device
        a, b = max(lo, self.lo), min(lo + n, self.hi)   # ids present in both ranges
        if layout == torch.strided:
            dense = torch.zeros(numel, n, dtype=torch.bool, device=device)
            if a < b:
                w0, w1 = (a - self.lo) // 64, -(-(b - self.lo) // 64)
                off = self.lo + 64 * w0         # id of bit 0 of word w0
                for s, e in _chunks(numel, w1 - w0):
                    dense[s:e, a - lo:b - lo] = _unpack(self.words[s:e, w0:w1])[:, a - off:b - off]
            return dense
        indices = torch.zeros(2, 0, dtype=_I64, device=device)
        if a < b:
            w0, w1 = (a - self.lo) // 64, -(-(b - self.lo) // 64)
            off = self.lo + 64 * w0         # id of bit 0 of word w0
            sub = self.words[:, w0:w1]
            if sub.numel() == 0:
                pass  # no elements: the empty indices above
            elif _all_set(sub, a - off, b - off):
                # every element depends on every id (a dense matmul): the indices are a grid,
                # without unpacking 1M bits and a nonzero() over them
                grid = torch.empty(2, numel, b - a, dtype=_I64, device=device)
                grid[0] = torch.arange(numel, dtype=_I64, device=device).unsqueeze(1)
                grid[1] = torch.arange(a - lo, b - lo, dtype=_I64, device=device)
                grid = grid.view(2, -1)
                t = torch.sparse_coo_tensor(grid, torch.ones(grid.shape[1], dtype=torch.bool, device=device),
                                            (numel, n), is_coalesced=True, check_invariants=False)
                return t if layout == torch.sparse_coo else t.to_sparse(layout=layout)
            elif 4 * int(torch.count_nonzero(sub)) >= sub.numel():
                # mostly nonzero words (dense rows): unpack all, one 2-D nonzero per chunk
                parts = []
                for s, e in _chunks(numel, w1 - w0):
                    nz = torch.nonzero(_unpack(sub[s:e])[:, a - off:b - off])
                    if s:
                        nz[:, 0] += s
                    parts.append(nz)
                nz = torch.cat(parts) if len(parts) > 1 else parts[0]
                if a != lo:
                    nz[:, 1] += a - lo
                indices = nz.t()
            else:
                r, c = set_bits(sub)
                c += off - lo
                if a > off or b < self.lo + 64 * w1:  # the range ends inside a word
                    keep = torch.nonzero((c >= a - lo) & (c < b - lo)).squeeze(1)
                    r, c = r[keep], c[keep]
                indices = torch.stack([r, c])
        t = bool_coo(indices[0], indices[1], (numel, n))
        return t if layout == torch.sparse_coo else t.to_sparse(layout=layout)

    def __repr__(self) -> str:
        return f"BitProv(numel={self.numel}, lo={self.lo}, W={self.W})"


def to_bits(p, lo: int, hi: int) -> BitProv:
    """``p`` (either representation) as bitmasks over ``[lo, hi)`` (``lo``, ``hi``: multiples
    of 64 covering every id of ``p``)."""
    W = (hi - lo) // 64
    if isinstance(p, BitProv):
        if p.lo == lo and p.W == W:
            return p
        out = torch.zeros(p.numel, W, dtype=_I64, device=p.device)
        q = (p.lo - lo) // 64
        out[:, q:q + p.W] = p.words
        return BitProv(out, lo)
    words = torch.zeros(p.numel * W, dtype=_I64, device=p.device)
    if p.nnz:
        b = p.col - lo
        flat = p.rows() * W + (b >> 6)
        words.index_add_(0, flat, torch.ones_like(b) << (b & 63))  # distinct bits: a sum is an OR
    return BitProv(words.view(p.numel, W), lo)


def union_bits(provs: Sequence[BitProv]) -> BitProv:
    """Union of bitmasks over one id range."""
    out = provs[0].words | provs[1].words
    for p in provs[2:]:
        out |= p.words
    return BitProv(out, provs[0].lo)


def cat_bits(provs: Sequence[BitProv]) -> BitProv:
    """Rows of several bitmasks over one id range, one after the other."""
    return BitProv(torch.cat([p.words for p in provs]), provs[0].lo)
