"""One damped Gauss-Newton step: solve ``(J^T J + damping D) dx = -J^T r`` for a sparse ``J``."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import Tensor

from ..errors import TrackJacWarning
from .cg import conjugate_gradient
from .operator import (SparseOperator, as_operator, check_damping, check_residual, damping_diagonal, optional_int,
                       quiet_beta)
from .schur import schur_step

METHODS = ("cg", "schur", "dense")


class SolverWarning(TrackJacWarning):
    """An iterative solve stopped before reaching its tolerance; the step is approximate."""


def _dense_step(op: SparseOperator, r: Tensor, damping: float, damping_diag: str, dense_max: int) -> Tensor:
    n = op.shape[1]
    if n > dense_max:
        raise ValueError(f"gauss_newton_step: method='dense' forms the {n} x {n} matrix J^T J; that is more than "
                         f"dense_max={dense_max} columns: use method='cg' or 'schur' (or raise dense_max)")
    Jt = op.to_torch()
    A = torch.sparse.mm(Jt.t().coalesce(), Jt).to_dense()
    A = A + torch.diag(damping * damping_diagonal(torch.diagonal(A).clone(), damping_diag))
    L, bad = torch.linalg.cholesky_ex(A)
    if int(bad) != 0:
        raise ValueError("gauss_newton_step: J^T J + damping D is singular (J has dependent columns); "
                         "use damping > 0")
    return torch.cholesky_solve(-op.rmv(r).unsqueeze(-1), L).squeeze(-1)


def solve_step(J: Any, r: Tensor, damping: float = 0.0, method: str = "cg", *, damping_diag: str = "jtj",
               split: Optional[int] = None, block: int = 3, tol: float = 1e-10, max_iter: Optional[int] = None,
               dense_max: int = 2000, where: str = "gauss_newton_step") -> tuple:
    """:func:`gauss_newton_step` returning ``(dx, info)``; ``info["cg"]`` is the CG solve's
    :class:`~trackjac.solvers.cg.CGInfo` (None for direct solves). No warning."""
    if method not in METHODS:
        raise ValueError(f"{where}: method must be one of {METHODS}; got {method!r}")
    damping = check_damping(damping, where)
    optional_int(max_iter, "max_iter", where)
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"{where}: block must be a positive int; got {block!r}")
    op = as_operator(J, where)
    r = check_residual(op, r, where)
    with quiet_beta():
        return _solve(op, r, damping, method, damping_diag, split, block, tol, max_iter, dense_max, where)


def _solve(op: SparseOperator, r: Tensor, damping: float, method: str, damping_diag: str, split: Optional[int],
           block: int, tol: float, max_iter: Optional[int], dense_max: int, where: str) -> tuple:
    if method == "dense":
        return _dense_step(op, r, damping, damping_diag, dense_max), {"cg": None}
    if method == "schur":
        if split is None:
            if len(op.offsets) < 2:
                raise ValueError(f"{where}: method='schur' needs split= (the first point column) when J is one "
                                 "matrix; with a tuple of blocks, the last block is taken as the points")
            split = op.offsets[-1]
        return schur_step(op, r, damping, damping_diag, int(split), block, dense_max, tol, max_iter)
    D = damping_diagonal(op.col_sq(), damping_diag)

    def A(v: Tensor) -> Tensor:  # J^T J v + damping D v, through J only
        return op.rmv(op.mv(v)) + damping * D * v

    dx, cg = conjugate_gradient(A, -op.rmv(r), op.col_sq() + damping * D, tol, max_iter)
    return dx, {"cg": cg}


def gauss_newton_step(J: Any, r: Tensor, damping: float = 0.0, method: str = "cg", *, damping_diag: str = "jtj",
                      split: Optional[int] = None, block: int = 3, tol: float = 1e-10,
                      max_iter: Optional[int] = None, dense_max: int = 2000) -> Tensor:
    """The step ``dx`` solving ``(J^T J + damping * D) dx = -J^T r`` (``damping=0``: Gauss-Newton).

    ``J``: the Jacobian of the residuals ``r`` (any shape, flattened): a 2-D torch tensor, sparse
    COO/CSR/CSC/BSR or dense, or a tuple of 2-D blocks over inputs, as a plan of a one-output
    function returns it (joined column-wise; ``dx`` is flat over all inputs). ``D``:
    ``damping_diag="jtj"`` (diag(J^T J), Marquardt's scaling; 1 for empty columns) or
    ``"identity"``.

    ``method``:

    * ``"cg"``: conjugate gradients on the normal equations with a Jacobi preconditioner,
      using only ``J @ v`` and ``J^T @ w`` (O(nnz) memory); stops at relative residual ``tol``
      or ``max_iter`` (default ``2 n + 10``) iterations, with a :class:`SolverWarning`
      if it did not converge.
    * ``"schur"``: bundle-adjustment structure. Columns from ``split`` on (default with a
      tuple of blocks: the last block's) are point blocks of ``block`` columns, each residual
      touching at most one (a ``ValueError`` otherwise). Points are eliminated exactly by
      batched ``block x block`` Cholesky solves; the reduced system over the ``split`` other
      columns is solved densely if ``split <= dense_max``, else by CG.
    * ``"dense"``: Cholesky of the dense ``J^T J`` (``n <= dense_max`` only): a reference
      for small problems.

    A singular system (``damping=0`` with dependent columns) is a ``ValueError`` for the direct
    solves.
    """
    dx, info = solve_step(J, r, damping, method, damping_diag=damping_diag, split=split, block=block, tol=tol,
                          max_iter=max_iter, dense_max=dense_max)
    cg = info["cg"]
    if cg is not None and not cg.converged:
        warnings.warn(f"gauss_newton_step: CG stopped after {cg.iterations} iterations at relative residual "
                      f"{cg.residual:.1e} > tol={tol:.0e}; the step is approximate (raise max_iter or damping)",
                      SolverWarning, stacklevel=2)
    return dx
