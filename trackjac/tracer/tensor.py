"""The ``Tracked`` tensor: real values plus per-element provenance.

Provenance is kept per *storage* (a :class:`_Store` shared by a tensor and all
its views), indexed by storage position, so a write through a view is seen by
the base and by every other view, exactly as for the values.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch.utils._pytree import tree_map

from .._sparse import empty_coo
from ..dtypes import FLOATING
from ..provenance import Provenance, empty, identity, policy, replace_rows
from ..rules import Carrier
from . import sources
from .control_flow import control_flow
from .dispatch import dispatch
from .state import config


class _Store:
    """Provenance of one storage: ``prov`` rows are storage positions (``None``: no dependencies)."""

    __slots__ = ("prov", "numel", "derived", "local")

    def __init__(self, prov: Optional[Provenance], numel: int, derived: bool, local: bool = False):
        self.prov = prov
        self.numel = numel
        self.derived = derived  # values computed from tracked values (even non-differentiably)
        self.local = local


def _storage_numel(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes() // t.element_size()


def positions(t: torch.Tensor, store_numel: int) -> Optional[torch.Tensor]:
    """Storage position of each element of ``t`` in row-major order; ``None`` if the identity."""
    if t.is_contiguous() and t.storage_offset() == 0 and t.numel() == store_numel:
        return None
    base = torch.arange(max(store_numel, 1), dtype=torch.int64, device=t.device)
    return base.as_strided(t.shape, t.stride(), t.storage_offset()).reshape(-1)


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
            src = sources.allocate(value.numel(), value.shape)
            prov = identity(value.numel(), src.first, value.device, _source_representation(value.numel()))
            return cls._make(value, _Store(prov, value.numel(), True, local), src)

    def __init__(self, *args, **kwargs):  # construction happens in __new__
        super().__init__()

    @classmethod
    def _make(cls, value: torch.Tensor, store: _Store, source=None) -> "Tracked":
        r = torch.Tensor._make_wrapper_subclass(
            cls, value.size(), strides=value.stride(), storage_offset=value.storage_offset(),
            dtype=value.dtype, device=value.device, layout=value.layout,
            requires_grad=False)
        if value.is_conj():  # lazy conjugation/negation bits live on the tensor, mirror them
            torch._C._set_conj(r, True)
        if value.is_neg():
            torch._C._set_neg(r, True)
        r.value = value
        r._store = store
        r._source = source
        return r

    @classmethod
    def _constant(cls, value: torch.Tensor) -> "Tracked":
        """A trackable tensor with no dependencies (factory output inside ``tracking()``)."""
        return cls._make(value, _Store(None, _storage_numel(value), False))

    @classmethod
    def _from_prov(cls, value: torch.Tensor, prov: Optional[Provenance], derived: bool, local: bool) -> "Tracked":
        """Wrap a freshly computed value whose logical-order provenance is ``prov``."""
        n = _storage_numel(value)
        if prov is not None:
            pos = positions(value, n)
            if pos is not None:
                prov = replace_rows(empty(n, value.device), pos, prov) if n else empty(0, value.device)
        return cls._make(value, _Store(prov, n, derived, local))

    # -- provenance access ---------------------------------------------------
    def _prov(self) -> Provenance:
        """Provenance in row-major (logical) element order."""
        st = self._store
        if st.prov is None:
            return empty(self.value.numel(), self.value.device)
        v = self.value
        geometry = (v.shape, v.stride(), v.storage_offset())
        cached = getattr(self, "_view_prov", None)  # a view read by several ops (u * u + u.roll(1))
        if cached is not None and cached[0] is st.prov and cached[1] == geometry:
            return cached[2]
        with torch._C.DisableTorchFunction():  # also called inside tracking(): no factory wrapping
            pos = positions(v, st.numel)
            if pos is None:
                return st.prov
            prov = st.prov.gather(pos)
        self._view_prov = (st.prov, geometry, prov)
        return prov

    def _write(self, prov: Optional[Provenance], derived: bool) -> None:
        """In-place write: this tensor's elements now have provenance ``prov``."""
        st = self._store
        st.derived = st.derived or derived
        if prov is None or prov.nnz == 0:
            if st.prov is None:
                return
            prov = empty(self.value.numel(), self.value.device)
        pos = positions(self.value, st.numel)
        if pos is None:
            st.prov = prov
            return
        base = st.prov if st.prov is not None else empty(st.numel, self.value.device)
        st.prov = replace_rows(base, pos, prov)

    def tolist(self):
        """Python values (a control-flow read of tracked values, see :class:`ControlFlowWarning`)."""
        control_flow("tolist()", [self])
        return self.value.tolist()

    def numpy(self, *, force: bool = False):
        control_flow("numpy()", [self])
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
