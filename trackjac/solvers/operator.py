"""A sparse Jacobian as its structural entries, with the matrix-vector products the solvers need."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor

_BETA = r"Sparse (CSR|CSC|BSR|BSC) tensor support is in beta state"
_COMPRESSED = (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


@dataclass
class SparseOperator:
    """``J`` (``shape`` m x n) as COO entries: ``J[rows[k], cols[k]] = vals[k]``.

    Products are scatter-adds over the entries, so they cost O(nnz), work on any device and
    dtype, and never form ``J^T J``. ``offsets`` holds the first column of each input block
    when ``J`` came as a tuple of blocks (one per input), else ``(0,)``.
    """

    rows: Tensor
    cols: Tensor
    vals: Tensor
    shape: tuple
    offsets: tuple = (0,)

    def mv(self, v: Tensor) -> Tensor:
        """``J @ v``."""
        return self.vals.new_zeros(self.shape[0]).index_add_(0, self.rows, self.vals * v[self.cols])

    def rmv(self, w: Tensor) -> Tensor:
        """``J^T @ w``."""
        return self.vals.new_zeros(self.shape[1]).index_add_(0, self.cols, self.vals * w[self.rows])

    def col_sq(self) -> Tensor:
        """The diagonal of ``J^T J``: squared column norms."""
        return self.vals.new_zeros(self.shape[1]).index_add_(0, self.cols, self.vals * self.vals)

    def columns(self, start: int, stop: int) -> "SparseOperator":
        """The columns ``start:stop`` (renumbered from 0)."""
        keep = (self.cols >= start) & (self.cols < stop)
        return SparseOperator(self.rows[keep], self.cols[keep] - start, self.vals[keep],
                              (self.shape[0], stop - start))

    def to_torch(self) -> Tensor:
        """A coalesced torch COO tensor (for sparse-sparse products)."""
        return torch.sparse_coo_tensor(torch.stack([self.rows, self.cols]), self.vals, self.shape,
                                       check_invariants=False).coalesce()


@contextlib.contextmanager
def quiet_beta() -> Iterator[None]:
    """Hide torch's "sparse CSR/BSR support is in beta" notice: the solvers' own sparse products
    raise it internally, not the user's choice of layout."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BETA, category=UserWarning)
        yield


def _block(t: Any, where: str) -> tuple:
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: expected a tensor Jacobian (or a tuple of them); got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{where}: Jacobian blocks must be 2-D (residuals x parameters); got shape {tuple(t.shape)}")
    if t.is_complex() or not t.dtype.is_floating_point:
        raise TypeError(f"{where}: the Jacobian must be real floating point; got {t.dtype}")
    if t.layout == torch.strided:
        r, c = torch.nonzero(t, as_tuple=True)
        return r, c, t[r, c]
    if t.layout in _COMPRESSED:
        with quiet_beta():
            t = t.to_sparse_coo()
    elif t.layout != torch.sparse_coo:
        raise TypeError(f"{where}: unsupported layout {t.layout}")
    t = t.coalesce()
    if t.values().dim() != 1:
        raise ValueError(f"{where}: hybrid sparse tensors (dense dimensions in the values) are not supported")
    r, c = t.indices()
    return r, c, t.values()


def as_operator(J: Any, where: str = "trackjac.solvers") -> SparseOperator:
    """A :class:`SparseOperator` of ``J``: a 2-D tensor (sparse COO/CSR/CSC/BSR/BSC, or dense)
    or a tuple of 2-D blocks over inputs (what a plan of a one-output function returns),
    joined column-wise. Stored entries stay, stored zeros too: the structure is the pattern's."""
    if isinstance(J, SparseOperator):
        return J
    blocks: Sequence[Any] = J if isinstance(J, (tuple, list)) else (J,)
    if not blocks:
        raise ValueError(f"{where}: empty tuple of Jacobian blocks")
    if any(isinstance(b, (tuple, list)) for b in blocks):
        raise ValueError(f"{where}: nested blocks (several outputs) are not supported; return one residual tensor")
    m = blocks[0].shape[0] if isinstance(blocks[0], Tensor) else None
    rows, cols, vals, offsets, n = [], [], [], [], 0
    for b in blocks:
        r, c, v = _block(b, where)
        if b.shape[0] != m:
            raise ValueError(f"{where}: the Jacobian blocks have different row counts ({m} and {b.shape[0]})")
        if vals and (v.dtype != vals[0].dtype or v.device != vals[0].device):
            raise ValueError(f"{where}: the Jacobian blocks differ in dtype or device")
        rows.append(r)
        cols.append(c + n)
        vals.append(v)
        offsets.append(n)
        n += b.shape[1]
    return SparseOperator(torch.cat(rows), torch.cat(cols), torch.cat(vals), (int(m), n), tuple(offsets))


def check_residual(op: SparseOperator, r: Tensor, where: str) -> Tensor:
    """``r`` flattened, checked against the Jacobian's rows, dtype and device."""
    if not isinstance(r, Tensor):
        raise TypeError(f"{where}: r must be a tensor; got {type(r).__name__}")
    r = r.reshape(-1)
    if r.numel() != op.shape[0]:
        raise ValueError(f"{where}: r has {r.numel()} entries but J has {op.shape[0]} rows")
    if r.dtype != op.vals.dtype or r.device != op.vals.device:
        raise ValueError(f"{where}: r ({r.dtype}, {r.device}) and J ({op.vals.dtype}, {op.vals.device}) differ")
    return r


def damping_diagonal(col_sq: Tensor, kind: str) -> Tensor:
    """``D`` in ``J^T J + damping * D``: ``"jtj"`` (Marquardt: diag(J^T J), 1 where a column
    is empty so that the damped system stays definite) or ``"identity"``."""
    if kind == "jtj":
        return torch.where(col_sq > 0, col_sq, torch.ones_like(col_sq))
    if kind == "identity":
        return torch.ones_like(col_sq)
    raise ValueError(f"damping_diag must be 'jtj' or 'identity'; got {kind!r}")


def check_damping(damping: float, where: str) -> float:
    damping = float(damping)
    if not damping >= 0 or damping == float("inf"):
        raise ValueError(f"{where}: damping must be finite and >= 0; got {damping}")
    return damping


def optional_int(v: Optional[int], name: str, where: str) -> Optional[int]:
    if v is not None and (not isinstance(v, int) or v < 1):
        raise ValueError(f"{where}: {name} must be a positive int; got {v!r}")
    return v
