"""``jacobian_sparsity``: the Jacobian's structural pattern, nested like ``torch.autograd.functional.jacobian``."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from .._nesting import nest, output_list
from .._sparse import empty_coo
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


def jacobian_sparsity(f: Callable, *args, local: bool = False, strict: bool = False,
                      layout=torch.sparse_coo, representation: Optional[str] = None,
                      constant_zeros: Optional[str] = None):
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
    """
    with tracking(local=local, strict=strict, representation=representation,
                  constant_zeros=constant_zeros) as cfg:
        saved, cfg.n_inputs = cfg.n_inputs, sum(
            a.numel() for a in args if isinstance(a, torch.Tensor) and a.dtype in FLOATING)
        try:
            targs, pos = track_args(args)
        finally:
            cfg.n_inputs = saved
        out = f(*targs)
    outs, out_tuple = output_list(out, "jacobian_sparsity")
    srcs = [targs[i] for i in pos]
    with intra_op_threads(config().threads), torch._C.DisableTorchFunction():
        table = [[pattern_of(o, x, layout) for x in srcs] for o in outs]
    return nest(table, out_tuple, len(srcs) > 1)
