"""``hessian_sparsity``: the Hessian's structural pattern, traced through the gradient's graph.

The Hessian of a scalar ``f`` is the Jacobian of its gradient, so its pattern is
the first-order pattern of ``torch.func.vjp(f)``'s backward: the formulas are
ordinary ATen ops (``cos(x) * g`` for ``sin``, ``g * y`` for ``x * y``, an
``expand`` of a constant ``g`` for ``sum``), each propagated by the same rules
as any forward op. A linear op's backward reads no tracked value, so it adds no
interaction; ``x * y`` makes ``x`` and ``y`` interact and nothing else;
``sin(u)`` makes ``u``'s dependencies interact with each other. This reuses the
whole first-order rule set (convolutions, attention, RNNs, indexing) instead of a
second rule per op.  The cotangent is tracked too, which marks the gradient
elements that are structurally zero (see ``rules/gradient.py``), and the result
keeps an entry only when both of its rows have it (the Hessian is symmetric):
see docs/concepts.md, "Second order".
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

import torch
from torch.overrides import TorchFunctionMode

from .._sparse import bool_coo, structural_coo
from ..dtypes import FLOATING
from .._nesting import flat_nesting
from ..pattern import SparsityPattern, argument_names
from ..rules.gradient import gradient_seed
from .context import _FACTORIES, _RANDOM_FACTORIES
from .origin import RANDOM, drawn_globally
from .signature import Signature
from .sparsity import jacobian_sparsity
from .tensor import Tracked

_F = torch._C._functorch

__all__ = ["hessian_sparsity", "scalar_output", "gradient_function"]


def scalar_output(out, where: str) -> torch.Tensor:
    """``out`` as a 0-d tensor; a clear error unless ``f`` returned a one-element tensor."""
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(f"{where}: f must return a scalar (a 0-d or one-element tensor); got {got}")
    return out.reshape(())


class _GradFactoryMode(TorchFunctionMode):
    """Factories called inside ``torch.func.grad`` return tensors wrapped at the transform's level,
    which ``tracking()`` leaves plain, so a buffer ``f`` allocates and writes tracked values into
    would raise.  Here the plain tensor inside becomes a trackable constant, wrapped again."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func not in _FACTORIES or not isinstance(out, torch.Tensor) or not _F.is_functorch_wrapped_tensor(out):
            return out
        level, inner = _F.maybe_get_level(out), _F.get_unwrapped(out)
        if type(inner) is not torch.Tensor or inner.device.type == "meta":
            return out
        made = Tracked._constant(inner)
        if func in _RANDOM_FACTORIES and drawn_globally(kwargs or {}):
            made._store.origin = RANDOM
        return _F._wrap_for_grad(made, level)


def _scalar_of(f: Callable, args, pos: List[int], where: str) -> Callable:
    """``f`` as a scalar function of the arguments at ``pos``, the others fixed to ``args``."""
    def scalar(*d):
        full = list(args)
        for i, v in zip(pos, d):
            full[i] = v
        return scalar_output(f(*full), where)
    return scalar


def gradient_function(f: Callable, args, where: str):
    """``g(*args)`` returning the tuple of gradients of scalar ``f`` w.r.t. its floating tensor
    arguments (``torch.func.grad``), and those arguments' positions (for evaluating, not tracing)."""
    pos: List[int] = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dtype in FLOATING]
    if not pos:
        raise TypeError(f"{where}: no floating-point tensor among the arguments to differentiate")

    def g(*a):
        scalar = _scalar_of(f, a, pos, where)
        return tuple(torch.func.grad(scalar, argnums=tuple(range(len(pos))))(*[a[i] for i in pos]))

    return g, pos


def _seeded_gradient(f: Callable, args, pos: List[int], where: str) -> Callable:
    """``g(*args, seed)``: the gradients of scalar ``f`` as ``torch.func.vjp`` with cotangent ``seed``
    (tracked too: a gradient element whose provenance lacks it is structurally zero), with
    ``f``'s factory tensors trackable."""
    def g(*a):
        *a, seed = a
        scalar = _scalar_of(f, a, pos, where)
        with _GradFactoryMode():
            out, vjp_fn = torch.func.vjp(scalar, *[a[i] for i in pos])
            with gradient_seed(seed._source.first):
                return tuple(vjp_fn(seed.to(out.dtype)))
    return g


def _entries(p: torch.Tensor, live: Optional[torch.Tensor] = None):
    """Flat keys ``row * n + col`` of the pattern ``p`` (``live``: only its rows where ``True``)."""
    r, c, m, n = structural_coo(p)
    if live is not None:
        keep = live[r]
        r, c = r[keep], c[keep]
    return r, c, m, n


def _intersected(p, live_p, pt, live_pt) -> torch.Tensor:
    """``p & pt.T`` over the live rows of each, as a coalesced sparse COO bool matrix."""
    r1, c1, m, n = _entries(p, live_p)
    r2, c2, _, _ = _entries(pt, live_pt)
    k1, k2 = r1 * n + c1, c2 * n + r2
    key = torch.unique(k1[torch.isin(k1, k2)])
    return bool_coo(key // n, key % n, (m, n), p.device)


def hessian_sparsity(f: Callable, *args, local: bool = False, strict: bool = False,
                     representation: Optional[str] = None, constant_zeros: Optional[str] = None,
                     argnums: Union[None, int, Sequence[int]] = None, has_aux: bool = False,
                     result: str = "nested", **kwargs):
    """Structural sparsity pattern of the Hessian of scalar ``f`` at ``args``.

    The floating tensors of the arguments ``argnums`` (default: every argument) are
    differentiated; arguments may be pytrees, ``kwargs`` are passed to ``f``, and with
    ``has_aux=True`` ``f`` returns ``(value, aux)`` and the result is ``(pattern, aux)``, as
    in ``torch.func.hessian``. ``(i, j)`` is in the pattern
    when ``arg_a.flatten()[i]`` and ``arg_b.flatten()[j]`` interact in ``f``: both
    enter one nonlinear op (a product of the two, a nonlinear function of an
    expression of both), whatever the values. Global mode (default) holds at every
    point with the same control flow; ``local=True`` is the pattern at this point.
    ``constant_zeros`` is as in :func:`~trackjac.jacobian_sparsity` (``x * 0`` keeps
    its interactions unless ``"drop"``).

    Returns:
        A symmetric coalesced sparse COO bool matrix ``(x.numel(), x.numel())``, or for
        several inputs a tuple of tuples ``H[a][b]`` of shape ``(arg_a.numel(), arg_b.numel())``,
        nested like ``torch.autograd.functional.hessian``; with pytree arguments or
        ``argnums``, nested like ``torch.func.hessian`` (the gradient's structure, each leaf
        holding the inputs' structure).
        With ``result="pattern"`` a :class:`~trackjac.SparsityPattern` (outputs and inputs both
        the differentiated arguments, by name).

    Cost: one tracked run of ``f`` and of its backward (``torch.func.vjp``); memory
    proportional to the dependencies of the intermediate tensors and gradients,
    which for the gradient is the Hessian's number of nonzeros.
    """
    if result not in ("nested", "pattern"):
        raise ValueError(f"hessian_sparsity: result must be 'nested' or 'pattern'; got {result!r}")
    names = argument_names(f, len(args))
    sig = None
    if argnums is not None or has_aux or kwargs or any(isinstance(a, (list, tuple, dict)) for a in args):
        sig = Signature(f, args, kwargs, argnums, has_aux, "hessian_sparsity", scalar=True)
        f, args, pos = sig.call, tuple(sig.leaves), sig.diff_pos
    else:
        pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dtype in FLOATING]
    if not pos:
        raise TypeError("hessian_sparsity: no floating-point tensor among the arguments to differentiate")
    g = _seeded_gradient(f, args, pos, "hessian_sparsity")
    seed = torch.ones((), dtype=args[pos[0]].dtype, device=args[pos[0]].device)
    raw = jacobian_sparsity(g, *args, seed, argnums=None if sig is None else (*pos, len(args)), local=local,
                            strict=strict, representation=representation, constant_zeros=constant_zeros)
    k = len(pos)
    # row i of d grad_a / d arg_b is sound for the Hessian's row i; rows of gradient elements that
    # do not read the seed are zero (the gradient is linear in it); the Hessian is symmetric, so
    # an entry must be in row i and in row j: backward formulas multiply zero gradients (a
    # slice's, an overwritten value's) by the forward's values, which only one of the two sees
    live = [torch.zeros(raw[a][k].shape[0], dtype=torch.bool).index_fill_(
        0, structural_coo(raw[a][k])[0], True) for a in range(k)]
    sym = [[_intersected(raw[a][b], live[a], raw[b][a], live[b]) for b in range(k)] for a in range(k)]
    if result == "pattern":
        nesting = sig.hessian_nesting() if sig is not None else flat_nesting(k > 1, k)
        in_names = [f"input {i}" for i in range(k)] if sig is not None else [names[p] for p in pos]
        shapes = [args[p].shape for p in pos]
        res = SparsityPattern(sym, shapes, shapes, out_names=in_names, in_names=in_names, nesting=nesting)
        return (res, sig.aux) if has_aux else res
    if sig is not None:
        res = sig.hessian_nesting().nest(sym)
        return (res, sig.aux) if has_aux else res
    return tuple(tuple(r) for r in sym) if k > 1 else sym[0][0]
