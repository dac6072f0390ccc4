"""``__torch_dispatch__`` of :class:`~trackjac.Tracked`: run the op on values, then its rule on provenance.

Aliasing comes from the op's schema: outputs that alias an input (views) share
that input's provenance store, mutated inputs get their store rows rewritten,
and everything else gets a fresh store from the op's rule.  :func:`dispatch` is
that sequence of named steps.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.utils._pytree import tree_flatten, tree_map
from torch._library.simple_registry import singleton as _dispatch_rules

from .._threads import intra_op_threads
from ..dtypes import DIFFERENTIABLE
from ..errors import TrackingError, UnsupportedOpWarning, warn_or_raise
from ..provenance import broadcast_row, union, without_ids
from ..rules import Call, Carrier, conservative
from ..rules.linearity import linear_at
from . import resolve, sources
from .decomp import functional_overload
from .control_flow import control_flow
from .origin import GLOBAL, LOCAL, RANDOM, SOURCES, drawn_globally
from .state import SAME, config

aten = torch.ops.aten



def _scalar_reads() -> frozenset:
    """Overloads that take a tensor and return only Python values (``bool``, numbers, lists of
    them): their result lets Python control flow depend on tracked values (``allclose``,
    ``equal``, ``is_nonzero``, ``item`` ...).  Read off the op schemas, so new ops are covered."""
    out = set()
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::") or not schema.returns:
            continue
        if "Tensor" in "".join(str(r.type) for r in schema.returns):
            continue
        if not any("Tensor" in str(a.type) for a in schema.arguments):
            continue
        packet = getattr(aten, schema.name[len("aten::"):], None)
        op = getattr(packet, schema.overload_name or "default", None) if packet is not None else None
        if op is not None:
            out.add(op)
    return frozenset(out)


def claim_dispatch_rules(cls: type) -> None:
    """Register ``cls.__torch_dispatch__`` as ``cls``'s torch_dispatch rule for every op schema.

    Torch looks such a rule up before it asks whether an argument is a DTensor, and the first
    time it asks, it imports ``torch.distributed.tensor`` (about 1 s in a fresh process: most
    of a first ``jacobian_sparsity``). The rule is the same call, so nothing else changes.
    """
    rule = cls.__torch_dispatch__.__func__
    for schema in torch._C._jit_get_all_schemas():
        if schema.is_mutable and schema.overload_name.endswith("out"):
            continue   # out= variants are rare on tracked values; one would only cost the import
        name = f"{schema.name}.{schema.overload_name}" if schema.overload_name else schema.name
        holder = getattr(_dispatch_rules.find(name), "torch_dispatch_rules", None)
        if holder is None:
            return   # an older torch without per-op torch_dispatch rules: nothing to pre-pay
        if holder.find(cls) is None:
            holder.register(cls, rule)


# Ops whose Python-visible result (a bool or number) lets control flow depend on tracked values.
_SCALAR_READS = _scalar_reads()
# In-place view ops that change storage, not just geometry.
_STORAGE_WRITES = {aten.resize_, aten.resize_as_, aten.set_, aten.detach_}
# Of those, the ops that give a tensor a storage of another size, or another storage.
_RESIZES = {aten.resize_, aten.resize_as_, aten.set_}


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
    if func in _SCALAR_READS:
        control_flow(func, tracked)
        if cfg.classify and not all(str(r.type) == "bool" for r in func._schema.returns):
            note_value_read(tracked)
        return _run(func, args, kwargs)

    schema = func._schema
    bound = bind(schema, args, kwargs)
    origin = 0
    for t in tracked:
        origin |= t._store.origin
    derived = bool(origin & SOURCES)
    local = cfg.local or bool(origin & LOCAL)
    written = _written_args(schema, bound)
    pre = _snapshot_written(func, written, derived)
    out = _run(func, args, kwargs)

    if torch.Tag.inplace_view in func.tags and packet not in _STORAGE_WRITES:
        # squeeze_, transpose_, as_strided_ ...: only the tensor's geometry changed; the storage and
        # its provenance did not.  The wrapper's own sizes/strides must follow its value's.
        me = bound.get("self")
        if isinstance(me, Carrier):
            me._sync_geometry()
        return me
    if packet in _RESIZES:
        return _resized(bound, func)

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
    # call.derived: the outputs inherit the inputs' origin (random draws included) unless the rule
    # marks them as fresh constants
    call = Call(func, args, kwargs, bound, tensor_vals, local, origin != 0, pre, cfg.constant_zeros, has_prov)
    provs = _provenance(call, values, kinds, tracked, cfg)
    if local and not cfg.local and origin & GLOBAL and any(p is not None for p in provs):
        provs = _global_part_kept(call, values, kinds, tracked, cfg, provs)
    nonlinear = _nonlinear_part(call, values, kinds, tracked, cfg, provs) if cfg.classify else None
    out_origin = (origin if call.derived else 0) | (RANDOM if call.random and drawn_globally(bound) else 0)
    if out_origin and call.drops_zeros and not local:
        provs = _mark_varying(values, kinds, provs, cfg)
    wrapped = _wrap(cls, values, kinds, provs, call.plain, out_origin, no_grad, nonlinear)
    return out if not schema.returns else _renest(schema, out, wrapped)


def note_value_read(tracked) -> None:
    """While classifying: Python reads numbers from ``tracked``; a varying float value among them
    makes every entry variable (the number may scale a derivative: ``x * x[0].item()``).  Reads
    of bools and integers choose a path, as for the pattern itself."""
    cfg = config()
    if cfg.classify and any(t.dtype in DIFFERENTIABLE and t._store.origin != 0 for t in tracked):
        cfg.read_varying = True


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
                if t._store.argument is not None:
                    raise TrackingError(
                        f"{func}: the function writes into its argument {t._store.argument} in place. "
                        "Its Jacobian is taken at the argument's value, and autograd refuses this too: "
                        "copy it first inside the function (x = x.clone()) or use out-of-place ops.")
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
    # Views that reinterpret elements (view_as_real, view_as_complex) share the store too: it maps
    # element sizes (a complex element is two real slots, see tensor._store_rows).  A "may alias"
    # return that got storage of its own is a new tensor: ``to(...)`` to another dtype or device,
    # and a copy of the same dtype (``contiguous``/``reshape`` of a non-contiguous tensor, which
    # reach here from inside decompositions); sharing the source's store would read its rows in
    # the copy's memory order.
    kinds = [("new", None) if k == "view" and isinstance(s, Carrier) and isinstance(v, torch.Tensor)
             and not _same_storage(v, s.value) else (k, s)
             for v, (k, s) in zip(values, kinds)]
    return values, kinds


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


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


def _global_part_kept(call, values, kinds, tracked, cfg, provs) -> list:
    """Locality belongs to the source: where an op mixes local and global sources, a choice is
    resolved at this point for the local sources' ids only; the global sources' ids come from
    the rule run in global mode."""
    glob = Call(call.func, call.args, call.kwargs, call.bound, call.outs, False, call.derived, call._pre,
                call.constant_zeros, call.has_prov)
    ranges = sources.local_ranges()
    out = []
    for p, g in zip(provs, _provenance(glob, values, kinds, tracked, cfg)):
        if g is not None:
            g = without_ids(g, ranges)
            p = g if p is None else union([p, g], p.numel)
        out.append(p)
    return out


def _mark_varying(values, kinds, provs, cfg) -> list:
    """Value-aware global tracing: a new or written float value that varies (computed from tracked
    values, or drawn at random) but depends on nothing gets ``cfg.varying_id``.  The per-tensor
    ``Call.varies`` cannot see such values once they sit next to others that carry provenance
    (``cat([softmax(s), (x > 0).float()])``), where a zero of theirs would pass for a constant."""
    out, k = list(provs), 0
    for v, (kind, _) in zip(values, kinds):
        if not isinstance(v, torch.Tensor):
            continue
        if kind in ("new", "write") and v.dtype in DIFFERENTIABLE and out[k] is None and v.numel():
            if cfg.varying_id is None:
                cfg.varying_id = sources.allocate(1, ()).first
            out[k] = broadcast_row(torch.tensor([cfg.varying_id], device=v.device), v.numel())
        k += 1
    return out


def _nonlinear_part(call, values, kinds, tracked, cfg, provs) -> list:
    """Per tensor output, the dependencies through which its derivative is not constant: for an op
    linear in its tracked arguments at this call, its rule run on their nonlinear parts; otherwise
    all of them (``SAME``)."""
    if all(p is None for p in provs):
        return [None] * len(provs)
    func = functional_overload(call.func) or call.func
    if not linear_at(call, func, _rule_kind(call.func)):
        return [SAME] * len(provs)
    parts = [t._nonlinear() for t in tracked]
    if all(p is None for p in parts):
        return [None] * len(provs)
    nl = Call(call.func, call.args, call.kwargs, call.bound, call.outs, call.local, call.derived, call._pre,
              call.constant_zeros, True, nonlinear=True)
    return _provenance(nl, values, kinds, tracked, cfg)


_KINDS: Dict[Any, Optional[str]] = {}


def _rule_kind(func) -> Optional[str]:
    """``resolve.rule_kind``, once per overload (the N-run needs it at every call)."""
    if func not in _KINDS:
        _KINDS[func] = resolve.rule_kind(func)
    return _KINDS[func]


def _wrap(cls, values, kinds, provs, plain_outs, origin, no_grad, nonlinear=None) -> list:
    """Outputs as tracked tensors: views share their source's store, writes update the target's
    (``nonlinear``: per tensor output, its nonlinear dependencies while classifying)."""
    wrapped, k = [], 0
    for v, (kind, src) in zip(values, kinds):
        plain = kind == "new" and isinstance(v, torch.Tensor) and (
            v.device.type == "meta" or v.layout != torch.strided or k in plain_outs)
        if not isinstance(v, torch.Tensor) or plain:
            # a meta tensor has no values (it feeds shape computations); a sparse one of constants
            # is a plain operand whose stored entries the product rules read; a rule may ask for
            # constants that C++ code reads directly (a packed sequence's batch_sizes)
            wrapped.append(v)
            k += isinstance(v, torch.Tensor)
            continue
        p = provs[k] if v.dtype in DIFFERENTIABLE else None
        n = SAME if nonlinear is None else nonlinear[k]
        k += 1
        if kind == "view":
            wrapped.append(cls._make(v, src._store) if isinstance(src, Carrier) else v)
        elif kind == "write":
            if isinstance(src, Carrier):
                if src.shape != src.value.shape:   # an out= buffer that torch resized
                    src._follow_value()
                if no_grad:
                    src._store.origin |= origin
                else:
                    src._write(p, origin, n)
                wrapped.append(src)
            else:
                wrapped.append(v)
        else:
            wrapped.append(cls._from_prov(v, p, origin, n))
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


def _resized(bound, func):
    """``resize_``, ``resize_as_``, ``set_``: the tensor now has a storage of another size, or
    another tensor's storage (whose provenance it then shares)."""
    me = bound["self"]
    if not isinstance(me, Carrier):
        return me
    if func.overloadpacket is aten.set_:
        src = bound.get("source")
        if isinstance(src, Carrier):
            me._store = src._store
        else:   # a plain tensor's or a storage's values: no dependencies
            me._store = type(me)._constant(me.value)._store
        me._follow_value()
        return me
    me._follow_value()
    return me


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
