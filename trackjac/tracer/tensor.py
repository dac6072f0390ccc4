"""The ``Tracked`` tensor: real values plus per-element provenance.

Provenance is kept per *storage* (a :class:`_Store` shared by a tensor and all
its views), indexed by storage position, so a write through a view is seen by
the base and by every other view, exactly as for the values.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch.utils._mode_utils import no_dispatch
from torch.utils._pytree import tree_map

from .._sparse import empty_coo
from ..dtypes import FLOATING
from ..errors import TrackingError
from ..provenance import Provenance, cat_rows, empty, identity, policy, replace_rows, scatter, union
from ..rules import Carrier
from . import sources
from .control_flow import control_flow
from .dispatch import claim_dispatch_rules, dispatch, note_value_read
from .origin import GLOBAL, LOCAL, SOURCES
from .state import SAME, config


class _Store:
    """Provenance of one storage: ``prov`` rows are storage positions in units of ``unit`` bytes
    (the element size of the tensor that made the store; ``None``: no dependencies).

    ``nonlinear`` (same rows; ``None``: empty; :data:`SAME`: equal to ``prov``) are the
    dependencies through which the derivative is not constant, kept only while classifying
    (``jacobian_sparsity(classify=True)``).

    ``origin`` says which kinds of source the values were computed from (even
    non-differentiably): ``LOCAL``, ``GLOBAL``, both, or neither, and ``RANDOM`` for values drawn
    at random (see :mod:`.origin`); ``0`` is a constant.
    """

    __slots__ = ("prov", "numel", "unit", "origin", "argument", "nonlinear")

    def __init__(self, prov: Optional[Provenance], numel: int, unit: int, origin: int, nonlinear=SAME):
        self.prov = prov
        self.nonlinear = nonlinear
        self.numel = numel
        self.unit = unit
        self.origin = origin
        self.argument = None  # for an argument of a function being traced: its position (no writes)

    @property
    def derived(self) -> bool:
        """Whether the values were computed from tracked values (choices made by them are not constant)."""
        return bool(self.origin & SOURCES)

    @property
    def local(self) -> bool:
        """Whether the values come from local sources only."""
        return self.origin & SOURCES == LOCAL


def _storage_numel(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes() // t.element_size()


def positions(t: torch.Tensor, store_numel: int) -> Optional[torch.Tensor]:
    """Storage position of each element of ``t`` in row-major order, in units of ``t``'s
    element size; ``None`` if the identity."""
    if t.is_contiguous() and t.storage_offset() == 0 and t.numel() == store_numel:
        return None
    base = torch.arange(max(store_numel, 1), dtype=torch.int64, device=t.device)
    return base.as_strided(t.shape, t.stride(), t.storage_offset()).reshape(-1)


def _store_rows(t: torch.Tensor, st: _Store):
    """Where ``t``'s elements live in ``st``: ``(pos, k)`` with ``k`` the element size ratio.

    ``k == 1``: element ``i`` is store row ``pos[i]`` (``pos`` ``None``: the identity).
    ``k > 1`` (a complex view of real storage): element ``i`` spans rows ``pos[i] * k + j``.
    ``k < 0`` (a real view of complex storage): element ``i`` is part ``pos[i] % -k`` of row
    ``pos[i] // -k``; a complex element is one row for its real and imaginary parts.
    """
    e = t.element_size()
    if e == st.unit:
        return positions(t, st.numel), 1
    pos = positions(t, t.untyped_storage().nbytes() // e)
    if pos is None:
        pos = torch.arange(t.numel(), dtype=torch.int64, device=t.device)
    return pos, (e // st.unit if e > st.unit else -(st.unit // e))


def _source_representation(numel: int) -> str:
    """``"sets"`` or ``"bits"`` for a new source (see ``tracking(representation=...)``)."""
    n = config().n_inputs
    return policy.choose(numel if n is None else n)


class Tracked(torch.Tensor, Carrier):
    """A tensor that records which source elements each of its elements depends on.

    ``Tracked(x)`` makes ``x`` a *source*: run ordinary PyTorch code on it and ask
    ``y.depends_on(x)``.  ``t.value`` is the plain tensor.

    Args:
        x: a floating tensor (float16, bfloat16, float32 or float64), any device.
        local: resolve value-dependent choices (``where``, ``max``, ``relu``,
            sorting, max-pooling ...) at this point instead of keeping every candidate,
            and drop constant zeros of products (``constant_zeros`` of :func:`tracking`).
    """

    value: torch.Tensor
    _store: _Store
    _source: Optional[sources.Source]

    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, x: torch.Tensor, *, local: bool = False):
        if isinstance(x, Tracked):
            if x._source is None and not x._store.derived and x._store.prov is None:
                x = x.value   # a constant made inside tracking() (torch.zeros ...): becomes a source
            else:
                raise TypeError("Tracked(x): x is already Tracked; use x.value to get the plain tensor")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Tracked(x) needs a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOATING:
            raise TypeError(
                f"Tracked(x) needs a real floating tensor (float16, bfloat16, float32, float64), "
                f"got {x.dtype}: integer, boolean and complex tensors have no real Jacobian")
        if x.layout != torch.strided:
            raise TypeError(f"Tracked(x) needs a strided (dense) tensor, got layout {x.layout}: "
                            "trackjac does not track sparse tensors; pass x.to_dense()")
        with torch._C.DisableTorchFunction():  # internal tensors must not become Tracked
            value = x.detach().contiguous()
            if value.numel() and _storage_numel(value) != value.numel():
                value = value.clone()
            src = sources.allocate(value.numel(), value.shape, local)
            prov = identity(value.numel(), src.first, value.device, _source_representation(value.numel()))
            # a source's derivative w.r.t. itself is constant (tracked only while classifying)
            store = _Store(prov, value.numel(), value.element_size(), LOCAL if local else GLOBAL,
                           None if config().classify else SAME)
            return cls._make(value, store, src)

    def __init__(self, *args, **kwargs):  # construction happens in __new__
        super().__init__()

    @classmethod
    def _make(cls, value: torch.Tensor, store: _Store, source=None) -> "Tracked":
        with torch._C._DisableFuncTorch():  # inside torch.func.grad, not a tensor of its level
            r = torch.Tensor._make_subclass(cls, value, False)
        r.value = value
        r._store = store
        r._source = source
        return r

    @classmethod
    def _constant(cls, value: torch.Tensor) -> "Tracked":
        """A trackable tensor with no dependencies (factory output inside ``tracking()``)."""
        return cls._make(value, _Store(None, _storage_numel(value), value.element_size(), 0))

    @classmethod
    def _from_prov(cls, value: torch.Tensor, prov: Optional[Provenance], origin: int,
                   nonlinear: Any = SAME) -> "Tracked":
        """Wrap a freshly computed value whose logical-order provenance is ``prov`` (``origin``,
        ``nonlinear``: see :class:`_Store`; here in logical order)."""
        n = _storage_numel(value)
        pos = positions(value, n) if prov is not None else None

        def stored(p):
            if p is None or pos is None:
                return p
            return replace_rows(empty(n, value.device), pos, p) if n else empty(0, value.device)
        if nonlinear is not SAME:
            nonlinear = None if prov is None else stored(nonlinear)
        return cls._make(value, _Store(stored(prov), n, value.element_size(), origin, nonlinear))

    # -- provenance access ---------------------------------------------------
    def _prov(self) -> Provenance:
        """Provenance in row-major (logical) element order."""
        st = self._store
        if st.prov is None:
            return empty(self.value.numel(), self.value.device)
        return self._logical(st.prov, "_view_prov")

    def _nonlinear(self) -> Optional[Provenance]:
        """The nonlinear dependencies (see :class:`_Store`) in row-major order; ``None``: none."""
        st = self._store
        if st.prov is None or st.nonlinear is None:
            return None
        if st.nonlinear is SAME:
            return self._prov()
        return self._logical(st.nonlinear, "_view_nonlinear")

    def _logical(self, rows: Provenance, cache: str) -> Provenance:
        """Store ``rows`` of this tensor's elements, in row-major order."""
        st = self._store
        v = self.value
        geometry = (v.shape, v.stride(), v.storage_offset())
        cached = getattr(self, cache, None)  # a view read by several ops (u * u + u.roll(1))
        if cached is not None and cached[0] is rows and cached[1] == geometry:
            return cached[2]
        with torch._C.DisableTorchFunction():  # also called inside tracking(): no factory wrapping
            pos, k = _store_rows(v, st)
            if pos is None:
                return rows
            if k == 1:
                prov = rows.gather(pos)
            elif k > 1:
                prov = union([rows.gather(pos * k + j) for j in range(k)], pos.numel())
            else:
                prov = rows.gather(torch.div(pos, -k, rounding_mode="floor"))
        setattr(self, cache, (rows, geometry, prov))
        return prov

    def _write(self, prov: Optional[Provenance], origin: int, nonlinear: Any = SAME) -> None:
        """In-place write: this tensor's elements now have provenance ``prov``, computed from
        sources of ``origin``, with nonlinear dependencies ``nonlinear`` (logical order, see
        :class:`_Store`)."""
        st = self._store
        st.origin |= origin
        if nonlinear is not SAME or st.nonlinear is not SAME:
            # the rows not written keep their own nonlinear part: spell it out before the write
            base = st.prov if st.nonlinear is SAME else st.nonlinear
            st.nonlinear = self._rows_written(base, prov if nonlinear is SAME else nonlinear)
        st.prov = self._rows_written(st.prov, prov)

    def _rows_written(self, base: Optional[Provenance], prov: Optional[Provenance]) -> Optional[Provenance]:
        """Store rows ``base`` after this tensor's elements are written with (logical) ``prov``."""
        st = self._store
        if prov is None or prov.nnz == 0:
            if base is None:
                return None
            prov = empty(self.value.numel(), self.value.device)
        with torch._C.DisableTorchFunction():
            pos, k = _store_rows(self.value, st)
            if pos is None:
                return prov
            base = base if base is not None else empty(st.numel, self.value.device)
            if k == 1:
                return replace_rows(base, pos, prov)
            if k > 1:   # every row an element spans gets the element's provenance
                return replace_rows(base, torch.cat([pos * k + j for j in range(k)]), cat_rows([prov] * k))
            # a row is replaced only where all its parts are written; else it grows
            rows = torch.div(pos, -k, rounding_mode="floor")
            touched, counts = torch.unique(rows, return_counts=True)
            pushed = scatter(prov, rows, st.numel).gather(touched)
            kept = base.gather(torch.where(counts < -k, touched, torch.full_like(touched, -1)))
            return replace_rows(base, touched, union([pushed, kept], touched.numel()))

    def _follow_value(self) -> None:
        """After a resize of the value's storage: grow the store (new elements depend on
        nothing) and make the wrapper's geometry match."""
        st, v = self._store, self.value
        if v.element_size() == st.unit:
            n = _storage_numel(v)
            if n > st.numel:
                if st.prov is not None:
                    st.prov = cat_rows([st.prov, empty(n - st.numel, v.device)])
                if st.nonlinear is not None and st.nonlinear is not SAME:
                    st.nonlinear = cat_rows([st.nonlinear, empty(n - st.numel, v.device)])
                st.numel = n
        self._sync_geometry()

    def _sync_geometry(self) -> None:
        """The wrapper's sizes and strides follow its value's (after in-place view ops and resizes)."""
        v = self.value
        if self.shape == v.shape and self.stride() == v.stride() and self.storage_offset() == v.storage_offset():
            return
        try:
            with no_dispatch():
                if torch.Tensor.untyped_storage(self).nbytes() < v.untyped_storage().nbytes():
                    # the wrapper's placeholder storage must fit the value's geometry
                    torch.Tensor.resize_(self, (v.untyped_storage().nbytes() // max(v.element_size(), 1),))
                torch.Tensor.as_strided_(self, v.shape, v.stride(), v.storage_offset())
        except RuntimeError as e:
            raise TrackingError(f"cannot apply an in-place view op to a Tracked tensor here: {e}") from e

    def as_subclass(self, cls):
        """Refused with a clear error: the new object would share this wrapper without its provenance."""
        if isinstance(cls, type) and issubclass(cls, Tracked):
            return super().as_subclass(cls)
        raise TrackingError(
            f"as_subclass({getattr(cls, '__name__', cls)}): a Tracked tensor cannot be re-wrapped as another "
            "tensor subclass (as libraries like pypose's LieTensor do): the new object would carry no "
            "provenance. Use the library's functional ops on plain tensors inside the traced function "
            "(for pypose: the functions of pypose.lietensor on .tensor() values), or track the plain "
            "tensor computation they perform.")

    def untyped_storage(self):
        """The value's storage (which the subclass shares)."""
        return self.value.untyped_storage()

    def item(self):
        """A Python number (a control-flow read of tracked values, see :class:`ControlFlowWarning`)."""
        control_flow("item()", [self])
        note_value_read([self])
        return self.value.item()

    def tolist(self):
        """Python values (a control-flow read of tracked values, see :class:`ControlFlowWarning`)."""
        control_flow("tolist()", [self])
        note_value_read([self])
        return self.value.tolist()

    def numpy(self, *, force: bool = False):
        control_flow("numpy()", [self])
        note_value_read([self])
        return self.value.numpy(force=force)

    @property
    def is_source(self) -> bool:
        return self._source is not None

    def depends_on(self, x: "Tracked", layout=torch.sparse_coo) -> torch.Tensor:
        """Boolean pattern of shape ``self.shape + x.shape``: ``True`` where ``self[i]`` depends on ``x[j]``.

        Args:
            x: a source (a tensor created by ``Tracked(...)``, not a view or result of it).
            layout: ``torch.sparse_coo`` (coalesced, default) or ``torch.strided`` (dense).
        """
        return depends_on(self, x, layout=layout)

    def __repr__(self, *, tensor_contents=None) -> str:
        kind = "source" if self._source is not None else "tracked"
        return f"Tracked({kind}, {self.value!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return dispatch(cls, func, args, kwargs or {})


claim_dispatch_rules(Tracked)  # spares a first call torch's import of torch.distributed.tensor


def depends_on(y: Any, x: Tracked, layout=torch.sparse_coo) -> torch.Tensor:
    """Boolean pattern ``y.shape + x.shape`` of which elements of source ``x`` each ``y`` element depends on."""
    if not (isinstance(x, Tracked) and x._source is not None):
        raise ValueError(
            "depends_on(x): x must be a source, i.e. the tensor returned by trackjac.Tracked(...) "
            "itself (not a view, copy or result of a computation on it)")
    if layout not in (torch.sparse_coo, torch.strided):
        raise ValueError(f"depends_on: layout must be torch.sparse_coo or torch.strided, got {layout}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"depends_on: y must be a tensor, got {type(y).__name__}")
    with torch._C.DisableTorchFunction():  # internal tensors must not become Tracked
        return _depends_on(y, x._source, layout)


def _depends_on(y, src, layout):
    yshape = tuple(y.shape)
    if isinstance(y, Tracked):
        pat = y._prov().to_coo(src.first, src.numel)
    else:
        pat = empty_coo((y.numel(), src.numel), y.device)
    if layout == torch.strided:
        return pat.to_dense().reshape(yshape + src.shape)
    idx = pat.indices()
    rows = _unravel(idx[0], yshape)
    cols = _unravel(idx[1], src.shape)
    return torch.sparse_coo_tensor(torch.cat([rows, cols]), pat.values(), yshape + src.shape,
                                   is_coalesced=True, check_invariants=False)


def _unravel(flat: torch.Tensor, shape) -> torch.Tensor:
    if not shape:
        return flat.new_zeros(0, flat.numel())
    return torch.stack(torch.unravel_index(flat, shape))


def untrack(obj: Any) -> Any:
    """Replace every :class:`Tracked` in a pytree by its plain value."""
    return tree_map(lambda a: a.value if isinstance(a, Tracked) else a, obj)
