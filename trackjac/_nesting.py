"""Nesting over outputs and inputs, as ``torch.autograd.functional.jacobian`` does it."""
from __future__ import annotations

from typing import Any, List, Tuple

import torch


def output_list(out: Any, where: str) -> Tuple[list, bool]:
    """The function's outputs as a list, and whether it returned a tuple (or list)."""
    is_tuple = isinstance(out, (tuple, list))
    outs = list(out) if is_tuple else [out]
    for j, o in enumerate(outs):
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"{where}: the function must return a tensor or a tuple of tensors; "
                            f"output {j} is {type(o).__name__}")
    return outs, is_tuple


def nest(table: List[List[Any]], out_tuple: bool, in_tuple: bool) -> Any:
    """Nest ``table[i][j]`` (output i, input j) like ``torch.autograd.functional.jacobian``."""
    rows = [tuple(r) if in_tuple else r[0] for r in table]
    return tuple(rows) if out_tuple else rows[0]
