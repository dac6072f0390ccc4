"""The tracking context: mode flags and trackable factory tensors.

Inside ``with tracking():`` tensors created by factory functions (``zeros``,
``empty``, ``full``, ``arange``, ``tensor``, ``*_like``, ``Tensor.new_*`` ...)
are returned as :class:`~trackjac.Tracked` constants with no dependencies, so
code that preallocates a buffer and writes tracked values into it works.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch.overrides import TorchFunctionMode

from ..provenance import policy
from .decomp import _trackable
from .origin import RANDOM, drawn_globally
from .state import Config, config
from .tensor import Tracked

_FACTORIES = {
    torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.range,
    torch.linspace, torch.logspace, torch.eye, torch.tensor, torch.as_tensor,
    torch.rand, torch.randn, torch.randint, torch.randperm, torch.empty_strided,
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
    torch.rand_like, torch.randn_like, torch.randint_like, torch.scalar_tensor,
    torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_empty,
    torch.Tensor.new_full, torch.Tensor.new_tensor,
}

# factories whose values are drawn at random: not constants (another draw at the next call)
_RANDOM_FACTORIES = {torch.rand, torch.randn, torch.randint, torch.randperm, torch.rand_like,
                     torch.randn_like, torch.randint_like}


def _foreach_scalar_tensor(func, args):
    """``torch._foreach_add_(xs, t)`` with a 0-d tracked ``t``: PyTorch's argument parser would
    read ``t`` as a Python number (``t.item()``, the Scalar overload) and lose its dependency;
    ``[t] * len(xs)`` (the List overload, broadcast per tensor) computes the same and keeps it."""
    name = getattr(func, "__name__", "")
    if not (name.startswith("_foreach_") and len(args) >= 2 and isinstance(args[0], (list, tuple))):
        return args
    t = args[1]
    if not (isinstance(t, Tracked) and t.dim() == 0 and t._store.prov is not None):
        return args
    if not hasattr(getattr(torch.ops.aten, name, None), "List"):
        return args
    return (args[0], [t] * len(args[0])) + tuple(args[2:])


def _contains_tracked(data) -> bool:
    if isinstance(data, Tracked):
        return True
    return isinstance(data, (list, tuple)) and any(_contains_tracked(d) for d in data)


def _stacked(data):
    """``torch.tensor(data)`` for nested lists holding tracked elements: a stack keeps them."""
    if isinstance(data, (list, tuple)):
        return torch.stack([_stacked(d) for d in data])
    return data if isinstance(data, torch.Tensor) else torch.tensor(data)


def _tensor_of_tracked(func, args, kwargs):
    """``torch.tensor`` / ``as_tensor`` of tracked elements (``torch.tensor([x[0], x[1]])``): torch
    would copy their (absent) data; stacking them computes the same values and keeps their provenance."""
    data = args[0] if args else kwargs.get("data")
    if func not in (torch.tensor, torch.as_tensor) or not _contains_tracked(data):
        return None
    with torch._C._EnableTorchFunction():
        out = _stacked(data).detach() if func is torch.tensor else _stacked(data)
        dtype, device = kwargs.get("dtype"), kwargs.get("device")
        return out.to(device=device, dtype=dtype) if dtype is not None or device is not None else out


def _pad_packed(func, args, kwargs):
    """``_pad_packed_sequence`` of tracked data: its C++ body copies the data into a plain tensor,
    which would lose its provenance; the same padding out of tracked ops keeps it."""
    if func is not torch._C._VariableFunctions._pad_packed_sequence:
        return None
    names = ("data", "batch_sizes", "batch_first", "padding_value", "total_length")
    a = dict(zip(names, args), **kwargs)
    data, batch_sizes = a["data"], a["batch_sizes"]
    if not isinstance(data, Tracked):
        return None
    with torch._C._EnableTorchFunction():
        bs = torch.as_tensor(batch_sizes.value if isinstance(batch_sizes, Tracked) else batch_sizes)
        steps, batch = bs.numel(), int(bs[0]) if bs.numel() else 0
        total = max(int(a.get("total_length", steps)), steps)
        t = torch.repeat_interleave(torch.arange(steps), bs)                 # time step of each data row
        b = torch.arange(t.numel()) - torch.repeat_interleave(torch.cumsum(bs, 0) - bs, bs)
        out = data.new_full((total, batch) + tuple(data.shape[1:]), float(a.get("padding_value", 0.0)))
        out[t, b] = data
        lengths = (bs.unsqueeze(0) > torch.arange(batch).unsqueeze(1)).sum(1)
        return (out.transpose(0, 1) if a.get("batch_first", False) else out), lengths


class _FactoryMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        made = _tensor_of_tracked(func, args, kwargs or {})
        if made is None:
            made = _pad_packed(func, args, kwargs or {})
        if made is not None:
            return made
        args = _foreach_scalar_tensor(func, args)
        out = func(*args, **(kwargs or {}))
        if func in _FACTORIES and _trackable(out):   # not meta, not inside a torch.func transform
            made = Tracked._constant(out)
            if func in _RANDOM_FACTORIES and drawn_globally(kwargs or {}):
                made._store.origin = RANDOM
            return made
        return out


@contextlib.contextmanager
def tracking(*, local: bool = False, strict: bool = False,
             representation: Optional[str] = None, constant_zeros: Optional[str] = None) -> Iterator[Config]:
    """Context in which factory-made tensors are trackable.

    Args:
        local: keep only the branch taken at this point for value-dependent
            choices (``where``, ``max``, ``relu`` ...) instead of every candidate.
        strict: raise instead of warning on ops without a rule and on Python
            control flow that reads a tracked value.
        representation: how sources created inside the context store provenance:
            ``"sets"`` (sorted-free CSR index sets: memory and time proportional to
            the pattern's nonzeros), ``"bits"`` (packed bitmasks: ``numel x n_inputs``
            bits, fastest for few inputs) or ``"auto"`` (bitmasks up to
            ``trackjac.provenance.policy.AUTO_MAX_INPUTS`` inputs).  ``None`` keeps the current
            setting (``"auto"`` by default).  Results are identical.
        constant_zeros: ``"keep"`` (participation, the default in global mode): ``x * 0`` still
            depends on ``x``.
            ``"drop"`` (value-aware): in products (``mul``, ``mm``, ``bmm``, ``matmul`` ...) an
            operand entry that is exactly zero and depends on nothing (a constant, a masked
            entry, ``softmax`` of ``-inf``) removes the other operand's contribution through it:
            ``x * 0``, ``eye`` masks and causal attention lose those entries.  Such zeros are read
            at this point, so for zeros computed non-differentiably from tracked values
            (``floor``, comparisons) the pattern holds at this point only.  ``None`` (default):
            ``"drop"`` with ``local=True`` (the pattern of the Jacobian at this point, as
            SparseConnectivityTracer's local tracers), ``"keep"`` otherwise.
    """
    if constant_zeros not in (None, "keep", "drop"):
        raise ValueError(f"tracking: constant_zeros must be 'keep', 'drop' or None, got {constant_zeros!r}")
    if representation not in (None, "auto", "sets", "bits"):
        raise ValueError(f"tracking: representation must be 'auto', 'sets' or 'bits', got {representation!r}")
    cfg = config()
    saved = (cfg.local, cfg.strict, cfg.path_dependent, cfg.warned_control_flow, cfg.constant_zeros)
    cfg.local, cfg.strict, cfg.constant_zeros = local, strict, constant_zeros
    cfg.path_dependent = cfg.warned_control_flow = False
    cfg.depth += 1
    rep = contextlib.nullcontext() if representation is None else policy.using(representation)
    try:
        with rep, _FactoryMode():
            yield cfg
    finally:
        cfg.depth -= 1
        cfg.local, cfg.strict, cfg.path_dependent, cfg.warned_control_flow, cfg.constant_zeros = saved
