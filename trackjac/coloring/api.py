"""The public coloring functions: each order seeds a greedy coloring, the best is refined."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._sparse import structural_coo
from .._threads import intra_op_threads
from .dedupe import distinct_in_rows, merge_identical_rows
from .graph import Graph
from .greedy import SMALL, class_order, iterated_greedy, sequential_greedy, speculative_greedy
from .orders import DEFAULT_ORDERS, get_order
from .result import Coloring
from .search import reduce_classes
from .state import num_colors

__all__ = ["color_columns", "color_rows", "is_structurally_orthogonal", "PatternLike", "DENSE", "IDENTITY"]

_BIG_N = 200_000  # above this many vertices, only the first order seeds (time)
_WINDOW = 15  # local-search rounds within which the uncolored count must halve
DENSE = 0.9  # colors >= DENSE x vertices save too little to pay for coloring: identity instead
IDENTITY = "identity"  # the ``order`` of an identity coloring (each vertex its own color)

PatternLike = Union[Tensor, Tuple[Tensor, Tensor, Tuple[int, int]]]


def _coo(pattern: PatternLike) -> Tuple[Tensor, Tensor, int, int]:
    """(rows, cols, m, n) on the CPU from a sparse/dense tensor or (rows, cols, (m, n))."""
    if isinstance(pattern, tuple):
        rows, cols, (m, n) = pattern
        return rows.detach().cpu().long(), cols.detach().cpu().long(), int(m), int(n)
    if not isinstance(pattern, Tensor) or pattern.dim() != 2:
        raise TypeError("pattern must be a 2-D tensor (sparse or dense) or (rows, cols, (m, n))")
    return structural_coo(pattern)


def _identity(n: int, axis: str, lower: int) -> Coloring:
    """Every vertex its own color: what dense jacrev/jacfwd do, and always valid."""
    return Coloring(torch.arange(n), n, axis, IDENTITY, lower)


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
    """Color the columns of ``(rows, cols)`` (m, n); ``axis`` only names the result.

    The work is bounded by what it can save: a pattern whose clique bound (longest
    row) or greedy count is within ``DENSE`` of ``n`` gets the identity coloring,
    and refinement stops as soon as the count reaches the bound.
    """
    if orders is None:
        orders = DEFAULT_ORDERS[:1] if n > _BIG_N else DEFAULT_ORDERS
    if isinstance(orders, str):
        orders = (orders,)
    order_fns = [get_order(o) for o in orders]  # unknown names fail before any work
    if rows.numel() == 0:  # no structural nonzero: nothing to evaluate
        return Coloring(torch.zeros(n, dtype=torch.long), 0, axis, "empty", 0)
    lower = int(torch.bincount(rows, minlength=m).max())
    if lower >= DENSE * n:  # (nearly) dense: no coloring can save more than 10%
        return _identity(n, axis, lower)
    merged = merge_identical_rows(rows, cols, m, n)
    if merged is not None:
        colors, name = _search(Graph(*merged, n), lower, order_fns, orders, polish, local_search, seed)
        if distinct_in_rows(rows, cols, m, colors):
            return _finish(colors, n, axis, name, lower)
    colors, name = _search(Graph(rows, cols, m, n), lower, order_fns, orders, polish, local_search, seed)
    return _finish(colors, n, axis, name, lower)


def _finish(colors: Tensor, n: int, axis: str, name: str, lower: int) -> Coloring:
    if num_colors(colors) >= DENSE * n:
        return _identity(n, axis, lower)
    return Coloring(colors, num_colors(colors), axis, name, lower)


def _search(g: Graph, lower: int, order_fns: list, orders: Sequence[str], polish: int,
            local_search: Union[bool, int], seed: int) -> Tuple[Tensor, str]:
    """The best greedy coloring over ``orders``, refined: (colors, name of the winning order)."""
    n = g.n
    gen = torch.Generator().manual_seed(seed)
    best: Optional[Tuple[int, Tensor, str]] = None
    greedy = sequential_greedy if g.inc_rows.numel() <= SMALL else speculative_greedy
    for name, order_fn in zip(orders, order_fns):
        colors = greedy(g, order_fn(g, gen))
        for step in range(polish):  # iterated greedy never increases the count
            if num_colors(colors) <= lower:
                break
            colors = iterated_greedy(g, colors, class_order(colors, num_colors(colors), gen, step))
        k = num_colors(colors)
        if best is None or k < best[0]:
            best = (k, colors, name)
        if k <= lower:
            break
    assert best is not None
    k, colors, name = best
    if k >= DENSE * n:
        return colors, name
    if local_search and k > lower:
        rounds = local_search if not isinstance(local_search, bool) else (120 if n <= _BIG_N else 80)
        # spend in proportion to what can be saved: 4 windows per class above the bound
        rounds = min(int(rounds), 4 * _WINDOW * (k - lower))
        colors = reduce_classes(g, colors, lower, gen, window=_WINDOW, rounds=rounds)
    return colors, name


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
    search drops classes while it can (at most 60 rounds per color above the
    clique bound); all of it stops at the bound. A
    (nearly) dense pattern (bound or greedy count >= ``DENSE`` x columns) gets
    the identity coloring, ``order == IDENTITY``. Deterministic for a given ``seed``.
    Returns a :class:`~trackjac.coloring.result.ColumnColoring`.
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
    """Distance-2 coloring of the rows of ``pattern``: rows of one color share no column.

    Returns a :class:`~trackjac.coloring.result.RowColoring`.
    """
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
