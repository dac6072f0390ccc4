"""``__torch_dispatch__`` of :class:`~trackjac.Tracked`: run the op on values, then its rule on provenance.

Aliasing comes from the op's schema: outputs that alias an input (views) share
that input's provenance store, mutated inputs get their store rows rewritten,
and everything else gets a fresh store from the op's rule.  :func:`dispatch` is
that sequence of named steps.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.utils._mode_utils import no_dispatch
from torch.utils._pytree import tree_flatten, tree_map

from .._threads import intra_op_threads
from ..dtypes import DIFFERENTIABLE
from ..errors import TrackingError, UnsupportedOpWarning, warn_or_raise
from ..rules import Call, Carrier, conservative
from . import resolve
from .control_flow import control_flow
from .state import config

aten = torch.ops.aten

# Ops whose Python-visible result (a bool or number) lets control flow depend on tracked values.
_SCALAR_READS = {aten._local_scalar_dense, aten.is_nonzero, aten.equal}
# In-place view ops that change storage, not just geometry.
_STORAGE_WRITES = {aten.resize_, aten.resize_as_, aten.set_, aten.detach_}


def dispatch(cls, func, args, kwargs):
    """Run ``func`` on the plain values and give its outputs provenance (``cls``: the tracked type)."""
    # Provenance bookkeeping must not see the tracking context's factory mode.
    with torch._C.DisableTorchFunction():
        return _dispatch(cls, func, args, kwargs)


def _dispatch(cls, func, args, kwargs):
    cfg = config()
    flat, _ = tree_flatten((args, kwargs))
    tracked = [a for a in flat if isinstance(a, Carrier)]
    packet = func.overloadpacket
    if packet in _SCALAR_READS:
        control_flow(func, tracked)
        return _run(func, args, kwargs)

    schema = func._schema
    bound = bind(schema, args, kwargs)
    local = cfg.local or any(t._store.local for t in tracked)
    derived = any(t._store.derived for t in tracked)
    written = _written_args(schema, bound)
    pre = _snapshot_written(func, written, derived)
    out = _run(func, args, kwargs)

    if torch.Tag.inplace_view in func.tags and packet not in _STORAGE_WRITES:
        # squeeze_, transpose_, as_strided_ ...: only the tensor's geometry changed; the storage and
        # its provenance did not.  The wrapper's own sizes/strides must follow its value's.
        me = bound.get("self")
        if isinstance(me, Carrier):
            _sync_geometry(me)
        return me

    values, kinds = _outputs(schema, bound, written, out)
    no_grad = not torch.is_grad_enabled()
    if packet is aten.detach or no_grad:
        # No derivative flows: results are derived values with no provenance.  A tensor written
        # in place under no_grad keeps its provenance: autograd records nothing, so derivatives
        # keep flowing through it as before (clamp_ in gaussian_nll_loss, optimizer steps).
        kinds = [("new", None) if k == "view" else (k, s) for k, s in kinds]
        tracked = []
    tensor_vals = [v for v in values if isinstance(v, torch.Tensor)]
    has_prov = any(t._store.prov is not None for t in tracked)
    call = Call(func, args, kwargs, bound, tensor_vals, local, derived, pre, cfg.constant_zeros, has_prov)
    provs = _provenance(call, values, kinds, tracked, cfg)
    wrapped = _wrap(cls, values, kinds, provs, call.derived, local, no_grad)
    return out if not schema.returns else _renest(schema, out, wrapped)


def bind(schema, args, kwargs) -> dict:
    """Schema argument name -> the object passed (or its default)."""
    out = {}
    for i, a in enumerate(schema.arguments):
        if i < len(args) and not a.kwarg_only:
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
    return out


def _run(func, args, kwargs):
    return func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))


def _written_args(schema, bound) -> Dict[str, Any]:
    """Arguments the op writes to and returns (in-place and ``out=`` ops).  Arguments written but
    not returned (batch norm's running statistics) carry no derivative and are left alone."""
    ret_sets = set()
    for r in schema.returns:
        if r.alias_info is not None and r.alias_info.is_write:
            ret_sets |= r.alias_info.before_set
    written = {}
    for a in schema.arguments:
        if (a.alias_info is not None and a.alias_info.is_write and a.name in bound
                and (not schema.returns or a.alias_info.before_set & ret_sets)):
            written[a.name] = bound[a.name]
    return written


def _snapshot_written(func, written, derived) -> Dict[int, torch.Tensor]:
    """Values of the written tracked tensors before the op runs; refuse to write tracked values
    into a plain tensor."""
    pre = {}
    for obj in written.values():
        for t in (obj if isinstance(obj, (list, tuple)) else [obj]):
            if isinstance(t, Carrier):
                pre[id(t)] = t.value.clone()
            elif isinstance(t, torch.Tensor) and derived:
                raise TrackingError(
                    f"{func}: writing a tracked value into a plain tensor would lose its provenance. "
                    "Create the tensor inside the tracked function (or inside `with trackjac.tracking():`) "
                    "so it is trackable, or build the result out of place (torch.cat, torch.where, "
                    "x.new_zeros(...)).")
    return pre


def _outputs(schema, bound, written, out) -> Tuple[list, List[tuple]]:
    """Flattened outputs and, for each, what it is: ``("new", None)``, ``("view", source)`` or
    ``("write", target)``."""
    rets = schema.returns
    if len(rets) == 0:
        outs_obj = [written[n] for n in written]
        out_flat = [t for o in outs_obj for t in (o if isinstance(o, (list, tuple)) else [o])]
        kinds = [("write", t) for t in out_flat]
        values = [t.value if isinstance(t, Carrier) else t for t in out_flat]
    else:
        res = out if len(rets) > 1 else (out,)
        values, kinds = [], []
        for r, o in zip(rets, res):
            items = o if isinstance(o, (list, tuple)) else [o]
            src = _alias_source(r, schema, bound)
            for j, v in enumerate(items):
                values.append(v)
                if src is None:
                    kinds.append(("new", None))
                else:
                    s = src[j] if isinstance(src, (list, tuple)) and isinstance(o, (list, tuple)) else src
                    kinds.append(("write" if r.alias_info.is_write else "view", s))
    # Views that reinterpret elements (view_as_real, view_as_complex) cannot share a store
    # indexed by element: they get fresh provenance from their rule.
    kinds = [("new", None) if k == "view" and isinstance(s, Carrier) and isinstance(v, torch.Tensor)
             and v.dtype.itemsize != s.dtype.itemsize else (k, s) for v, (k, s) in zip(values, kinds)]
    return values, kinds


def _provenance(call, values, kinds, tracked, cfg) -> List[Optional[object]]:
    """One provenance per tensor output, from the op's rule (or the conservative pattern)."""
    needs_rule = any(k in ("new", "write") and isinstance(v, torch.Tensor) and v.dtype in DIFFERENTIABLE
                     for v, (k, _) in zip(values, kinds))
    if not (needs_rule and tracked):
        return [None] * len(call.outs)
    rule = resolve.lookup(call.func)
    if rule is None:
        warn_or_raise(
            f"trackjac has no provenance rule for {call.func}; using a conservative pattern "
            "(every output element depends on every tracked input element of this op)",
            UnsupportedOpWarning, cfg.strict)
    with intra_op_threads(cfg.threads):
        return conservative(call) if rule is None else list(rule(call))


def _wrap(cls, values, kinds, provs, derived, local, no_grad) -> list:
    """Outputs as tracked tensors: views share their source's store, writes update the target's."""
    wrapped, k = [], 0
    for v, (kind, src) in zip(values, kinds):
        if not isinstance(v, torch.Tensor):
            wrapped.append(v)
            continue
        p = provs[k] if v.dtype in DIFFERENTIABLE else None
        k += 1
        if kind == "view":
            wrapped.append(cls._make(v, src._store) if isinstance(src, Carrier) else v)
        elif kind == "write":
            if isinstance(src, Carrier):
                if no_grad:
                    src._store.derived = src._store.derived or derived
                else:
                    src._write(p, derived)
                wrapped.append(src)
            else:
                wrapped.append(v)
        else:
            wrapped.append(cls._from_prov(v, p, derived, local))
    return wrapped


def _renest(schema, out, wrapped):
    """The wrapped outputs nested like the op's output."""
    it = iter(wrapped)
    multi = len(schema.returns) > 1
    nested = []
    for o in (out if multi else (out,)):
        if isinstance(o, (list, tuple)):
            nested.append(type(o)(next(it) for _ in o))
        else:
            nested.append(next(it))
    return tuple(nested) if multi else nested[0]


def _sync_geometry(t) -> None:
    v = t.value
    if t.shape == v.shape and t.stride() == v.stride() and t.storage_offset() == v.storage_offset():
        return
    try:
        with no_dispatch():
            torch.Tensor.as_strided_(t, v.shape, v.stride(), v.storage_offset())
    except RuntimeError as e:
        raise TrackingError(f"cannot apply an in-place view op to a Tracked tensor here: {e}") from e


def _unwrap(a):
    return a.value if isinstance(a, Carrier) else a


def _alias_source(ret, schema, bound):
    """The input argument a return aliases (same alias set), or ``None``."""
    if ret.alias_info is None:
        return None
    sets = ret.alias_info.before_set
    if not sets:
        # ``Tensor(a)[]`` (split, unbind, chunk): the set is on the list's elements, which the
        # schema object does not expose; the aliased argument is the one declared ``Tensor(a -> *)``.
        for a in schema.arguments:
            if a.alias_info is not None and "*" in a.alias_info.after_set:
                return bound.get(a.name)
        return None
    for a in schema.arguments:
        if a.alias_info is not None and a.alias_info.before_set & sets:
            return bound.get(a.name)
    return None
