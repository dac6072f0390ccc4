"""Preconditioned conjugate gradients on a symmetric positive definite operator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor


@dataclass
class CGInfo:
    """How a CG solve ended: ``iterations``, ``residual`` (relative, ``|b - A x| / |b|``), ``converged``."""

    iterations: int
    residual: float
    converged: bool


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, diag: Optional[Tensor] = None,
                       tol: float = 1e-10, max_iter: Optional[int] = None) -> tuple:
    """Solve ``A x = b`` for SPD ``A`` given as ``matvec``; ``diag`` (A's diagonal) is the Jacobi
    preconditioner. Stops at ``|b - A x| <= tol |b|`` or after ``max_iter`` (default ``2 n + 10``)
    iterations; returns ``(x, CGInfo)``."""
    n = b.numel()
    max_iter = 2 * n + 10 if max_iter is None else max_iter
    x = b.new_zeros(n)
    bnorm = float(b.norm())
    if bnorm == 0:
        return x, CGInfo(0, 0.0, True)
    # an empty row of A (a parameter nothing depends on) gets no scaling rather than 1/0
    inv = None if diag is None else 1 / torch.where(diag > 0, diag, torch.ones_like(diag))
    r = b.clone()
    z = r if inv is None else inv * r
    p = z.clone()
    rz = float(r @ z)
    res = 1.0
    for it in range(1, max_iter + 1):
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0:   # A is not positive definite along p (or p vanished): nothing more to gain
            return x, CGInfo(it - 1, res, res <= tol)
        alpha = rz / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        res = float(r.norm()) / bnorm
        if res <= tol:
            return x, CGInfo(it, res, True)
        z = r if inv is None else inv * r
        rz, rz_old = float(r @ z), rz
        p = z + (rz / rz_old) * p
    return x, CGInfo(max_iter, res, False)
