"""Nesting over outputs and inputs, as ``torch.autograd.functional.jacobian`` and ``torch.func.jacrev`` do it."""
from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.utils._pytree import tree_flatten, tree_structure, tree_unflatten


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


def single_of(argnums: Any) -> Optional[bool]:
    """``Nesting.single`` for ``argnums``."""
    return None if argnums is None else isinstance(argnums, int)


def argnums_of(argnums: Union[None, int, Sequence[int]], n: int) -> Optional[Tuple[int, ...]]:
    """``argnums`` (``torch.func`` style: an int or a tuple, negative from the end) normalized."""
    if argnums is None:
        return None
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or not all(isinstance(k, int) for k in nums):
        raise TypeError(f"argnums must be an int or a non-empty tuple of ints; got {argnums!r}")
    norm = tuple(k + n if k < 0 else k for k in nums)
    if any(not 0 <= k < n for k in norm):
        raise ValueError(f"argnums {argnums!r} out of range for {n} positional argument(s)")
    if len(set(norm)) != len(norm):
        raise ValueError(f"argnums {argnums!r} names an argument twice")
    return norm


def legacy_output(out: Any) -> bool:
    """A tensor or a flat tuple/list of tensors: nested like ``torch.autograd.functional.jacobian``."""
    return isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and bool(out)
                                             and all(isinstance(o, torch.Tensor) for o in out))


class Nesting(NamedTuple):
    """How a table ``[output leaf][differentiated leaf]`` is nested.

    ``legacy``: like ``torch.autograd.functional.jacobian`` (``out_tuple``, tuple over inputs when
    there are several); else like ``torch.func.jacrev``: the output pytree ``out_spec``, each leaf
    holding the differentiated arguments' pytrees (``groups``: per argument its spec and, per leaf,
    the index of its input or None) in a tuple over arguments: ``single`` is True for an int
    ``argnums`` (no tuple), False for a tuple ``argnums`` (always a tuple, as ``torch.func``), None
    without ``argnums`` (a tuple when several arguments are differentiated)."""

    legacy: bool
    out_tuple: bool
    out_spec: Any
    groups: list
    single: Optional[bool]
    n_in: int

    @property
    def style(self) -> str:
        """``"autograd"`` (``torch.autograd.functional.jacobian``) or ``"pytree"`` (``torch.func.jacrev``)."""
        return "autograd" if self.legacy else "pytree"

    def inputs(self, blocks: List[Any]) -> Any:
        """One output's blocks (one per differentiated leaf) nested like the arguments."""
        per_arg = [tree_unflatten([None if j is None else blocks[j] for j in idx], spec) for spec, idx in self.groups]
        return per_arg[0] if self.single or (self.single is None and len(per_arg) == 1) else tuple(per_arg)

    def nest(self, table: List[List[Any]]) -> Any:
        if self.legacy:
            return nest(table, self.out_tuple, self.n_in > 1)
        return tree_unflatten([self.inputs(row) for row in table], self.out_spec)

    def grid(self, nested: Any, what: str) -> List[List[Any]]:
        """The inverse of :meth:`nest`: ``table[output leaf][input leaf]``; a ``ValueError`` when
        ``nested`` is not nested this way."""
        dummy = self.nest([[0] * self.n_in for _ in range(self.out_spec.num_leaves)])
        leaves, spec = tree_flatten(nested)
        if spec != tree_structure(dummy):
            raise ValueError(f"{what} must be nested like the Jacobian, {tree_unflatten(['*'] * len(leaves), spec)!r} "
                             f"is not {tree_unflatten(['*'] * len(tree_flatten(dummy)[0]), tree_structure(dummy))!r}")
        return [leaves[j * self.n_in:(j + 1) * self.n_in] for j in range(self.out_spec.num_leaves)]


def nesting_of(out: Any, legacy_in: bool, groups: list, single: Optional[bool], n_in: int) -> Nesting:
    """The nesting of a Jacobian of the output ``out`` (see :class:`Nesting`)."""
    spec = tree_structure(out)
    legacy = legacy_in and legacy_output(out)
    return Nesting(legacy, isinstance(out, (tuple, list)), spec, groups, single, n_in)


def flat_nesting(out_tuple: bool, n_in: int) -> Nesting:
    """Like ``torch.autograd.functional.jacobian``: a tuple over outputs when ``out_tuple``, over
    inputs when there are several."""
    return Nesting(True, out_tuple, None, [], None, n_in)
