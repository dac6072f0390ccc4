"""The pattern algebra: for each element of a tensor, the set of input ids it depends on.

Two representations implement :class:`Provenance`:

* :class:`SetProv` (:mod:`.sets`): CSR on the values' device, memory and time
  proportional to the structural dependencies, never to ``numel x n_inputs``;
* :class:`BitProv` (:mod:`.bits`): packed bitmasks, one row of int64 words per
  element, for computations with few inputs.

The functions of :mod:`.mixed` (:func:`union`, :func:`cat_rows`, :func:`scatter`,
:func:`replace_rows`, :func:`broadcast_row`, :func:`all_ids`, :func:`identity`)
accept either; which one new sources use is :mod:`.policy`'s setting.  Input ids
are global integers: each source owns a contiguous range.  Nothing here knows
about tensors being traced.
"""
from . import policy
from .bits import BitProv
from .mixed import (all_ids, broadcast_row, cat_rows, common, densify, empty, identity, replace_rows,
                    scatter, union, without_ids)
from .protocol import Provenance
from .sets import SetProv

__all__ = [
    "Provenance", "SetProv", "BitProv", "policy",
    "union", "cat_rows", "scatter", "replace_rows", "broadcast_row", "all_ids", "identity", "empty",
    "common", "densify", "without_ids",
]
