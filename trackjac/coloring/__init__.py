"""Distance-2 coloring of Jacobian patterns (rows for vjps, columns for jvps).

Columns ``j`` and ``k`` conflict when some row holds both; a column coloring
gives conflicting columns different colors, so one jvp per color recovers all
of them. A row coloring is the column coloring of the transpose (one vjp per
color). Each vertex order seeds a vectorized greedy coloring, iterated greedy
and class elimination refine the best; the result owns its decompression.

Modules, one job each: ``graph`` (incidence tables), ``state`` (row bit
words, clash detection), ``orders`` (the vertex-order registry), ``greedy``
(speculative and iterated greedy), ``search`` (class elimination), ``result``
(result classes and their decompression), ``api`` (the functions below).
"""
from .api import DENSE, IDENTITY, color_columns, color_rows, is_structurally_orthogonal
from .orders import DEFAULT_ORDERS, ORDERS, get_order, order
from .result import Coloring, ColumnColoring, RowColoring
from .symmetric import SymmetricColoring, color_symmetric, is_acyclic_coloring, is_star_coloring

__all__ = ["Coloring", "RowColoring", "ColumnColoring", "ORDERS", "DEFAULT_ORDERS", "order", "get_order", "DENSE",
           "IDENTITY", "color_columns", "color_rows", "is_structurally_orthogonal",
           "SymmetricColoring", "color_symmetric", "is_star_coloring", "is_acyclic_coloring"]
