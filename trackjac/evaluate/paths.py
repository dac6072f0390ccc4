"""Control-flow paths of plans: the Python reads of values, recorded and replayed.

A plan whose ``f`` branched on a tracked value (the build emitted a
``ControlFlowWarning``) holds only where ``f`` takes the same path. Such a
plan records, at build time, the values Python read from tensors while ``f``
ran at the build point (``bool()``, ``item()``, ``tolist()``, ``if t > 0:``:
the ATen scalar reads and ``Tensor.tolist``/``numpy``), in order. At each call
it runs ``f`` once more at the new point, without autograd, under the same
recorder, and compares: a read of a bool or an integer that differs (or a
different number of reads) means another path, and the call raises
:class:`PathChangedError`. Reads of floating-point values cannot be compared
(a float read can differ on the same path), so they are skipped, and the
build warns that the plan cannot check them. Plans without such reads pay
nothing.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..tracer.dispatch import _SCALAR_READS  # the reads the tracer treats as control flow
from .products import ControlFlowChanged, user_stacklevel

_READ_METHODS = {Tensor.tolist: "tolist()", Tensor.numpy: "numpy()"}

Read = Tuple[str, Any]


class PathChangedError(ControlFlowChanged):
    """``f`` took another control-flow path than when the plan was built."""


class _DispatchReads(TorchDispatchMode):
    def __init__(self, log: List[Read]):
        super().__init__()
        self.log = log

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SCALAR_READS:
            self.log.append((func.overloadpacket.__name__, out))
        return out


class _MethodReads(TorchFunctionMode):
    def __init__(self, log: List[Read]):
        super().__init__()
        self.log = log

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = _READ_METHODS.get(func)
        if name is not None:
            self.log.append((name, out.tolist() if name == "numpy()" else out))
        return out


def scalar_reads(f: Callable, args: Sequence[Any]) -> List[Read]:
    """The values Python reads from tensors while ``f(*args)`` runs, in order.

    ``f`` runs on copies of the tensor arguments, without autograd, with the
    random generators restored afterwards (so the caller's draws are unchanged).
    """
    cuda = sorted({a.device for a in args if isinstance(a, Tensor) and a.device.type == "cuda"}, key=str)
    log: List[Read] = []
    copies = [a.clone() if isinstance(a, Tensor) else a for a in args]
    with torch.random.fork_rng(devices=cuda), torch.no_grad(), _MethodReads(log), _DispatchReads(log):
        f(*copies)
    return log


def _has_float(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_has_float(x) for x in v)
    return isinstance(v, (float, complex))


class PathGuard:
    """The reads of ``f`` at the build point; :meth:`check` compares those at a new point."""

    def __init__(self, f: Callable, args: Sequence[Any], traced: List[Read]):
        self.f = f
        self.reads = scalar_reads(f, args)
        self.traced = traced   # what the tracer saw: (op, value) of the reads of tracked values
        floats = sum(_has_float(v) for _, v in self.reads)
        if floats:
            warnings.warn(
                f"trackjac: f reads {floats} floating-point value(s) of tensors in Python (item(), float()); "
                "the plan compares the bool and integer reads at each call to detect another control-flow "
                "path, but cannot tell whether a float read led to another branch.",
                RuntimeWarning, stacklevel=user_stacklevel())

    def check(self, args: Sequence[Any]) -> None:
        now = scalar_reads(self.f, args)
        where = self._first_difference(now)
        if where is None:
            return
        k, detail = where
        seen = ", ".join(f"{op} -> {v!r}" for op, v in self.traced[:4])
        more = ", ..." if len(self.traced) > 4 else ""
        raise PathChangedError(
            f"f takes another control-flow path here than at the point this plan was built: {detail} "
            f"(read {k + 1} of {len(self.reads)} at build). The plan's pattern holds only on the build "
            f"path (reads of tracked values seen at build: {seen}{more}). Build a new plan at this point "
            "(trackjac.jacobian_plan(f, *args)), use trackjac.jacobian, or replace the Python branch by "
            "torch.where / masks.")

    def _first_difference(self, now: List[Read]) -> Optional[Tuple[int, str]]:
        for k, ((op, a), (op2, b)) in enumerate(zip(self.reads, now)):
            if op != op2:
                return k, f"Python read {op2} where it read {op}"
            if _has_float(a) or _has_float(b):
                continue
            if a != b:
                return k, f"{op} read {a!r} at build, {b!r} now"
        if len(now) != len(self.reads):
            return min(len(now), len(self.reads)), (
                f"Python read {len(now)} tensor value(s) where it read {len(self.reads)} at build")
        return None

    @classmethod
    def restore(cls, f: Callable, reads: List[Read], traced: List[Read]) -> "PathGuard":
        """The guard of saved ``reads`` and ``traced`` (a plan's state), without running ``f``."""
        guard = cls.__new__(cls)
        guard.f, guard.reads, guard.traced = f, [tuple(r) for r in reads], [tuple(r) for r in traced]
        return guard
