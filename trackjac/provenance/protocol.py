"""The interface both provenance representations implement."""
from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import torch


@runtime_checkable
class Provenance(Protocol):
    """Per-element dependency sets of ``numel`` elements in row-major order.

    Row ``i`` is the set of input ids element ``i`` depends on.  Implemented by
    :class:`~.sets.SetProv` (CSR) and :class:`~.bits.BitProv` (packed bitmasks);
    operations that take two provenances live in :mod:`.mixed`.
    """

    @property
    def numel(self) -> int: ...

    @property
    def nnz(self) -> int:
        """Number of (element, id) entries."""

    @property
    def device(self) -> torch.device: ...

    @property
    def width(self) -> int:
        """Common length of all rows, ``-1`` if they differ."""

    @property
    def ptr(self) -> torch.Tensor:
        """CSR row pointers ``(numel + 1,)``."""

    @property
    def col(self) -> torch.Tensor:
        """CSR ids, row by row."""

    def lengths(self) -> torch.Tensor:
        """Number of ids of every row."""

    def rows(self) -> torch.Tensor:
        """Row index of every entry (aligned with ``col``)."""

    def gather(self, idx: torch.Tensor) -> "Provenance":
        """Row ``i`` of the result is row ``idx[i]`` (``-1``: an empty row)."""

    def scatter(self, out_rows: torch.Tensor, numel: int,
                in_rows: Optional[torch.Tensor] = None) -> "Provenance":
        """Union-push of rows into ``numel`` result rows, same representation."""

    def to_sets(self):
        """The same sets as CSR (:class:`~.sets.SetProv`)."""

    def to_coo(self, lo: int, n: int, layout=torch.sparse_coo) -> torch.Tensor:
        """2-D boolean pattern ``(numel, n)`` of the ids in ``[lo, lo + n)``."""

    def to(self, device) -> "Provenance": ...
