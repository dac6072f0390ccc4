"""Custom ``torch.autograd.Function`` s and ``torch.library`` custom ops with their own backward.

``__torch_dispatch__`` sees only the ops of a Function's *forward*, and autograd runs
that forward with grad mode off, so without help a Function's outputs carry no
provenance at all.  Its Jacobian, as autograd computes it, is defined by the
*backward*, which need not be the derivative of the forward: a straight-through
estimator rounds in the forward (no derivative) and passes the gradient through in
the backward (identity).

Decision: the pattern is the union of the forward's structure and the backward's, so
it contains both the true derivative's pattern and the Jacobian autograd (and thus any
sparse-Jacobian computation built on it) produces.  ``Function.apply`` with tracked
arguments runs the forward on the tracked values (grad mode on, with a stand-in
``ctx``): that gives the outputs' values and the forward's own provenance.  Then it
runs the backward once on *seed* sources, one per output element: the gradient of
input ``x`` comes back with provenance over the seeds, which is the transposed
pattern ``d out / d x`` as autograd sees it.  Output ``k`` also depends on the
provenance of every input element whose gradient reads seed ``k``.  Saved tensors are
tracked values, so choices the backward makes on them follow the global/local rules.
The forward's part matters where the backward does not show a derivative that is
there: code that only sets up gradients when an input ``requires_grad`` (tracked
tensors do not), a backward returning ``None``.  The backward's part matters for a
straight-through estimator (forward ``round``, backward identity).

If the backward cannot run on tracked values (it leaves torch, needs ``ctx``
features the stand-in lacks ...), a :class:`~trackjac.UnsupportedOpWarning` says so
and the conservative pattern is used (every output element depends on every tracked
element of every input); ``strict=True`` raises instead.  Custom ops registered with
``torch.library.custom_op`` get the same treatment when they have a registered
backward, and are traced through their Python body otherwise.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, List, Optional, Sequence

import torch
from torch.autograd.function import _is_setup_context_defined as _setup_context_defined
from torch.utils._pytree import tree_flatten, tree_unflatten

try:
    from torch._library.custom_ops import _maybe_get_opdef
except ImportError:  # a torch without torch.library.custom_op: no custom ops to handle
    _maybe_get_opdef = None

from ..dtypes import DIFFERENTIABLE
from ..errors import UnsupportedOpWarning, warn_or_raise
from ..provenance import Provenance, scatter, union
from ..rules import Carrier, conservative, conservative_from
from .decomp import python_body, snapshot, tracked_type
from .origin import GLOBAL
from .state import config

_orig_apply = torch.autograd.function.Function.apply.__func__


class _Ctx:
    """Stand-in for the ``ctx`` of a Function (forward, ``setup_context`` and backward see it)."""

    def __init__(self, needs_input_grad: Sequence[bool]):
        self.needs_input_grad = tuple(needs_input_grad)
        self.to_save: tuple = ()
        self.dirty_tensors: tuple = ()
        self.non_differentiable: tuple = ()
        self.materialize_grads = True

    def save_for_backward(self, *tensors):
        self.to_save = tensors

    def save_for_forward(self, *tensors):
        pass

    @property
    def saved_tensors(self):
        return self.to_save

    saved_variables = saved_tensors

    def mark_dirty(self, *tensors):
        self.dirty_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        self.non_differentiable = tensors

    def set_materialize_grads(self, value: bool):
        self.materialize_grads = value


def _tracked(obj) -> List[Any]:
    return [a for a in tree_flatten(obj)[0] if isinstance(a, Carrier)]


def _unwrap_backward(fn: Callable) -> Callable:
    """``once_differentiable`` runs the backward under ``no_grad``, which would drop provenance:
    call the function it wraps."""
    code = getattr(fn, "__code__", None)
    while (getattr(fn, "__wrapped__", None) is not None and code is not None
           and code.co_name == "wrapper" and code.co_filename.endswith("function.py")):
        fn = fn.__wrapped__
        code = getattr(fn, "__code__", None)
    return fn


def apply(cls, *args, **kwargs):
    """``Function.apply``: unchanged unless an argument is Tracked."""
    tracked = _tracked((args, kwargs))
    if not tracked:
        return _orig_apply(cls, *args, **kwargs)
    kind = type(tracked[0])

    if _is_setup_context_defined(cls):
        sig = inspect.signature(cls.forward)
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        args, kwargs = bound.args, bound.kwargs
    ctx = _Ctx([_is_diff(a) for a in args])
    pre = _snapshot(args)
    with torch.enable_grad():
        if _is_setup_context_defined(cls):
            out = cls.forward(*args, **kwargs)
            cls.setup_context(ctx, args, out)
        else:
            out = cls.forward(ctx, *args, **kwargs)
    backward = _unwrap_backward(cls.backward)
    name = f"autograd.Function {cls.__qualname__}"
    return _finish(kind, name, out, list(args), pre, ctx, lambda *g: backward(ctx, *g), config())


def _is_setup_context_defined(cls) -> bool:
    return _setup_context_defined(cls.setup_context)


def _is_diff(a) -> bool:
    return isinstance(a, Carrier) and a.dtype in DIFFERENTIABLE


def _snapshot(args) -> dict:
    """Provenance of every tracked argument before the forward ran (it may write in place)."""
    return {id(a): (a._prov(), tuple(a.shape)) for a in tree_flatten(args)[0]
            if isinstance(a, Carrier) and a._store.prov is not None}


def _finish(kind, name, out, inputs, pre, ctx, run_backward, cfg):
    """Outputs: the forward's provenance united with what the backward implies (conservative if
    the backward does not run on tracked values); ``kind``: the tracked type."""
    flat, spec = tree_flatten(out)
    non_diff = {id(t) for t in ctx.non_differentiable}
    slots = [i for i, o in enumerate(flat) if isinstance(o, torch.Tensor)
             and o.dtype in DIFFERENTIABLE and id(o) not in non_diff]
    provs: Optional[List[Optional[Provenance]]] = None
    reason = ""
    try:
        provs = _from_backward(kind, [flat[i] for i in slots], inputs, pre, run_backward)
    except Exception as e:  # the backward does not run on tracked values
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:160]
    if provs is None:
        warn_or_raise(
            f"{name}: its backward could not be traced on tracked values ({reason}); using a "
            "conservative pattern (every output element depends on every tracked element of its "
            "inputs)", UnsupportedOpWarning, cfg.strict)
        with torch._C.DisableTorchFunction():
            provs = conservative_from([pre[id(a)][0] for a in tree_flatten(inputs)[0] if id(a) in pre],
                                      [flat[i] for i in slots])
    origin = 0
    for t in _tracked(inputs):
        origin |= t._store.origin
    origin = origin or GLOBAL   # outputs of a Function are computed from its tracked inputs
    dirty = {id(t) for t in ctx.dirty_tensors}
    res = list(flat)
    for i, o in enumerate(flat):
        if not isinstance(o, torch.Tensor):
            continue
        p = provs[slots.index(i)] if i in slots else None
        if i in slots and _is_diff(o) and o._store.prov is not None:
            if p is None:
                p = o._prov()
            else:
                with torch._C.DisableTorchFunction():
                    p = union([p, o._prov()], o.numel())   # forward's own
        if isinstance(o, Carrier) and id(o) in dirty:
            o._write(p, origin)                    # the input modified in place is the output
            continue
        value = o.value if isinstance(o, Carrier) else o
        res[i] = kind._from_prov(value, p, origin)
    return tree_unflatten(res, spec)


def _from_backward(kind, outs, inputs, pre, run_backward) -> List[Optional[Provenance]]:
    """Run the backward on seed sources; output ``k`` gets the inputs' elements whose gradient
    reads seed ``k``."""
    with torch._C.DisableTorchFunction():   # plain values, also inside tracking()
        ones = [torch.ones(o.shape, dtype=_real(o.dtype), device=o.device) for o in outs]
    seeds = [kind(v) for v in ones]
    with torch.enable_grad(), python_body(kind):
        grads = run_backward(*seeds)
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    with torch._C.DisableTorchFunction():   # bookkeeping on plain tensors: no factory wrapping
        return _read_backward(outs, inputs, pre, seeds, grads)


def _read_backward(outs, inputs, pre, seeds, grads) -> List[Optional[Provenance]]:
    acc: List[List[Provenance]] = [[] for _ in outs]
    for a, g in zip(inputs, grads):
        if id(a) not in pre or g is None:
            continue
        if not (isinstance(g, Carrier) and g._store.derived):
            # a valid backward computes the gradient from the incoming one: this one left torch
            # (numpy, .item() ...) or ignores it, so its structure cannot be read off
            raise RuntimeError("the gradient it returns is not computed from the incoming gradient")
        if g._store.prov is None:
            continue
        pa, shape = pre[id(a)]
        if tuple(g.shape) != shape:
            g = g.sum_to_size(shape)
        pg = g._prov()
        rows = pg.rows()
        for k, s in enumerate(seeds):
            lo, n = s._source.first, s._source.numel
            keep = (pg.col >= lo) & (pg.col < lo + n)
            if bool(keep.any()):
                acc[k].append(scatter(pa, pg.col[keep] - lo, n, rows[keep]))
    return [union(ps, o.numel()) if ps else None for ps, o in zip(acc, outs)]


def _real(dtype):
    return {torch.complex64: torch.float32, torch.complex128: torch.float64,
            torch.complex32: torch.float16}.get(dtype, dtype)


# -- torch.library custom ops -----------------------------------------------------------------
def custom_op_rule(func) -> Optional[Callable]:
    """Rule for a ``torch.library.custom_op``: its registered backward, or its Python body."""
    try:
        opdef = _maybe_get_opdef(func) if _maybe_get_opdef is not None else None
    except Exception:
        return None
    if opdef is None or getattr(opdef, "_init_fn", None) is None:
        return None
    return functools.partial(_custom_op, opdef)


def _custom_op(opdef, call):
    snap = snapshot
    kind = tracked_type(call.bound)
    schema = call.func._schema
    args = [snap(call, call.bound[a.name]) if a.name in call.bound else a.default_value
            for a in schema.arguments if not a.kwarg_only]
    kwargs = {a.name: snap(call, call.bound[a.name]) for a in schema.arguments
              if a.kwarg_only and a.name in call.bound}
    pre = _snapshot(args)
    name = f"custom op {opdef._qualname}"
    backward = getattr(opdef, "_backward_fn", None)
    try:
        with torch.enable_grad(), python_body(kind):
            out = opdef._init_fn(*args, **kwargs)
            ctx = _Ctx([_is_diff(a) for a in args])
            if backward is not None and getattr(opdef, "_setup_context_fn", None) is not None:
                opdef._setup_context_fn(ctx, tuple(args), out)
    except Exception as e:   # the body does not run on tracked values
        warn_or_raise(f"{name}: its Python body does not run on tracked values "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); using a conservative "
                       "pattern", UnsupportedOpWarning, config().strict)
        return conservative(call)
    if backward is None:   # no autograd formula of its own: the body's ops are the derivative
        res = out
    else:
        res = _finish(kind, name, out, args, pre, ctx, lambda *g: backward(ctx, *g), config())
    flat = [o for o in tree_flatten(res)[0] if isinstance(o, torch.Tensor)]
    return [o._prov() if _is_diff(o) and o._store.prov is not None else None for o in flat]


def install() -> None:
    """Route ``torch.autograd.Function.apply`` with tracked arguments through :func:`apply`."""
    if getattr(torch.autograd.function.Function.apply, "__func__", None) is not apply:
        torch.autograd.function.Function.apply = classmethod(apply)


install()
