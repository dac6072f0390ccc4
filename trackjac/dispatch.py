"""``__torch_dispatch__`` for :class:`~trackjac.Tracked`: run the op on values, then its rule on provenance.

Aliasing comes from the op's schema: outputs that alias an input (views) share
that input's provenance store, mutated inputs get their store rows rewritten,
and everything else gets a fresh store from the op's rule.
"""
from __future__ import annotations

import warnings
from typing import Any, List, Optional

import torch
from torch.utils._pytree import tree_flatten, tree_map

from . import tracked as _t
from ._prov import Prov, broadcast_row
from .context import config
from .errors import ControlFlowWarning, StrictModeError, TrackingError, UnsupportedOpWarning

aten = torch.ops.aten

# Ops whose Python-visible result (a bool or number) lets control flow depend on tracked values.
_SCALAR_READS = {aten._local_scalar_dense, aten.is_nonzero, aten.equal}


class Call:
    """One op application as seen by a rule."""

    __slots__ = ("func", "args", "kwargs", "bound", "outs", "local", "derived", "_pre")

    def __init__(self, func, args, kwargs, bound, outs, local, derived, pre):
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.bound = bound          # schema argument name -> original (possibly Tracked) object
        self.outs = outs            # flattened output values (plain tensors)
        self.local = local
        self.derived = derived      # set False for outputs that are fresh constants (factories, RNG)
        self._pre = pre             # id(Tracked) -> value before an in-place op mutated it

    def arg(self, name: str, default: Any = None) -> Any:
        v = self.bound.get(name, default)
        return default if v is None else v

    def value(self, a: Any) -> Any:
        """Plain value of ``a`` (as it was before the op ran)."""
        if isinstance(a, _t.Tracked):
            return self._pre.get(id(a), a.value)
        return a

    def prov(self, a: Any) -> Optional[Prov]:
        """Row-major provenance of ``a``; ``None`` if ``a`` carries no dependencies."""
        if isinstance(a, _t.Tracked) and a.dtype in _t.DIFFERENTIABLE and a._store.prov is not None:
            return a._prov()
        return None

    @property
    def drops_zeros(self) -> bool:
        """Value-aware products: ``constant_zeros="drop"``, or unset (``None``) in local mode."""
        cz = config().constant_zeros
        return cz == "drop" or (cz is None and self.local)

    def is_derived(self, a: Any) -> bool:
        """Whether ``a``'s values were computed from tracked values (choices made by it are not constant)."""
        return isinstance(a, _t.Tracked) and a._store.derived

    def tensor_args(self) -> List[Any]:
        return [a for a in tree_flatten((self.args, self.kwargs))[0] if isinstance(a, torch.Tensor)]


def bind(schema, args, kwargs) -> dict:
    out = {}
    for i, a in enumerate(schema.arguments):
        if i < len(args) and not a.kwarg_only:
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
    return out


def _user_stacklevel() -> int:
    """Stack level of the first frame outside trackjac and torch, so warnings point at user code."""
    import sys
    f, level = sys._getframe(1), 1
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if not (mod.startswith("trackjac.") or mod == "trackjac" or mod.startswith("torch")):
            return level
        f, level = f.f_back, level + 1
    return 1


def _warn_or_raise(msg: str, category, strict: bool) -> None:
    if strict:
        raise StrictModeError(msg)
    warnings.warn(msg, category, stacklevel=_user_stacklevel())


def conservative(call: Call) -> List[Optional[Prov]]:
    """Every float output element depends on every tracked element the op reads."""
    cols = [p.col for p in (call.prov(a) for a in call.tensor_args()) if p is not None]
    ids = torch.unique(torch.cat(cols)) if cols else None
    res = []
    for o in call.outs:
        if ids is None or o.dtype not in _t.DIFFERENTIABLE:
            res.append(None)
        else:
            res.append(broadcast_row(ids.to(o.device), o.numel()))
    return res


def control_flow(what, flat_tracked) -> None:
    """Python is about to read tracked values: warn (global mode) or raise (strict)."""
    cfg = config()
    if not any(t._store.derived for t in flat_tracked):
        return
    if cfg.local or any(t._store.local for t in flat_tracked):
        return
    cfg.path_dependent = True
    if cfg.strict:
        raise StrictModeError(
            f"Python read the value of a tracked tensor ({what}): the pattern would hold only on "
            "this control-flow path. Use torch.where / masks instead of Python branching, or pass "
            "strict=False (then a ControlFlowWarning is issued) or local=True.")
    if not cfg.warned_control_flow:
        cfg.warned_control_flow = True
        warnings.warn(
            f"Python read the value of a tracked tensor ({what}: bool(), item(), tolist() or "
            "'if t > 0:'): the Jacobian pattern holds only for inputs that take the same "
            "control-flow path.", ControlFlowWarning, stacklevel=_user_stacklevel())


def dispatch(func, args, kwargs):
    # Provenance bookkeeping must not see the tracking context's factory mode.
    with torch._C.DisableTorchFunction():
        return _dispatch(func, args, kwargs)


class _Threads:
    """Run CPU bookkeeping with ``config().threads`` intra-op threads.

    Provenance kernels are small and memory-bound: on a busy 2-core machine torch's
    thread pool made them up to 10x slower than one thread.
    """

    __slots__ = ("n", "saved")

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.n and self.n != self.saved:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n and self.n != self.saved:
            torch.set_num_threads(self.saved)


def _dispatch(func, args, kwargs):
    from .rules import lookup

    Tracked = _t.Tracked
    cfg = config()
    flat, _ = tree_flatten((args, kwargs))
    tracked = [a for a in flat if isinstance(a, Tracked)]
    packet = func.overloadpacket

    if packet in _SCALAR_READS:
        control_flow(func, tracked)
        return func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))

    schema = func._schema
    bound = bind(schema, args, kwargs)
    local = cfg.local or any(t._store.local for t in tracked)
    derived = any(t._store.derived for t in tracked)

    # Arguments the op writes to and returns (in-place and out= ops).  Arguments written but
    # not returned (batch norm's running statistics) carry no derivative and are left alone.
    ret_sets = set()
    for r in schema.returns:
        if r.alias_info is not None and r.alias_info.is_write:
            ret_sets |= r.alias_info.before_set
    written = {}
    for a in schema.arguments:
        if (a.alias_info is not None and a.alias_info.is_write and a.name in bound
                and (not schema.returns or a.alias_info.before_set & ret_sets)):
            written[a.name] = bound[a.name]
    pre = {}
    for name, obj in written.items():
        for t in (obj if isinstance(obj, (list, tuple)) else [obj]):
            if isinstance(t, Tracked):
                pre[id(t)] = t.value.clone()
            elif isinstance(t, torch.Tensor) and derived:
                raise TrackingError(
                    f"{func}: writing a tracked value into a plain tensor would lose its provenance. "
                    "Create the tensor inside the tracked function (or inside `with trackjac.tracking():`) "
                    "so it is trackable, or build the result out of place (torch.cat, torch.where, "
                    "x.new_zeros(...)).")

    out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))

    if torch.Tag.inplace_view in func.tags and packet not in _STORAGE_WRITES:
        # squeeze_, transpose_, as_strided_ ...: only the tensor's geometry changed; the storage and
        # its provenance did not.  The wrapper's own sizes/strides must follow its value's.
        me = bound.get("self")
        if isinstance(me, Tracked):
            _sync_geometry(me)
        return me

    # Flatten outputs together with what each aliases.
    rets = schema.returns
    if len(rets) == 0:
        outs_obj = [written[n] for n in written]
        out_flat = [t for o in outs_obj for t in (o if isinstance(o, (list, tuple)) else [o])]
        kinds = [("write", t) for t in out_flat]
        values = [t.value if isinstance(t, Tracked) else t for t in out_flat]
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
    kinds = [("new", None) if k == "view" and isinstance(s, Tracked) and isinstance(v, torch.Tensor)
             and v.dtype.itemsize != s.dtype.itemsize else (k, s) for v, (k, s) in zip(values, kinds)]
    no_grad = not torch.is_grad_enabled()
    if packet is aten.detach or no_grad:
        # No derivative flows: results are derived values with no provenance.  A tensor written
        # in place under no_grad keeps its provenance: autograd records nothing, so derivatives
        # keep flowing through it as before (clamp_ in gaussian_nll_loss, optimizer steps).
        kinds = [("new", None) if k == "view" else (k, s) for k, s in kinds]
        tracked = []
    tensor_vals = [v for v in values if isinstance(v, torch.Tensor)]
    call = Call(func, args, kwargs, bound, tensor_vals, local, derived, pre)
    needs_rule = any(k in ("new", "write") and isinstance(v, torch.Tensor) and v.dtype in _t.DIFFERENTIABLE
                     for v, (k, _) in zip(values, kinds))
    provs: List[Optional[Prov]] = [None] * len(tensor_vals)
    if needs_rule and tracked:
        rule = lookup(func)
        if rule is None:
            _warn_or_raise(
                f"trackjac has no provenance rule for {func}; using a conservative pattern "
                "(every output element depends on every tracked input element of this op)",
                UnsupportedOpWarning, cfg.strict)
        with _Threads(cfg.threads):
            provs = conservative(call) if rule is None else list(rule(call))
    derived = call.derived

    wrapped, k = [], 0
    for v, (kind, src) in zip(values, kinds):
        if not isinstance(v, torch.Tensor):
            wrapped.append(v)
            continue
        p = provs[k] if v.dtype in _t.DIFFERENTIABLE else None
        k += 1
        if kind == "view":
            wrapped.append(Tracked._make(v, src._store) if isinstance(src, Tracked) else v)
        elif kind == "write":
            if isinstance(src, Tracked):
                if no_grad:
                    src._store.derived = src._store.derived or derived
                else:
                    src._write(p, derived)
                wrapped.append(src)
            else:
                wrapped.append(v)
        else:
            wrapped.append(Tracked._from_prov(v, p, derived, local))
    if len(rets) == 0:
        return out
    # Re-nest like the op's output.
    it = iter(wrapped)
    res = out if len(rets) > 1 else (out,)
    nested = []
    for o in res:
        if isinstance(o, (list, tuple)):
            nested.append(type(o)(next(it) for _ in o))
        else:
            nested.append(next(it))
    return tuple(nested) if len(rets) > 1 else nested[0]


_STORAGE_WRITES = {aten.resize_, aten.resize_as_, aten.set_, aten.detach_}


def _sync_geometry(t) -> None:
    v = t.value
    if t.shape == v.shape and t.stride() == v.stride() and t.storage_offset() == v.storage_offset():
        return
    from torch.utils._mode_utils import no_dispatch
    try:
        with no_dispatch():
            torch.Tensor.as_strided_(t, v.shape, v.stride(), v.storage_offset())
    except RuntimeError as e:
        raise TrackingError(f"cannot apply an in-place view op to a Tracked tensor here: {e}") from e


def _unwrap(a):
    return a.value if isinstance(a, _t.Tracked) else a


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
