"""Distance-2 coloring of Jacobian patterns (rows for vjps, columns for jvps)."""
from .greedy import (DEFAULT_ORDERS, ORDERS, Coloring, color_columns, color_rows,  # noqa: F401
                     is_structurally_orthogonal)

__all__ = ["Coloring", "ORDERS", "DEFAULT_ORDERS", "color_columns", "color_rows", "is_structurally_orthogonal"]
