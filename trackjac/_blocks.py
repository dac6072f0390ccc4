"""Which side a flat tuple of Jacobian blocks runs over: inputs (one output) or outputs (one input)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

NESTINGS = ("inputs", "outputs")


def flat_side(shapes: Sequence[Tuple[int, int]], nesting: Optional[str], where: str) -> str:
    """``"inputs"`` or ``"outputs"`` for blocks of these 2-D ``shapes``.

    ``jacobian_sparsity`` returns a flat tuple for either; the shapes decide when they can
    (blocks over inputs share their row count, blocks over outputs their column count), else
    ``nesting`` does (default ``"inputs"``)."""
    if nesting is not None:
        if nesting not in NESTINGS:
            raise ValueError(f"{where}: nesting must be 'inputs' or 'outputs'; got {nesting!r}")
        return nesting
    same_rows = len({s[0] for s in shapes}) == 1
    same_cols = len({s[1] for s in shapes}) == 1
    return "outputs" if same_cols and not same_rows else "inputs"


def plan_nesting(plan: object) -> Optional[str]:
    """The side a plan's flat tuple of blocks runs over (it knows its number of inputs), or ``None``."""
    specs = getattr(getattr(plan, "structure", None), "in_specs", None)
    if specs is None:
        return None
    return "outputs" if len(specs) == 1 else "inputs"
