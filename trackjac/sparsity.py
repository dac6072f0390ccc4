"""``jacobian_sparsity``: the Jacobian's structural pattern, nested like ``torch.autograd.functional.jacobian``."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import torch

from .tracked import DIFFERENTIABLE, FLOATING, Tracked  # noqa: I001  (before dispatch: import cycle)
from .context import config, tracking
from .dispatch import _Threads


def track_args(args) -> Tuple[list, List[int]]:
    """Wrap every floating tensor argument as a source; returns the new args and their positions."""
    new, pos = [], []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and not isinstance(a, Tracked) and a.dtype in FLOATING:
            new.append(Tracked(a))
            pos.append(i)
        else:
            new.append(a)
    if not pos:
        raise TypeError("jacobian_sparsity: no floating-point tensor among the arguments to track")
    return new, pos


def output_list(out: Any, where: str) -> Tuple[list, bool]:
    """The function's outputs as a list, and whether it returned a tuple."""
    is_tuple = isinstance(out, (tuple, list))
    outs = list(out) if is_tuple else [out]
    for o in outs:
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"{where}: the function must return a tensor or a tuple of tensors, "
                            f"got {type(o).__name__}")
    return outs, is_tuple


def nest(table, out_tuple: bool, in_tuple: bool):
    """Nest ``table[i][j]`` (output i, input j) like ``torch.autograd.functional.jacobian``."""
    rows = [tuple(r) if in_tuple else r[0] for r in table]
    return tuple(rows) if out_tuple else rows[0]


def pattern_of(y: torch.Tensor, x: Tracked, layout=torch.sparse_coo) -> torch.Tensor:
    """2-D boolean pattern ``(y.numel(), x.numel())``."""
    src = x._source
    if isinstance(y, Tracked) and y.dtype in DIFFERENTIABLE:
        return y._prov().to_coo(src.first, src.numel, layout=layout)
    empty = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0, dtype=torch.bool),
                                    (y.numel(), src.numel), is_coalesced=True, check_invariants=False).to(y.device)
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
    up to ``trackjac._bits.AUTO_MAX_INPUTS`` tracked input elements.  The pattern is the same.
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
    with _Threads(config().threads), torch._C.DisableTorchFunction():
        table = [[pattern_of(o, x, layout) for x in srcs] for o in outs]
    return nest(table, out_tuple, len(srcs) > 1)
