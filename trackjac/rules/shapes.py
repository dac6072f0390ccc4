"""Shape helpers shared by the rule tables."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

import torch

from ..provenance import Provenance, scatter, union

I64 = torch.int64


def codes(shape, device) -> torch.Tensor:
    """Row-major position of every element of a tensor of ``shape``."""
    n = 1
    for s in shape:
        n *= s
    return torch.arange(n, dtype=I64, device=device).reshape(shape)


def bcast(prov: Optional[Provenance], shape, out_shape, mask: Optional[torch.Tensor] = None) -> Optional[Provenance]:
    """Provenance of ``x.expand(out_shape)`` (``mask``: keep only where ``True``)."""
    if prov is None:
        return None
    shape, out_shape = tuple(shape), tuple(out_shape)
    if shape == out_shape and mask is None:
        return prov
    idx = codes(shape, prov.device).expand(out_shape).reshape(-1)
    if mask is not None:
        idx = torch.where(mask.expand(out_shape).reshape(-1), idx, torch.full_like(idx, -1))
    return prov.gather(idx)


def norm_dims(dim, ndim: int) -> List[int]:
    """Reduction dims as a sorted list; ``None`` or ``[]`` means all."""
    if dim is None:
        return list(range(ndim))
    if isinstance(dim, int):
        dim = [dim]
    dim = [d % max(ndim, 1) for d in dim]
    return sorted(set(dim)) if dim else list(range(ndim))


def keep_shape(shape, dims: Iterable[int]):
    dims = set(dims)
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


def reduce(prov: Optional[Provenance], shape, dims: Sequence[int], mask: Optional[torch.Tensor] = None) -> Optional[Provenance]:
    """Union over ``dims``; result rows follow the keepdim shape (``mask``: only where ``True``)."""
    if prov is None:
        return None
    ks = keep_shape(shape, dims)
    grp = codes(ks, prov.device).expand(tuple(shape)).reshape(-1)
    if mask is not None:
        grp = torch.where(mask.reshape(-1), grp, torch.full_like(grp, -1))
    n = 1
    for s in ks:
        n *= s
    return scatter(prov, grp, n)


def slice_union(prov: Optional[Provenance], shape, dims: Sequence[int]) -> Optional[Provenance]:
    """Every element depends on the whole slice along ``dims`` containing it (softmax, norms)."""
    if prov is None:
        return None
    return bcast(reduce(prov, shape, dims), keep_shape(shape, dims), shape)


def take_along(prov: Optional[Provenance], shape, dim: int, index: torch.Tensor) -> Optional[Provenance]:
    """Provenance of ``x.gather(dim, index)``."""
    if prov is None:
        return None
    return prov.gather(codes(shape, prov.device).gather(dim, index))


def union_opt(provs: Sequence[Optional[Provenance]], numel: int, device) -> Optional[Provenance]:
    provs = [p for p in provs if p is not None]
    if not provs:
        return None
    return union(provs, numel)
