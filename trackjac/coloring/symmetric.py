"""Symmetric coloring of Hessian patterns: star (direct recovery) and acyclic (substitution).

One Hessian-vector product per color gives ``C = (H S)^T`` (num_colors, n):
``C[c, i] = sum_{j: color(j) = c} H[i, j]``. A star coloring reads every
entry directly, an acyclic one (fewer colors, never more) by substitution on
its two-colored trees; both read each pair ``{i, j}`` once and mirror it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .._threads import intra_op_threads
from .acyclic import acyclic_coloring, tree_decompression
from .api import PatternLike, _coo
from .result import Coloring
from .star import star_coloring
from .state import num_colors

__all__ = ["SymmetricColoring", "color_symmetric", "is_star_coloring", "is_acyclic_coloring"]

METHODS = ("auto", "star", "acyclic")


@dataclass(frozen=True)
class SymmetricColoring(Coloring, axis="symmetric"):
    """A star or acyclic coloring of a symmetric pattern, evaluated by Hessian-vector products.

    ``lower_bound`` is ``1 + ceil(edges / n)`` (2 with any off-diagonal entry): a
    two-colored forest on ``p`` vertices has fewer than ``p`` edges, so ``k`` colors
    carry at most ``(k - 1) n`` edges. Unlike a column coloring's clique bound, it
    holds for star and acyclic colorings (an arrowhead needs 2, not n).
    """

    method: str = "star"  # "star" or "acyclic"
    pattern: Optional[Tuple[Tensor, Tensor]] = field(default=None, repr=False, compare=False)

    mode = "hvp"

    def _adjacency(self) -> Tuple[Tensor, Tensor]:
        if self.pattern is None:  # Coloring(..., axis="symmetric") cannot know the pattern
            raise ValueError("this SymmetricColoring has no pattern: build it with color_symmetric")
        return self.pattern

    def seeded(self, for_rows, for_columns):
        return for_columns

    def compressed(self, for_rows, for_columns):
        return for_rows

    def _star_read(self) -> Tuple[Tensor, Tensor, Tensor]:
        """Sorted keys ``i * n + j`` of the off-diagonal pattern and where each is read: ``(color, position)``."""
        if not hasattr(self, "_read"):
            n = self.colors.numel()
            r, c = self._adjacency()
            off = r != c
            r, c = r[off], c[off]
            k = max(self.num_colors, 1)
            # how many neighbors of i have color(j): 1 means C[color(j), i] is H[i, j] alone
            _, inv, cnt = torch.unique(r * k + self.colors.index_select(0, c), return_inverse=True,
                                       return_counts=True)
            alone = cnt.index_select(0, inv) == 1
            key = r * n + c
            perm = torch.argsort(key)
            key, r, c, alone = key[perm], r[perm], c[perm], alone[perm]
            # read the pair {i, j} once: both triangles take the choice of (min, max)
            lo, hi = torch.minimum(r, c), torch.maximum(r, c)
            canon = torch.searchsorted(key, lo * n + hi)
            a_lo = alone.index_select(0, canon)  # is hi alone of its color among lo's neighbors
            mirror = torch.searchsorted(key, hi * n + lo)
            a_hi = alone.index_select(0, mirror)
            if not bool((a_lo | a_hi).all()):
                raise ValueError("not a star coloring: some entry cannot be read directly")
            color = torch.where(a_lo, self.colors.index_select(0, hi), self.colors.index_select(0, lo))
            pos = torch.where(a_lo, lo, hi)
            object.__setattr__(self, "_read", (key, color, pos))
        return self._read

    def compressed_index(self, rows, cols, offset=(0, 0)):
        """``H[r, c] = C[color, position]`` (star colorings only). ``offset`` must name a diagonal
        block (equal row and column offsets); ``position`` is then local to it."""
        if self.method != "star":
            raise ValueError("an acyclic coloring recovers entries by substitution, not by a gather: "
                             "use decompression(rows, cols)")
        if offset[0] != offset[1]:
            raise ValueError("a symmetric coloring's compressed index needs a diagonal block (equal offsets)")
        n = self.colors.numel()
        r, c = rows.long() + offset[0], cols.long() + offset[1]
        diag = r == c
        key, color, pos = self._star_read()
        q = r * n + c
        if key.numel():
            at = torch.searchsorted(key, q).clamp(max=key.numel() - 1)
            hit = key.index_select(0, at) == q
        else:
            at, hit = torch.zeros_like(q), torch.zeros_like(diag)
        if not bool((diag | hit).all()):
            raise ValueError("requested entries outside the colored pattern")
        dcol = self.colors.index_select(0, r)
        if not key.numel():
            return dcol, r - offset[0]
        return (torch.where(diag, dcol, color.index_select(0, at)),
                torch.where(diag, r, pos.index_select(0, at)) - offset[0])

    def decompression(self, rows: Tensor, cols: Tensor, device=None) -> Callable[[Tensor], Tensor]:
        """``values = d(C)`` for the entries ``(rows, cols)``: a gather (star) or substitution (acyclic)."""
        if self.method == "star":
            n = self.colors.numel()  # not -1: C may hold no entry
            color, pos = self.compressed_index(rows, cols)
            flat = (color * n + pos).to(device)  # one index_select: faster than 2-D advanced indexing
            return lambda compressed: compressed.reshape(-1).index_select(0, flat)
        r, c = self._adjacency()
        return tree_decompression(self.colors, r, c, rows.long(), cols.long(), device)


def _symmetric_coo(pattern: PatternLike) -> Tuple[Tensor, Tensor, int]:
    """(rows, cols, n) of a square pattern equal to its transpose; ValueError otherwise."""
    rows, cols, m, n = _coo(pattern)
    if m != n:
        raise ValueError(f"a symmetric pattern must be square; got {m} x {n}")
    if rows.numel() and (int(rows.min()) < 0 or int(max(rows.max(), cols.max())) >= n):
        raise ValueError("pattern indices out of range")
    key = rows * n + cols
    if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):  # usually sorted already
        key = torch.unique(key)
        rows, cols = key // n, key % n
    if not torch.equal(key, torch.sort(cols * n + rows).values):
        raise ValueError("pattern is not symmetric: symmetrize it first (pattern | pattern.T)")
    return rows, cols, n


def _lower_bound(rows: Tensor, cols: Tensor, n: int) -> int:
    edges = int((rows < cols).sum())
    if n == 0:
        return 0
    return 1 + -(-edges // n) if edges else 1


def color_symmetric(pattern: PatternLike, *, method: str = "auto", seed: int = 0) -> SymmetricColoring:
    """Symmetric coloring of the (n, n) symmetric ``pattern`` for one Hessian-vector product per color.

    ``method``: ``"star"`` (direct recovery), ``"acyclic"`` (recovery by
    substitution, never more colors in theory, often fewer) or ``"auto"``
    (both; the fewer colors win, star on ties as a gather is cheaper and
    exact). The star coloring is vectorized; the acyclic one loops over
    vertices in Python, in natural order (0.4 s for a 100k tridiagonal pattern,
    2 s for a band of half-width 5). ``seed`` breaks the star coloring's ties.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    with intra_op_threads(1):
        rows, cols, n = _symmetric_coo(pattern)
    lower = _lower_bound(rows, cols, n)
    if rows.numel() == 0:  # no structural nonzero: nothing to evaluate
        return SymmetricColoring(torch.zeros(n, dtype=torch.long), 0, "symmetric", "empty", 0, "star", (rows, cols))
    with intra_op_threads(1):
        best = None
        if method in ("star", "auto"):
            colors = star_coloring(rows, cols, n, seed) if n else torch.zeros(0, dtype=torch.long)
            best = SymmetricColoring(colors, num_colors(colors), "symmetric", "hubs", lower, "star", (rows, cols))
        if method in ("acyclic", "auto") and not (best is not None and best.num_colors <= lower):
            colors = acyclic_coloring(rows, cols, n, torch.arange(n))
            k = num_colors(colors)
            if best is None or k < best.num_colors:
                best = SymmetricColoring(colors, k, "symmetric", "natural", lower, "acyclic", (rows, cols))
    return best


def _proper_offdiag(rows: Tensor, cols: Tensor, colors: Tensor, n: int) -> Optional[Tuple[Tensor, Tensor]]:
    colors = colors.detach().cpu().long()
    if colors.shape != (n,) or (n and int(colors.min()) < 0):
        return None
    off = rows != cols
    r, c = rows[off], cols[off]
    if bool((colors.index_select(0, r) == colors.index_select(0, c)).any()):
        return None
    return r, c


def is_star_coloring(pattern: PatternLike, colors: Tensor) -> bool:
    """True when ``colors`` is proper on the symmetric ``pattern`` and no path on 4 vertices is 2-colored.

    Exact: a 2-colored path ``w-x-y-z`` exists iff some edge ``(x, y)`` has ``x``
    with two neighbors of ``color(y)`` and ``y`` with two of ``color(x)``.
    """
    rows, cols, n = _symmetric_coo(pattern)
    rc = _proper_offdiag(rows, cols, colors, n)
    if rc is None:
        return False
    r, c = rc
    if not r.numel():
        return True
    colors = colors.detach().cpu().long()
    k = int(colors.max()) + 1
    _, inv, cnt = torch.unique(r * k + colors.index_select(0, c), return_inverse=True, return_counts=True)
    many = cnt.index_select(0, inv) > 1  # entry (r, c): r has another neighbor of color(c)
    key = r * n + c
    perm = torch.argsort(key)
    many_sorted = many[perm]
    mirror = torch.searchsorted(key[perm], c * n + r)
    return not bool((many & many_sorted.index_select(0, mirror)).any())


def is_acyclic_coloring(pattern: PatternLike, colors: Tensor) -> bool:
    """True when ``colors`` is proper on the symmetric ``pattern`` and no cycle is 2-colored.

    Every two-colored subgraph must be a forest: its nodes ``(vertex, other color)``
    number edges + components.
    """
    rows, cols, n = _symmetric_coo(pattern)
    rc = _proper_offdiag(rows, cols, colors, n)
    if rc is None:
        return False
    r, c = rc
    up = r < c
    u, v = r[up], c[up]
    if not u.numel():
        return True
    colors = colors.detach().cpu().long()
    k = int(colors.max()) + 1
    _, inv = torch.unique(torch.cat([u * k + colors.index_select(0, v), v * k + colors.index_select(0, u)]),
                          return_inverse=True)
    E = u.numel()
    N = int(inv.max()) + 1
    return E == N - _components(inv[:E], inv[E:], N)


def _components(a: Tensor, b: Tensor, N: int) -> int:
    """Connected components of the graph on N nodes with edges ``(a, b)``: min-label hooking
    with pointer jumping, O(log N) rounds on paths."""
    label = torch.arange(N)
    while True:
        la, lb = label.index_select(0, a), label.index_select(0, b)
        m = torch.minimum(la, lb)
        new = label.clone()
        new.scatter_reduce_(0, la, m, "amin")  # hook roots onto smaller labels
        new.scatter_reduce_(0, lb, m, "amin")
        new.scatter_reduce_(0, a, m, "amin")
        new.scatter_reduce_(0, b, m, "amin")
        while True:  # shortcut to the root
            nxt = new.index_select(0, new)
            if torch.equal(nxt, new):
                break
            new = nxt
        if torch.equal(new, label):
            return int((label == torch.arange(N)).sum())
        label = new
