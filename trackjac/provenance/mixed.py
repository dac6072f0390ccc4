"""Operations on provenances of either representation.

Operands that mix sets and bitmasks (or bitmasks over different id ranges) are
brought to one representation first (:func:`common`); results that come out as
sets but would be smaller as bitmasks are converted (:func:`densify`, ``"auto"``
only).  Rules call these functions, never a representation's module directly.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from . import policy
from .bits import BitProv, cat_bits, to_bits, union_bits
from .protocol import Provenance
from .sets import SetProv, _ar, cat_sets, union_sets


def _id_range(p: SetProv):
    ids = p._t if p._col is None else p._col
    mn, mx = (int(v) for v in torch.stack(torch.aminmax(ids)).tolist())
    return mn - mn % 64, mx + 1 + (-(mx + 1)) % 64


def densify(p: Provenance) -> Provenance:
    """In ``"auto"`` mode, a CSR provenance whose rows are so full that bitmasks over its
    id range are smaller becomes bitmasks (dense intermediates: softmax, attention, dense
    layers); anything else is returned as it is."""
    if (not isinstance(p, SetProv) or p.numel == 0 or p.nnz < 64 * p.numel
            or policy.representation() != "auto"):
        return p
    lo, hi = _id_range(p)
    if not policy.smaller_as_bits(p.numel, hi - lo, p.nnz):
        return p
    return to_bits(p, lo, hi)


def common(provs: Sequence[Provenance]) -> List[Provenance]:
    """The same provenances in one representation (bitmasks over one id range, or CSR).

    Empty CSR provenances count for neither.  Bitmasks are kept when the ids of all of
    them fit the automatic bitmask range (or ``representation="bits"`` is in force),
    otherwise everything becomes CSR.
    """
    bits = [p for p in provs if isinstance(p, BitProv)]
    if not bits:
        return list(provs)
    sets = [p for p in provs if not isinstance(p, BitProv) and p.nnz]
    lo = min(b.lo for b in bits)
    hi = max(b.hi for b in bits)
    if not sets and all(b.lo == lo and b.hi == hi for b in bits):
        return [p if isinstance(p, BitProv) else to_bits(p, lo, hi) for p in provs]
    for s in sets:
        slo, shi = _id_range(s)
        lo, hi = min(lo, slo), max(hi, shi)
    nnz = 0
    if hi - lo > policy.AUTO_MAX_SPAN:  # only then does the size of the sets matter
        nnz = sum(p.nnz for p in provs)
    if policy.keep_bits(hi - lo, provs[0].numel, nnz):
        return [to_bits(p, lo, hi) for p in provs]
    return [p.to_sets() for p in provs]


def union(provs: Sequence[Optional[Provenance]], numel: Optional[int] = None) -> Provenance:
    """Element-wise union of provenances of equal length (``None`` entries are skipped)."""
    return densify(_union(provs, numel))


def _union(provs, numel):
    provs = [p for p in provs if p is not None]
    if not provs:
        raise ValueError("union of nothing")
    n = provs[0].numel if numel is None else numel
    if n == 0:
        return provs[0] if provs[0].numel == 0 else SetProv.empty(0, provs[0].device)
    nonempty, seen = [], set()
    for p in provs:
        if id(p) not in seen and (not isinstance(p, SetProv) or p.nnz):  # x * x: the same sets twice
            seen.add(id(p))
            nonempty.append(p)
    if not nonempty:
        return SetProv.empty(n, provs[0].device)
    if len(nonempty) == 1:
        return nonempty[0]
    if all(isinstance(p, SetProv) for p in nonempty):
        return union_sets(nonempty, n)
    same = common(nonempty)
    return union_bits(same) if isinstance(same[0], BitProv) else union_sets(same, n)


def cat_rows(provs: Sequence[Provenance]) -> Provenance:
    """Rows of several provenances one after the other (``torch.cat`` of flattened tensors)."""
    provs = list(provs)
    if len(provs) == 1:
        return provs[0]
    if not all(isinstance(p, SetProv) for p in provs):
        provs = common(provs)
        if isinstance(provs[0], BitProv):
            return cat_bits(provs)
    return cat_sets(provs)


def scatter(p: Provenance, out_rows: torch.Tensor, numel: int,
            in_rows: Optional[torch.Tensor] = None) -> Provenance:
    """Union-push: row ``in_rows[k]`` of ``p`` is merged into result row ``out_rows[k]``
    (``in_rows`` defaults to every row; negative targets are dropped)."""
    return densify(p.scatter(out_rows, numel, in_rows))


def replace_rows(base: Provenance, idx: torch.Tensor, new: Provenance) -> Provenance:
    """Copy of ``base`` with rows ``idx`` replaced by the rows of ``new`` (in-place writes).

    Rows named several times in ``idx`` get the union of their new rows.
    """
    if isinstance(base, BitProv) or isinstance(new, BitProv):
        base, new = common([base, new])
    if isinstance(base, BitProv):
        return base.replace_rows(idx, new)
    idx = idx.reshape(-1)
    n = base.numel
    if idx.numel() == 0:
        return base
    counts = torch.bincount(idx, minlength=n)
    if int(counts.max()) <= 1:
        return base.replace_rows(idx, new)
    kept = base.gather(_ar(n, base.device).masked_fill(counts > 0, -1))
    return union([kept, scatter(new, idx, n)], n)


def all_ids(prov: Provenance) -> torch.Tensor:
    """Sorted unique ids appearing anywhere in ``prov``."""
    if isinstance(prov, BitProv):
        return prov.all_ids()
    return torch.unique(prov.col)


def broadcast_row(ids: torch.Tensor, numel: int) -> Provenance:
    """Every one of ``numel`` rows holds the same id set ``ids``."""
    return densify(SetProv.uniform(ids.reshape(1, -1).expand(numel, ids.numel()).contiguous()))


def identity(numel: int, first_id: int, device, representation: str = "sets") -> Provenance:
    """Provenance of a source of ``numel`` elements with ids ``first_id ...``:
    ``representation`` is ``"sets"`` (CSR) or ``"bits"`` (packed bitmasks)."""
    if representation == "bits":
        return BitProv.identity(numel, first_id, device)
    return SetProv.identity(numel, first_id, device)


def without_ids(p: Provenance, ranges: torch.Tensor) -> Provenance:
    """``p`` without the ids in any ``[first, end)`` row of ``ranges`` (``(k, 2)``)."""
    if p.nnz == 0 or ranges.numel() == 0:
        return p
    s = p.to_sets()
    col = s.col
    r = ranges.to(col.device)
    inside = ((col[:, None] >= r[:, 0]) & (col[:, None] < r[:, 1])).any(1)
    if not bool(inside.any()):
        return p
    keep = torch.nonzero(~inside).squeeze(1)
    return densify(SetProv.from_pairs(s.rows()[keep], col[keep], s.numel, assume_unique=True))


def empty(numel: int, device) -> Provenance:
    """``numel`` rows with no dependencies."""
    return SetProv.empty(numel, device)
