"""Nesting over outputs and inputs, as ``torch.autograd.functional.jacobian`` or ``torch.func.jacrev`` do it."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch.utils._pytree import tree_unflatten


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


def nest_pytree(table: List[List[Any]], out_spec: Any, in_groups: Sequence[Tuple[Any, Sequence[Optional[int]]]],
                in_single: bool) -> Any:
    """Nest ``table[output leaf][source]`` like ``torch.func.jacrev``: the output's pytree
    (``out_spec``), each leaf holding the differentiated arguments' structure.

    ``in_groups``: per differentiated argument, its pytree spec and, per leaf, the index of
    its source (``None`` for a leaf not tracked); ``in_single``: ``argnums`` was an int."""
    def inputs(row: List[Any]) -> Any:
        per_arg = [tree_unflatten([None if j is None else row[j] for j in idx], spec) for spec, idx in in_groups]
        return per_arg[0] if in_single or len(per_arg) == 1 else tuple(per_arg)

    return tree_unflatten([inputs(row) for row in table], out_spec)
