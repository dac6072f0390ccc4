"""Fallback for ops without a rule: run PyTorch's own decomposition on the tracked inputs.

Decompositions come from ``torch._decomp.decomposition_table`` or, for
``CompositeImplicitAutograd`` ops that another decomposition calls directly, from
the op's own composite kernel (``OpOverload.decompose``).

``torch._decomp.decomposition_table`` expresses most composite ops (losses,
activations, norms ...) in a small core whose rules exist, so running the
decomposition on :class:`~trackjac.Tracked` arguments gives the op's provenance
from theirs.  In-place and ``out=`` overloads use the decomposition of their
functional overload, on the arguments as they were before the op wrote them.
A decomposition that fails on tracked inputs (or re-enters itself) falls back
to the conservative pattern, with the usual warning.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Callable, Optional

import torch
from torch._decomp import decomposition_table
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from ..dtypes import DIFFERENTIABLE
from ..errors import UnsupportedOpWarning, warn_or_raise
from ..rules import Carrier, conservative
from .state import config

aten = torch.ops.aten

_active = threading.local()


def functional_overload(func):
    """The functional overload of an in-place or ``out=`` overload (``func`` itself otherwise)."""
    schema = func._schema
    packet = func.overloadpacket
    name = packet.__name__
    if name.endswith("_") and not name.endswith("__"):
        base = getattr(aten, name[:-1], None)
        if base is None:
            return None
        return getattr(base, func._overloadname, None) or getattr(base, "default", None)
    outs = [a.name for a in schema.arguments if a.kwarg_only and a.alias_info is not None and a.alias_info.is_write]
    if not outs:
        return func
    want = [(a.name, str(a.type)) for a in schema.arguments if a.name not in outs]
    for o in packet.overloads():
        f = getattr(packet, o)
        args = [(a.name, str(a.type)) for a in f._schema.arguments]
        if args == want and not any(a.alias_info is not None and a.alias_info.is_write
                                    for a in f._schema.arguments):
            return f
    return None


def find(func) -> Optional[Callable]:
    """A rule running ``func``'s decomposition on the tracked inputs, or ``None``."""
    f = functional_overload(func)
    if f is None:
        return None
    d = decomposition_table.get(f)
    if d is None and torch._C._dispatch_has_kernel_for_dispatch_key(f.name(), "CompositeImplicitAutograd"):
        # reached directly from inside another decomposition: the C++ composite kernel (its Python
        # variant may call the op's torch.* function, which would land here again)
        d = functools.partial(_composite, f)
    if d is None:
        return None
    return lambda call: run(call, f, d)


def _composite(f, *args, **kwargs):
    with torch._C.DisableTorchFunction():
        return f._op_dk(torch._C.DispatchKey.CompositeImplicitAutograd, *args, **kwargs)


class _TrackAll(TorchFunctionMode):
    """Every plain tensor a torch function returns becomes a trackable constant of type ``cls``,
    so that code which writes tracked values into tensors it made
    (``(~mask).to(dtype).mul_(grad)``) works."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        return tree_map(lambda t: self.cls._constant(t) if _trackable(t) else t, out)


def _trackable(t) -> bool:
    """A plain tensor with data (not meta, as shape computations make; not inside a torch.func transform)."""
    return (type(t) is torch.Tensor and t.device.type != "meta"
            and not torch._C._functorch.is_functorch_wrapped_tensor(t))


def tracked_type(obj):
    """The type of the first tracked tensor in ``obj`` (the fallbacks make more of that kind)."""
    return next(type(a) for a in tree_flatten(obj)[0] if isinstance(a, Carrier))


@contextlib.contextmanager
def python_body(cls):
    """Run Python code (a decomposition, a custom op's body or backward) from inside a rule:
    torch functions on again, and the tensors the code makes are trackable ``cls`` constants
    (as in ``tracking()``, and beyond factories: any plain result)."""
    with torch._C._EnableTorchFunction(), _TrackAll(cls):
        yield


def snapshot(call, a):
    """``a`` as it was before the op ran (in-place ops have already written its value)."""
    if isinstance(a, Carrier) and id(a) in call._pre:
        return type(a)._from_prov(call.value(a).clone(), call.prov(a), a._store.origin)
    return a


def run(call, f, decomposition):
    """Provenance of ``call``'s outputs from running ``decomposition`` (of ``f``) on its inputs."""
    active = getattr(_active, "ops", None)
    if active is None:
        active = _active.ops = set()
    args, kwargs = [], {}
    for a in f._schema.arguments:
        if a.name not in call.bound:
            continue
        v = tree_map(lambda t: snapshot(call, t), call.bound[a.name])
        if a.kwarg_only:
            kwargs[a.name] = v
        else:
            args.append(v)
    outs = None
    if f not in active:
        active.add(f)
        try:
            with python_body(tracked_type(call.bound)):
                outs = [t for t in tree_flatten(decomposition(*args, **kwargs))[0]
                        if isinstance(t, torch.Tensor)]
        except Exception:
            outs = None
        finally:
            active.discard(f)
    if outs is None or len(outs) != len(call.outs) or any(
            o.shape != c.shape for o, c in zip(outs, call.outs)):
        warn_or_raise(
            f"trackjac has no provenance rule for {call.func} and its decomposition does not run on "
            "tracked inputs; using a conservative pattern (every output element depends on every "
            "tracked input element of this op)", UnsupportedOpWarning, config().strict)
        return conservative(call)
    res = []
    for o, c in zip(outs, call.outs):
        if isinstance(o, Carrier) and c.dtype in DIFFERENTIABLE and o._store.prov is not None:
            res.append(o._prov())
        else:
            res.append(None)
    return res
