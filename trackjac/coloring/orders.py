"""Vertex orders for the greedy coloring, in a registry.

An order is a function ``(graph, generator) -> permutation of the vertices``,
registered with ``@order("name")``; ``ORDERS`` lists the registered names
(a live view, so an order registered later is accepted everywhere).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Dict

import torch
from torch import Tensor

from .graph import Graph, ragged
from .state import BIG

__all__ = ["order", "get_order", "ORDERS", "DEFAULT_ORDERS"]

OrderFn = Callable[[Graph, torch.Generator], Tensor]
_REGISTRY: Dict[str, OrderFn] = {}


class _Names(Sequence):
    """The registered order names, in registration order; compares and prints like a tuple."""

    def __getitem__(self, i):
        return tuple(_REGISTRY)[i]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __eq__(self, other) -> bool:
        return isinstance(other, (tuple, _Names)) and tuple(self) == tuple(other)

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


ORDERS = _Names()


def order(name: str, *, replace: bool = False) -> Callable[[OrderFn], OrderFn]:
    """Register ``fn(graph, generator) -> vertex permutation`` as the order ``name``."""
    def register(fn: OrderFn) -> OrderFn:
        if name in _REGISTRY and not replace:
            raise ValueError(f"order {name!r} is already registered (pass replace=True)")
        _REGISTRY[name] = fn
        return fn
    return register


def get_order(name: str) -> OrderFn:
    """The registered order ``name``; a ValueError listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown order {name!r}; expected one of {ORDERS}") from None


def _ties_at_random(key_fn: Callable[[Graph, torch.Generator], Tensor]) -> OrderFn:
    """An order by ascending ``key_fn(graph, gen)``, ties broken by a random permutation
    (drawn before the key, so the generator's stream stays what it always was)."""
    def ordered(g: Graph, gen: torch.Generator) -> Tensor:
        tie = torch.randperm(g.n, generator=gen)
        key = key_fn(g, gen)
        return torch.argsort((key - key.min()) * g.n + tie)
    ordered.__doc__ = key_fn.__doc__
    return ordered


@order("largest_first")
@_ties_at_random
def _largest_first(g: Graph, gen: torch.Generator) -> Tensor:
    """Most (distance-2) neighbors first."""
    return -g.distance2_degree()


@order("smallest_last")
@_ties_at_random
def _smallest_last(g: Graph, gen: torch.Generator) -> Tensor:
    """Batched smallest-last: peel every vertex of minimum degree at once (later peels first)."""
    n = g.n
    level = torch.full((n,), 64, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)
    row_len = g.row_len.clone()
    seg = torch.repeat_interleave(torch.arange(n), g.deg)
    for step in range(64):  # the tail barely matters for greedy quality
        deg = torch.zeros(n, dtype=torch.long).index_add_(0, seg, row_len.index_select(0, g.inc_rows) - 1)
        deg = torch.where(alive, deg, BIG)
        peel = alive & (deg <= deg.min())
        level[peel] = step
        alive &= ~peel
        row_len -= torch.zeros_like(row_len).index_add_(0, g.inc_rows, peel.index_select(0, seg).long())
        if not bool(alive.any()):
            break
    return -level


@order("incidence_degree")
@_ties_at_random
def _incidence_degree(g: Graph, gen: torch.Generator) -> Tensor:
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
            rows = torch.unique(ragged(g.inc_rows, g.ptr, g.deg, front))
            cols = torch.unique(ragged(row_cols, row_ptr, g.row_len, rows))
            front = cols[level.index_select(0, cols) < 0]
    return level


@order("random")
def _random(g: Graph, gen: torch.Generator) -> Tensor:
    return torch.randperm(g.n, generator=gen)


@order("natural")
def _natural(g: Graph, gen: torch.Generator) -> Tensor:
    return torch.arange(g.n)


DEFAULT_ORDERS = ("largest_first", "smallest_last", "random", "natural")
