"""2-D boolean patterns as sparse tensors, and back to index pairs."""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Tuple

import torch
from torch import Tensor

# torch warns once per process that these layouts are beta; trackjac's conversions are not the user's business
_BETA = r"Sparse (CSR|CSC|BSR|BSC) tensor support is in beta state"


@contextlib.contextmanager
def quiet_beta() -> Iterator[None]:
    """Ignore torch's "Sparse CSR/CSC/BSR tensor support is in beta state" UserWarning, and only it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BETA, category=UserWarning)
        yield


def bool_coo(rows: Tensor, cols: Tensor, shape: Tuple[int, int], device=None) -> Tensor:
    """Coalesced sparse COO bool pattern from sorted, distinct (row, col) pairs."""
    t = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(rows.numel(), dtype=torch.bool,
                                device=rows.device), tuple(shape), is_coalesced=True, check_invariants=False)
    return t if device is None else t.to(device)


def empty_coo(shape: Tuple[int, int], device=None) -> Tensor:
    """A pattern with no entries."""
    z = torch.zeros(0, dtype=torch.int64, device=device)
    return bool_coo(z, z, shape)


def structural_coo(p: Tensor) -> Tuple[Tensor, Tensor, int, int]:
    """Structural nonzeros ``(rows, cols, m, n)`` of a 2-D tensor, on the CPU, row-major sorted.

    Dense: the nonzero entries.  Sparse (any layout): every stored entry, except stored
    ``False`` of a boolean pattern and all-zero dense parts of a hybrid tensor (stored
    values of a Jacobian count even when they are 0: a numerical zero still participates).
    """
    m, n = p.shape
    if p.layout == torch.strided:
        rows, cols = torch.nonzero(p.detach().cpu(), as_tuple=True)
        return rows, cols, m, n
    q = p.detach().cpu()
    if q.layout != torch.sparse_coo:
        q = q.to_sparse_coo()
    q = q.coalesce()
    ind, vals = q.indices(), q.values()
    if vals.dim() > 1:  # hybrid tensor: a block with any nonzero in its dense part
        vals = vals.reshape(vals.shape[0], -1).ne(0).any(1)
    if vals.dtype != torch.bool:
        return ind[0], ind[1], m, n
    if bool(vals.all()):
        return ind[0], ind[1], m, n
    return ind[0][vals], ind[1][vals], m, n


def stacked(rows: Tensor, cols: Tensor) -> Tensor:
    """``torch.stack([rows, cols])``, as a view when the two already are the rows of one
    (2, nnz) tensor (a coalesced pattern's indices): no copy of 2 x nnz indices."""
    n = rows.numel()
    if (rows.dim() == cols.dim() == 1 and cols.numel() == n and n > 0 and rows.dtype == cols.dtype
            and rows.device == cols.device and rows.stride(0) == cols.stride(0) == 1
            and rows.untyped_storage().data_ptr() == cols.untyped_storage().data_ptr()
            and cols.storage_offset() - rows.storage_offset() == n):
        return rows.as_strided((2, n), (n, 1))
    return torch.stack([rows, cols])
