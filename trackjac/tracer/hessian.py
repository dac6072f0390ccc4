"""``hessian_sparsity``: the Hessian's structural pattern, traced through the gradient's graph.

The Hessian of a scalar ``f`` is the Jacobian of ``torch.func.grad(f)``, so its
pattern is the first-order pattern of the gradient: the backward formulas are
ordinary ATen ops (``cos(x) * g`` for ``sin``, ``g * y`` for ``x * y``, an
``expand`` of a constant ``g`` for ``sum``), each propagated by the same rules
as any forward op. A linear op's backward reads no tracked value, so it adds no
interaction; ``x * y`` makes ``x`` and ``y`` interact and nothing else;
``sin(u)`` makes ``u``'s dependencies interact with each other. This reuses the
whole first-order rule set (convolutions, attention, RNNs, indexing) instead of a
second rule per op, and is as tight as a per-element pair tracer wherever the
backward formulas are (see docs/concepts.md, "Second order").
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

from .._sparse import bool_coo, structural_coo
from ..dtypes import FLOATING
from .sparsity import jacobian_sparsity

__all__ = ["hessian_sparsity", "scalar_output", "gradient_function"]


def scalar_output(out, where: str) -> torch.Tensor:
    """``out`` as a 0-d tensor; a clear error unless ``f`` returned a one-element tensor."""
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(f"{where}: f must return a scalar (a 0-d or one-element tensor); got {got}")
    return out.reshape(())


def gradient_function(f: Callable, args, where: str):
    """``g(*args)`` returning the tuple of gradients of scalar ``f`` w.r.t. its floating tensor
    arguments (``torch.func.grad``), and those arguments' positions."""
    pos: List[int] = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dtype in FLOATING]
    if not pos:
        raise TypeError(f"{where}: no floating-point tensor among the arguments to differentiate")

    def g(*a):
        def scalar(*d):
            full = list(a)
            for i, v in zip(pos, d):
                full[i] = v
            return scalar_output(f(*full), where)

        return tuple(torch.func.grad(scalar, argnums=tuple(range(len(pos))))(*[a[i] for i in pos]))

    return g, pos


def _symmetrized(p: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
    """``p | pt.T`` as a coalesced sparse COO bool matrix."""
    r1, c1, m, n = structural_coo(p)
    r2, c2, _, _ = structural_coo(pt)
    rows, cols = torch.cat([r1, c2]), torch.cat([c1, r2])
    key = torch.unique(rows * n + cols)
    return bool_coo(key // n, key % n, (m, n), p.device)


def hessian_sparsity(f: Callable, *args, local: bool = False, strict: bool = False,
                     representation: Optional[str] = None, constant_zeros: Optional[str] = None):
    """Structural sparsity pattern of the Hessian of scalar ``f`` at ``args``.

    Every floating tensor argument is differentiated. ``(i, j)`` is in the pattern
    when ``arg_a.flatten()[i]`` and ``arg_b.flatten()[j]`` interact in ``f``: both
    enter one nonlinear op (a product of the two, a nonlinear function of an
    expression of both), whatever the values. Global mode (default) holds at every
    point with the same control flow; ``local=True`` is the pattern at this point.
    ``constant_zeros`` is as in :func:`~trackjac.jacobian_sparsity` (``x * 0`` keeps
    its interactions unless ``"drop"``).

    Returns:
        A symmetric coalesced sparse COO bool matrix ``(x.numel(), x.numel())``, or for
        several inputs a tuple of tuples ``H[a][b]`` of shape ``(arg_a.numel(), arg_b.numel())``,
        nested like ``torch.autograd.functional.hessian``.

    Cost: one tracked run of ``f`` and of its backward (``torch.func.grad``); memory
    proportional to the dependencies of the intermediate tensors and gradients,
    which for the gradient is the Hessian's number of nonzeros.
    """
    g, pos = gradient_function(f, args, "hessian_sparsity")
    raw = jacobian_sparsity(g, *args, local=local, strict=strict, representation=representation,
                            constant_zeros=constant_zeros)
    k = len(pos)
    table = [list(raw[a]) for a in range(k)] if k > 1 else [[raw[0] if isinstance(raw, tuple) else raw]]
    sym = [[_symmetrized(table[a][b], table[b][a]) for b in range(k)] for a in range(k)]
    return tuple(tuple(r) for r in sym) if k > 1 else sym[0][0]
