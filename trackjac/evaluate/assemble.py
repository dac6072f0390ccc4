"""Sparse tensors of one (output, input) block from its values: COO, CSR or BSR."""
from __future__ import annotations

import warnings

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .._sparse import stacked
from .structure import Structure

LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_bsr)


def check_layout(layout) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be torch.sparse_coo, torch.sparse_csr or torch.sparse_bsr; got {layout}")


class Block:
    """Decompression and layout indices of one (output, input) block, on the device."""

    def __init__(self, rows: Tensor, cols: Tensor, shape: Tuple[int, int], layout, blocksize, device):
        self.shape = shape
        self.nnz = rows.numel()
        self.layout = layout
        m, n = shape
        if layout == torch.sparse_coo:
            self.indices = stacked(rows, cols).to(device)
        elif layout == torch.sparse_csr:
            crow = torch.zeros(m + 1, dtype=torch.long)
            torch.cumsum(torch.bincount(rows, minlength=m), 0, out=crow[1:])
            self.crow, self.col = crow.to(device), cols.to(device)
        else:
            R, C = blocksize
            nbc = n // C
            key = (rows // R) * nbc + cols // C
            ukey, inv = torch.unique(key, sorted=True, return_inverse=True)
            self.nblocks = ukey.numel()
            brow = ukey // nbc
            crow = torch.zeros(m // R + 1, dtype=torch.long)
            torch.cumsum(torch.bincount(brow, minlength=m // R), 0, out=crow[1:])
            self.crow, self.col = crow.to(device), (ukey % nbc).to(device)
            self.blocksize = (R, C)
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
            warnings.filterwarnings("ignore", message="Sparse (CSR|BSR) tensor support is in beta")
            if self.layout == torch.sparse_csr:
                return torch.sparse_csr_tensor(self.crow, self.col, values, (m, n), check_invariants=False)
            R, C = self.blocksize
            dense_blocks = values.new_zeros(self.nblocks * R * C).index_copy_(0, self.slot, values)
            return torch.sparse_bsr_tensor(
                self.crow, self.col, dense_blocks.view(self.nblocks, R, C), (m, n), check_invariants=False
            )


def merge(parts: List[Tuple[Optional[Tensor], Tensor]], nnz: int, dtype: torch.dtype, device) -> Tensor:
    """Values of one block from its per-chunk gathers."""
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    if not parts:
        return torch.zeros(nnz, dtype=dtype, device=device)  # no colors: an empty pattern
    out = parts[0][1].new_empty(nnz)
    for sel, vals in parts:
        out.index_copy_(0, sel, vals)
    return out


def placement(st: Structure, layout, blocksize) -> Tuple[torch.device, Optional[Tuple[int, int]]]:
    """The one device of the differentiated arguments, and the checked ``blocksize`` of ``layout``."""
    devices = {s.device for s in st.in_specs}
    if len(devices) != 1:
        raise ValueError(f"all differentiated arguments must be on one device; got {sorted(map(str, devices))}")
    if layout == torch.sparse_bsr:
        blocksize = check_blocksize(blocksize, st)
    elif blocksize is not None:
        raise ValueError("blocksize only applies to layout=torch.sparse_bsr")
    return devices.pop(), blocksize


def check_blocksize(blocksize, st: Structure) -> Tuple[int, int]:
    if blocksize is None:
        raise ValueError("layout=torch.sparse_bsr needs blocksize=(rows, cols)")
    try:
        R, C = (int(b) for b in blocksize)
    except (TypeError, ValueError):
        raise ValueError(f"blocksize must be a pair of positive ints; got {blocksize!r}") from None
    if R < 1 or C < 1:
        raise ValueError(f"blocksize must be a pair of positive ints; got {blocksize!r}")
    for s in st.out_specs:
        if s.shape.numel() % R:
            raise ValueError(f"blocksize {R}x{C}: an output has {s.shape.numel()} elements, not a multiple of {R}")
    for s in st.in_specs:
        if s.shape.numel() % C:
            raise ValueError(f"blocksize {R}x{C}: an input has {s.shape.numel()} elements, not a multiple of {C}")
    return R, C
