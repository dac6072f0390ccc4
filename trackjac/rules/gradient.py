"""Tracing a backward pass: which elements of a gradient are structurally zero.

``hessian_sparsity`` traces the vjp of ``f`` with a tracked cotangent (the *seed*).  Every
backward formula is linear in the incoming gradient, so a tensor whose provenance holds the
seed is a gradient, and each of its elements that does not hold it is zero at every point
(the slots a slice's, an index's or a ``where``'s backward fills with zeros).  Products
with such an element are zero too, whatever the other factor's provenance: ``mul`` cuts
them, where participation (``x * 0``) would keep the other factor.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

import torch

_state = threading.local()


@contextlib.contextmanager
def gradient_seed(seed_id: int) -> Iterator[None]:
    """While tracing a backward pass whose cotangent is the one-element source ``seed_id``."""
    saved = getattr(_state, "seed", None)
    _state.seed = seed_id
    try:
        yield
    finally:
        _state.seed = saved


def structural_zeros(call, a) -> Optional[torch.Tensor]:
    """Boolean mask (``a``'s shape) of the elements of gradient ``a`` that are zero at every point,
    or ``None`` if no seed is traced or ``a`` is no gradient (holds the seed nowhere)."""
    seed = getattr(_state, "seed", None)
    p = call.prov(a) if seed is not None and isinstance(a, torch.Tensor) else None
    if p is None:
        return None
    hit = p.col == seed
    if not bool(hit.any()):
        return None
    live = torch.zeros(p.numel, dtype=torch.bool, device=p.device)
    live[p.rows()[hit]] = True
    return ~live.reshape(a.shape)
