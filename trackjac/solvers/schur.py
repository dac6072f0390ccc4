"""Gauss-Newton / LM steps for bundle-adjustment structure: point blocks eliminated exactly.

``J = [J_c | J_p]``: the columns from ``split`` on form point blocks of ``block`` columns, and
every row (residual) touches at most one point block, so ``J_p^T J_p`` is block diagonal.
The damped normal equations

    [U  W] [dc]     [g_c]        U = J_c^T J_c + lam D_c,  V = J_p^T J_p + lam D_p,
    [W' V] [dp] = - [g_p],       W = J_c^T J_p,            g = J^T r

reduce to the camera system ``S dc = -g_c + W V^-1 g_p`` with ``S = U - W V^-1 W^T``, then
``dp = V^-1 (-g_p - W^T dc)``. ``V^-1`` is a batch of ``block x block`` Cholesky solves.
``S`` is formed densely (sparse-sparse products) when it has at most ``dense_max`` rows, else
solved by CG with products through ``J_c`` and ``J_p`` only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .cg import CGInfo, conjugate_gradient
from .operator import SparseOperator, damping_diagonal


@dataclass
class PointBlocks:
    """``J_p`` as one dense ``block``-vector per row: ``J_p[i, block*point[i] + k] = B[i, k]``
    (rows with ``point[i] < 0`` touch no point). Memory: rows x block."""

    B: Tensor
    point: Tensor
    n_points: int

    def mv(self, y: Tensor) -> Tensor:
        """``J_p @ y`` for ``y`` of shape (points, block)."""
        has = self.point >= 0
        out = self.B.new_zeros(self.B.shape[0])
        out[has] = (self.B[has] * y[self.point[has]]).sum(-1)
        return out

    def rmv(self, w: Tensor) -> Tensor:
        """``J_p^T @ w`` as (points, block)."""
        has = self.point >= 0
        return self.B.new_zeros(self.n_points, self.B.shape[1]).index_add_(
            0, self.point[has], self.B[has] * w[has, None])

    def gram(self) -> Tensor:
        """``J_p^T J_p`` as its (points, block, block) diagonal blocks."""
        has = self.point >= 0
        Bh = self.B[has]
        k = self.B.shape[1]
        return self.B.new_zeros(self.n_points, k, k).index_add_(0, self.point[has], Bh[:, :, None] * Bh[:, None, :])


def point_blocks(op: SparseOperator, split: int, block: int) -> PointBlocks:
    """The point part of ``op`` (columns ``split:``), checked for one point block per row."""
    m, n = op.shape
    if not 0 <= split <= n:
        raise ValueError(f"schur: split={split} is outside the {n} columns")
    if (n - split) % block:
        raise ValueError(f"schur: the {n - split} point columns (from split={split}) are not a multiple of "
                         f"block={block}")
    keep = op.cols >= split
    rows, c, vals = op.rows[keep], op.cols[keep] - split, op.vals[keep]
    pb, k = c // block, c % block
    lo = torch.full((m,), n, dtype=pb.dtype, device=pb.device).scatter_reduce(0, rows, pb, "amin")
    hi = torch.full((m,), -1, dtype=pb.dtype, device=pb.device).scatter_reduce(0, rows, pb, "amax")
    bad = (hi >= 0) & (lo != hi)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"schur: residual {i} depends on point blocks {int(lo[i])} and {int(hi[i])}: the point "
                         f"part is not block diagonal with blocks of {block} (check split and block, or use "
                         "method='cg')")
    B = vals.new_zeros(m, block)
    B[rows, k] = vals
    return PointBlocks(B, hi, (n - split) // block)


def _block_diag_coo(blocks: Tensor) -> Tensor:
    """A (P, k, k) batch as a sparse COO (P k, P k) block-diagonal matrix."""
    P, k, _ = blocks.shape
    base = (torch.arange(P, device=blocks.device) * k)[:, None, None]
    i = torch.arange(k, device=blocks.device)
    rows = (base + i[None, :, None]).expand(P, k, k)
    cols = (base + i[None, None, :]).expand(P, k, k)
    return torch.sparse_coo_tensor(torch.stack([rows.reshape(-1), cols.reshape(-1)]), blocks.reshape(-1),
                                   (P * k, P * k), check_invariants=False).coalesce()


def _jp_coo(jp: PointBlocks) -> Tensor:
    has = torch.nonzero(jp.point >= 0).squeeze(1)
    k = jp.B.shape[1]
    rows = has.repeat_interleave(k)
    cols = (jp.point[has, None] * k + torch.arange(k, device=has.device)).reshape(-1)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), jp.B[has].reshape(-1),
                                   (jp.B.shape[0], jp.n_points * k), check_invariants=False).coalesce()


def schur_step(op: SparseOperator, r: Tensor, damping: float, damping_diag: str, split: int, block: int,
               dense_max: int, tol: float, max_iter: Optional[int]) -> tuple:
    """``(dx, info)``: the step, and a dict with ``cg`` (a :class:`CGInfo`, or None for the dense solve)."""
    jc = op.columns(0, split)
    jp = point_blocks(op, split, block)
    Dc = damping_diagonal(jc.col_sq(), damping_diag)
    V = jp.gram()
    Dp = damping_diagonal(torch.diagonal(V, dim1=1, dim2=2).reshape(-1), damping_diag).reshape(-1, block)
    V = V + damping * torch.diag_embed(Dp)
    L, bad = torch.linalg.cholesky_ex(V)
    if bool((bad != 0).any()):
        i = int(torch.nonzero(bad)[0])
        raise ValueError(f"schur: point block {i} of J^T J + damping D is singular (the point is seen by too few "
                         "residuals); use damping > 0")

    def vinv(y: Tensor) -> Tensor:
        return torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1)

    gc, gp = jc.rmv(r), jp.rmv(r)
    rhs = -gc + jc.rmv(jp.mv(vinv(gp)))
    info: dict = {"cg": None}
    if split == 0:
        dc = rhs
    elif split <= dense_max:
        Jc, Jp = jc.to_torch(), _jp_coo(jp)
        W = torch.sparse.mm(Jc.t().coalesce(), Jp)
        Vi = torch.cholesky_solve(torch.eye(block, dtype=V.dtype, device=V.device).expand_as(V), L)
        WVW = torch.sparse.mm(torch.sparse.mm(W, _block_diag_coo(Vi)), W.t().coalesce())
        S = torch.sparse.mm(Jc.t().coalesce(), Jc).to_dense() - WVW.to_dense()
        S = S + torch.diag(damping * Dc)
        Ls, bad = torch.linalg.cholesky_ex(S)
        if int(bad) != 0:
            raise ValueError("schur: the reduced camera system is singular; use damping > 0")
        dc = torch.cholesky_solve(rhs.unsqueeze(-1), Ls).squeeze(-1)
    else:
        def S_mv(v: Tensor) -> Tensor:
            u = jc.mv(v)
            return jc.rmv(u - jp.mv(vinv(jp.rmv(u)))) + damping * Dc * v

        dc, info["cg"] = conjugate_gradient(S_mv, rhs, jc.col_sq() + damping * Dc, tol, max_iter)
    dp = vinv(-gp - jp.rmv(jc.mv(dc)))
    return torch.cat([dc, dp.reshape(-1)]), info


__all__ = ["schur_step", "point_blocks", "PointBlocks", "CGInfo"]
