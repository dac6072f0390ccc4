"""``jacobian_sparsity``: the Jacobian's structural pattern, nested like ``torch.autograd.functional.jacobian``."""
from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import torch

from .._nesting import nest, output_list
from .._sparse import bool_coo, empty_coo
from .._threads import intra_op_threads
from ..dtypes import DIFFERENTIABLE, FLOATING
from .context import tracking
from .state import config
from .tensor import Tracked


def track_args(args) -> Tuple[list, List[int]]:
    """Wrap every floating tensor argument as a source; returns the new args and their positions.

    The sources refuse in-place writes (``f`` must not change its caller's tensors)."""
    new, pos = [], []
    for i, a in enumerate(args):
        if isinstance(a, Tracked):
            raise TypeError(f"jacobian_sparsity: argument {i} is already a Tracked tensor; pass the plain "
                            "tensor (its .value): the function's floating arguments are tracked for you")
        if isinstance(a, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(a):
            raise TypeError(
                f"argument {i} is inside a torch.func transform (vmap, grad, jacrev ...): trackjac traces "
                "concrete tensors. Call jacobian_sparsity / jacobian / jacobian_plan outside the transform "
                "(a plan built once can then be evaluated per sample), or use torch.func inside f instead.")
        if isinstance(a, torch.Tensor) and a.dtype in FLOATING:
            t = Tracked(a)
            t._store.argument = i
            new.append(t)
            pos.append(i)
        else:
            new.append(a)
    if not pos:
        raise TypeError("jacobian_sparsity: no floating-point tensor among the arguments to track")
    return new, pos


def pattern_of(y: torch.Tensor, x: Tracked, layout=torch.sparse_coo) -> torch.Tensor:
    """2-D boolean pattern ``(y.numel(), x.numel())``."""
    src = x._source
    if isinstance(y, Tracked) and y.dtype in DIFFERENTIABLE:
        return y._prov().to_coo(src.first, src.numel, layout=layout)
    empty = empty_coo((y.numel(), src.numel), y.device)
    return empty.to_dense() if layout == torch.strided else empty


class JacobianClassification(NamedTuple):
    """``jacobian_sparsity(..., classify=True)``: the pattern split into entries whose derivative is
    the same at every point (``constant``) and the others (``variable``), each nested like the
    pattern; disjoint, their union is the pattern."""

    constant: Any
    variable: Any


def _split(y: torch.Tensor, x: Tracked, layout, unsure: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(constant, variable)`` 2-D patterns of ``y`` w.r.t. ``x`` (``unsure``: all variable)."""
    src = x._source
    d = pattern_of(y, x)
    nl = y._nonlinear() if isinstance(y, Tracked) and y.dtype in DIFFERENTIABLE else None
    if unsure:
        nl = y._prov()
    shape = (y.numel(), src.numel)
    if nl is None:
        const, var = d, empty_coo(shape, y.device)
    else:
        di = d.indices()
        ni = nl.to_coo(src.first, src.numel).indices()
        # both coalesced: row-major keys ascending.  N is within D by construction; matching keys
        # (not assuming it) keeps the split exactly a partition of D
        dk, nk = di[0] * shape[1] + di[1], ni[0] * shape[1] + ni[1]
        at = torch.searchsorted(dk, nk).clamp_(max=max(dk.numel() - 1, 0))
        hit = torch.zeros(dk.numel(), dtype=torch.bool, device=dk.device)
        if dk.numel():
            hit[at[dk[at] == nk]] = True
        const = bool_coo(di[0][~hit], di[1][~hit], shape, y.device)
        var = bool_coo(di[0][hit], di[1][hit], shape, y.device)
    if layout == torch.strided:
        return const.to_dense(), var.to_dense()
    return const, var


def jacobian_sparsity(f: Callable, *args, local: bool = False, strict: bool = False,
                      layout=torch.sparse_coo, representation: Optional[str] = None,
                      constant_zeros: Optional[str] = None, classify: bool = False):
    """Structural sparsity pattern of the Jacobian of ``f`` at ``args``.

    Every floating tensor argument is tracked; other arguments are passed as they are.
    ``(i, j)`` is in the pattern when data flows from ``arg.flatten()[j]`` into
    ``out.flatten()[i]`` through differentiable ops, whatever the values (an input
    multiplied by zero still participates).  In global mode (default) the pattern holds
    at every point that takes the same Python control-flow path; ``local=True`` resolves
    value-dependent choices (``where``, ``max``, ``relu`` ...) at this point only and,
    unless ``constant_zeros="keep"``, makes products value-aware.
    ``constant_zeros="drop"`` (the default with ``local=True``) makes products value-aware:
    an exact zero that depends on nothing (``x * 0``, an ``eye`` mask, causal attention's
    masked weights, a dropped dropout channel) no longer connects the other factor (see
    :func:`~trackjac.tracking`).

    Returns:
        A coalesced sparse COO boolean matrix ``(out.numel(), arg.numel())`` (dense with
        ``layout=torch.strided``), nested like ``torch.autograd.functional.jacobian``: a
        tuple over tracked inputs when there are several, inside a tuple over outputs
        when ``f`` returns a tuple.

    Cost: time and memory proportional to the number of (element, input) dependencies
    of the intermediate tensors, not to ``outputs x inputs`` (``representation="sets"``);
    with few inputs packed bitmasks are faster (``"bits"``: ``numel x n_inputs`` bits per
    intermediate).  ``"auto"`` (the default, see :func:`~trackjac.tracking`) picks bitmasks
    up to ``trackjac.provenance.policy.AUTO_MAX_INPUTS`` tracked input elements.  The pattern is the same.

    ``classify=True`` returns a :class:`JacobianClassification` ``(constant, variable)``: an entry
    is *constant* when ``arg[j]`` reaches ``out[i]`` only through ops linear in their tracked
    arguments (``A @ x``, stencils, sums, indexing with fixed indices, ``x * c`` with ``c`` not
    computed from tracked values), so its value is the same at every point; every other entry
    (``x * x``, ``sin``, ``where`` on a condition computed from ``x``, an index computed from
    ``x``, dropout) is *variable*.  Linearity comes from PyTorch's ``derivatives.yaml``; where it
    is unsure an entry is variable.  Not with ``local=True`` (constancy is about all points).
    """
    if classify and local:
        raise ValueError("jacobian_sparsity: classify=True needs local=False (an entry is constant when its "
                         "value is the same at every point, which a pattern at one point cannot say)")
    with tracking(local=local, strict=strict, representation=representation,
                  constant_zeros=constant_zeros) as cfg:
        saved, cfg.n_inputs = cfg.n_inputs, sum(
            a.numel() for a in args if isinstance(a, torch.Tensor) and a.dtype in FLOATING)
        saved_classify = cfg.classify, cfg.read_varying
        cfg.classify, cfg.read_varying = classify, False
        try:
            try:
                targs, pos = track_args(args)
            finally:
                cfg.n_inputs = saved
            out = f(*targs)
            unsure = cfg.read_varying
        finally:
            cfg.classify, cfg.read_varying = saved_classify
    outs, out_tuple = output_list(out, "jacobian_sparsity")
    srcs = [targs[i] for i in pos]
    with intra_op_threads(config().threads), torch._C.DisableTorchFunction():
        if not classify:
            table = [[pattern_of(o, x, layout) for x in srcs] for o in outs]
            return nest(table, out_tuple, len(srcs) > 1)
        split = [[_split(o, x, layout, unsure) for x in srcs] for o in outs]
    return JacobianClassification(*(nest([[s[k] for s in row] for row in split], out_tuple, len(srcs) > 1)
                                    for k in range(2)))
