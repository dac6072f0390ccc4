"""Coloring results, which own their decompression.

A row coloring seeds the rows (one vjp per color): the compressed product is
``C = S J`` with ``S`` the (colors x rows) one-hot seeds, and a structural
nonzero ``J[i, j]`` sits at ``C[color(i), j]``. A column coloring seeds the
columns (one jvp per color): ``C = S J^T``, ``J[i, j]`` at ``C[color(j), i]``.
Everything that differs between the two is in these classes, so that code
evaluating a Jacobian (:class:`trackjac.Plan`) asks the result instead of
branching; a new kind of coloring is a new subclass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, Tuple, TypeVar

import torch
from torch import Tensor

__all__ = ["Coloring", "RowColoring", "ColumnColoring"]

T = TypeVar("T")


@dataclass(frozen=True)
class Coloring:
    """A coloring: ``colors[v]`` in ``[0, num_colors)`` for each column (or row).

    ``Coloring(colors, k, axis, ...)`` builds the subclass for ``axis``
    (:class:`ColumnColoring` or :class:`RowColoring`).
    """

    colors: Tensor
    num_colors: int
    axis: str  # "columns" or "rows"
    order: str  # the vertex order that seeded the kept coloring
    lower_bound: int  # a clique size: max nonzeros in a row (columns) or column (rows)

    _by_axis: ClassVar[Dict[str, type]] = {}
    mode: ClassVar[str]  # the product that evaluates it: "rev" (vjp) or "fwd" (jvp)

    def __init_subclass__(cls, axis: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        if axis:
            Coloring._by_axis[axis] = cls

    def __post_init__(self):
        if not isinstance(self, Coloring._by_axis.get(self.axis, ())):
            raise ValueError(f"{type(self).__name__} cannot have axis={self.axis!r}")

    def __new__(cls, *args, **kwargs):
        if cls is Coloring:  # dispatch on axis, so that existing callers keep working
            axis = kwargs["axis"] if "axis" in kwargs else args[2] if len(args) > 2 else None
            if axis not in Coloring._by_axis:
                raise ValueError(f"axis must be one of {tuple(Coloring._by_axis)}; got {axis!r}")
            cls = Coloring._by_axis[axis]
        return super().__new__(cls)

    # -- the interface ----------------------------------------------------------

    def seeded(self, for_rows: T, for_columns: T) -> T:
        """Whichever of the two belongs to the seeded side (the colored vertices)."""
        raise NotImplementedError

    def compressed(self, for_rows: T, for_columns: T) -> T:
        """Whichever of the two belongs to the other side, along which products come back."""
        raise NotImplementedError

    def compressed_index(self, rows: Tensor, cols: Tensor, offset: Tuple[int, int] = (0, 0)
                         ) -> Tuple[Tensor, Tensor]:
        """``(color, position)`` of structural nonzeros ``(rows, cols)``: ``J[r, c] = C[color, position]``.

        ``rows, cols`` may be local to a block of the colored pattern starting
        at ``offset`` (row, column); ``position`` is then local too.
        """
        raise NotImplementedError

    def seed_colors(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Each seeded vertex's color, -1 where it holds no nonzero of ``(rows, cols)``.

        Empty vertices add nothing to any product, and were the pattern wrong,
        seeding them could only contaminate other values.
        """
        used = torch.zeros(self.colors.numel(), dtype=torch.bool)
        used[self.seeded(rows, cols)] = True
        return torch.where(used, self.colors, -1)

    # -- conveniences built on it -------------------------------------------------

    def seed_matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """One-hot seeds ``S`` (num_colors, seeded vertices): ``S[c, v] = colors[v] == c``."""
        return (self.colors.unsqueeze(0) == torch.arange(self.num_colors).unsqueeze(1)).to(dtype)

    def decompress(self, compressed: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Values of the nonzeros ``(rows, cols)`` from ``compressed`` (num_colors, other side)."""
        color, pos = self.compressed_index(rows, cols)
        return compressed.reshape(compressed.shape[0], -1)[color, pos]

    def decompression(self, rows: Tensor, cols: Tensor, device=None) -> Callable[[Tensor], Tensor]:
        """``values = d(compressed)`` for the nonzeros ``(rows, cols)``, indices precomputed on ``device``.

        ``compressed`` is the whole product (num_colors, other side). Colorings whose values
        are not a plain gather (acyclic coloring's substitution) override this."""
        color, pos = (t.to(device) for t in self.compressed_index(rows, cols))
        return lambda compressed: compressed.reshape(compressed.shape[0], -1)[color, pos]


class RowColoring(Coloring, axis="rows"):
    """Rows of one color share no column: one vjp per color, ``J[i, j] = C[color(i), j]``."""

    mode = "rev"

    def seeded(self, for_rows, for_columns):
        return for_rows

    def compressed(self, for_rows, for_columns):
        return for_columns

    def compressed_index(self, rows, cols, offset=(0, 0)):
        return self.colors.index_select(0, rows + offset[0]), cols


class ColumnColoring(Coloring, axis="columns"):
    """Columns of one color share no row: one jvp per color, ``J[i, j] = C[color(j), i]``."""

    mode = "fwd"

    def seeded(self, for_rows, for_columns):
        return for_columns

    def compressed(self, for_rows, for_columns):
        return for_rows

    def compressed_index(self, rows, cols, offset=(0, 0)):
        return self.colors.index_select(0, cols + offset[1]), rows
