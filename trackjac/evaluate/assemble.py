"""Sparse tensors of one (output, input) block from its values: COO, CSR, CSC, BSR or BSC.

The values of a block come in the row-major order of its pattern. Everything a layout
needs beyond that (compressed indices, the column-major permutation of CSC, the block
slots of BSR/BSC) is computed once when the :class:`Block` is built.
"""
from __future__ import annotations

import warnings

from typing import Any, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .._sparse import stacked
from .structure import Structure

LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)
BLOCKED = (torch.sparse_bsr, torch.sparse_bsc)

Pair = Tuple[int, int]
# normalized ``blocksize``: one pair for every block, one per input, or a grid [output][input]
Blocksize = Union[Pair, Tuple[Pair, ...], Tuple[Tuple[Pair, ...], ...]]


def check_layout(layout) -> None:
    if layout not in LAYOUTS:
        raise ValueError("layout must be torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, "
                         f"torch.sparse_bsr or torch.sparse_bsc; got {layout}")


def _compressed(idx: Tensor, n: int) -> Tensor:
    """Compressed index pointers (``n + 1``) of sorted indices ``idx`` in ``[0, n)``."""
    ptr = torch.zeros(n + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(idx, minlength=n), 0, out=ptr[1:])
    return ptr


class Block:
    """Decompression and layout indices of one (output, input) block, on the device.

    ``rows, cols``: the block's pattern, row-major (the order of the values passed to
    :meth:`assemble`); ``blocksize``: this block's ``(R, C)`` for BSR/BSC, else None.
    """

    def __init__(self, rows: Tensor, cols: Tensor, shape: Tuple[int, int], layout,
                 blocksize: Optional[Pair], device):
        self.shape = shape
        self.nnz = rows.numel()
        self.layout = layout
        m, n = shape
        if layout == torch.sparse_coo:
            self.indices = stacked(rows, cols).to(device)
        elif layout == torch.sparse_csr:
            self.crow, self.col = _compressed(rows, m).to(device), cols.to(device)
        elif layout == torch.sparse_csc:
            # a stable sort by column keeps the rows ascending within each column
            order = torch.sort(cols, stable=True).indices
            self.ccol, self.row = _compressed(cols[order], n).to(device), rows[order].to(device)
            identity = bool(torch.equal(order, torch.arange(order.numel())))
            self.perm = None if identity else order.to(device)
        else:
            R, C = blocksize  # type: ignore[misc]
            nbr, nbc = m // R, n // C
            if layout == torch.sparse_bsr:
                key = (rows // R) * nbc + cols // C
            else:  # blocks in column-major order
                key = (cols // C) * nbr + rows // R
            ukey, inv = torch.unique(key, sorted=True, return_inverse=True)
            self.nblocks = ukey.numel()
            if layout == torch.sparse_bsr:
                self.crow, self.col = _compressed(ukey // nbc, nbr).to(device), (ukey % nbc).to(device)
            else:
                self.ccol, self.row = _compressed(ukey // nbr, nbc).to(device), (ukey % nbr).to(device)
            self.blocksize = (R, C)
            # each value's place in the (nblocks, R, C) block values, row-major inside a block
            self.slot = (inv * (R * C) + (rows % R) * C + cols % C).to(device)

    def assemble(self, values: Tensor) -> Tensor:
        m, n = self.shape
        if self.layout == torch.sparse_coo:
            return torch.sparse_coo_tensor(
                self.indices, values, (m, n), is_coalesced=True, check_invariants=False
            )
        with warnings.catch_warnings():
            # torch's once-per-process "support is in beta state" notice would point into trackjac,
            # not at the user's code; the layout was the user's choice
            warnings.filterwarnings("ignore", message="Sparse (CSR|CSC|BSR|BSC) tensor support is in beta")
            if self.layout == torch.sparse_csr:
                return torch.sparse_csr_tensor(self.crow, self.col, values, (m, n), check_invariants=False)
            if self.layout == torch.sparse_csc:
                vals = values if self.perm is None else values.index_select(0, self.perm)
                return torch.sparse_csc_tensor(self.ccol, self.row, vals, (m, n), check_invariants=False)
            R, C = self.blocksize
            dense_blocks = values.new_zeros(self.nblocks * R * C).scatter_(0, self.slot, values)
            dense_blocks = dense_blocks.view(self.nblocks, R, C)
            if self.layout == torch.sparse_bsr:
                return torch.sparse_bsr_tensor(self.crow, self.col, dense_blocks, (m, n), check_invariants=False)
            return torch.sparse_bsc_tensor(self.ccol, self.row, dense_blocks, (m, n), check_invariants=False)


def merge(parts: List[Tuple[Optional[Tensor], Tensor]], nnz: int, dtype: torch.dtype, device) -> Tensor:
    """Values of one block from its per-chunk gathers."""
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    if not parts:
        return torch.zeros(nnz, dtype=dtype, device=device)  # no colors: an empty pattern
    out = parts[0][1].new_empty(nnz)
    for sel, vals in parts:
        # 1-D with unique positions: scatter_ is index_copy_, and on CPU it ran in half the time
        # (65,536 values into 196,608: 78 against 141 us, one thread)
        out.scatter_(0, sel, vals)
    return out


def placement(st: Structure, layout, blocksize) -> Tuple[torch.device, Optional[Blocksize]]:
    """The one device of the differentiated arguments, and the checked ``blocksize`` of ``layout``."""
    devices = {s.device for s in st.in_specs}
    if len(devices) != 1:
        raise ValueError(f"all differentiated arguments must be on one device; got {sorted(map(str, devices))}")
    if layout in BLOCKED:
        blocksize = check_blocksize(blocksize, st)
    elif blocksize is not None:
        raise ValueError("blocksize only applies to layout=torch.sparse_bsr or torch.sparse_bsc")
    return devices.pop(), blocksize


def blocksize_of(blocksize: Optional[Blocksize], j: int, i: int) -> Optional[Pair]:
    """The ``(R, C)`` of block ``[j][i]`` (output ``j``, input ``i``) from a normalized ``blocksize``."""
    if blocksize is None:
        return None
    if isinstance(blocksize[0], int):
        return blocksize  # type: ignore[return-value]
    if isinstance(blocksize[0][0], int):  # type: ignore[index]
        return blocksize[i]  # type: ignore[return-value]
    return blocksize[j][i]  # type: ignore[return-value,index]


def _as_pair(b: Any) -> Optional[Pair]:
    """``b`` as a pair of ints, or None when it is not a sequence of two ints."""
    if isinstance(b, (tuple, list, torch.Size)) and len(b) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in b):
        return int(b[0]), int(b[1])
    return None


def _is_pairs(x: Any) -> bool:
    return isinstance(x, (tuple, list)) and len(x) > 0 and all(_as_pair(b) is not None for b in x)


_FORMS = ("blocksize must be (rows, cols) for every block; a sequence of (rows, cols), one per "
          "differentiated argument; a dict {argument position: (rows, cols)}; or a grid of (rows, cols) "
          "nested like the Jacobian ([output][input])")


def check_blocksize(blocksize: Any, st: Structure) -> Blocksize:
    """``blocksize`` normalized (see :data:`Blocksize`), every block's ``(R, C)`` checked to be
    positive and to divide that block's ``(out.numel(), in.numel())``."""
    if blocksize is None:
        raise ValueError("a blocked layout (torch.sparse_bsr / torch.sparse_bsc) needs blocksize=(rows, cols)")
    n_out, n_in = len(st.out_specs), len(st.in_specs)
    norm: Blocksize
    pair = _as_pair(blocksize)
    if pair is not None:
        norm = pair
    elif isinstance(blocksize, dict):
        if set(blocksize) != set(st.diff_pos):
            raise ValueError(f"blocksize dict: needs one (rows, cols) for each differentiated argument "
                             f"position {st.diff_pos}; got keys {sorted(blocksize, key=repr)}")
        if not _is_pairs([blocksize[p] for p in st.diff_pos]):
            raise ValueError(f"{_FORMS}; got {blocksize!r}")
        norm = tuple(_as_pair(blocksize[p]) for p in st.diff_pos)  # type: ignore[misc]
    elif _is_pairs(blocksize):
        if len(blocksize) != n_in:
            raise ValueError(f"blocksize: one (rows, cols) per differentiated argument needs {n_in}; "
                             f"got {len(blocksize)}")
        norm = tuple(_as_pair(b) for b in blocksize)  # type: ignore[misc]
    elif isinstance(blocksize, (tuple, list)) and blocksize and all(_is_pairs(r) for r in blocksize):
        if len(blocksize) != n_out or any(len(r) != n_in for r in blocksize):
            raise ValueError(f"blocksize grid must be {n_out} output(s) x {n_in} input(s); "
                             f"got {len(blocksize)} x {[len(r) for r in blocksize]}")
        norm = tuple(tuple(_as_pair(b) for b in r) for r in blocksize)  # type: ignore[misc]
    else:
        raise ValueError(f"{_FORMS}; got {blocksize!r}")
    several = n_out > 1 or n_in > 1
    for j, so in enumerate(st.out_specs):
        for i, si in enumerate(st.in_specs):
            R, C = blocksize_of(norm, j, i)  # type: ignore[misc]
            where = f" of block [{j}][{i}]" if several else ""
            if R < 1 or C < 1:
                raise ValueError(f"blocksize{where} must be positive; got ({R}, {C})")
            m, n = so.shape.numel(), si.shape.numel()
            for side, size, b in (("output", m, R), ("input", n, C)):
                if size % b:
                    raise ValueError(f"blocksize {R}x{C}{where}: the {side} has {size} elements, "
                                     f"not a multiple of {b}")
    return norm


def describe(layout) -> str:
    """``torch.sparse_csc`` -> ``"sparse_csc"`` (what :func:`layout_named` reads back)."""
    return str(layout).replace("torch.", "")


def layout_named(name: str):
    """The layout saved as ``describe(layout)``; a ValueError for any other name."""
    for layout in LAYOUTS:
        if describe(layout) == name:
            return layout
    raise ValueError(f"unknown layout {name!r}; expected one of {[describe(x) for x in LAYOUTS]}")


def blocksize_lists(blocksize: Optional[Blocksize]) -> Any:
    """``blocksize`` as nested lists (plain values for ``torch.save``)."""
    if blocksize is None or isinstance(blocksize, int):
        return blocksize
    return [blocksize_lists(b) for b in blocksize]  # type: ignore[union-attr]


def blocksize_tuples(saved: Any) -> Optional[Blocksize]:
    """Inverse of :func:`blocksize_lists`."""
    if saved is None or isinstance(saved, int):
        return saved
    return tuple(blocksize_tuples(b) for b in saved)  # type: ignore[return-value]

