"""Gauss-Newton / LM steps for bundle-adjustment structure: point blocks eliminated exactly.

``J = [J_c | J_p]``: the columns from ``split`` on form point blocks of ``block`` columns, and
every row (residual) touches at most one point block, so ``J_p^T J_p`` is block diagonal.
The damped normal equations

    [U  W] [dc]     [g_c]        U = J_c^T J_c + lam D_c,  V = J_p^T J_p + lam D_p,
    [W' V] [dp] = - [g_p],       W = J_c^T J_p,            g = J^T r

reduce to the camera system ``S dc = -g_c + W V^-1 g_p`` with ``S = U - W V^-1 W^T``, then
``dp = V^-1 (-g_p - W^T dc)``. ``V^-1`` is a batch of ``block x block`` Cholesky solves.
``S`` is formed densely (summed over pairs of entries) when it has at most ``dense_max`` rows, else
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


def _add_group_grams(S: Tensor, n: int, labels: Tensor, cols: Tensor, X: Tensor, M: Optional[Tensor],
                     sign: float) -> None:
    """``S[c_i, c_j] += sign * X_i M_g X_j^T`` over all entry pairs ``i, j`` of each group ``g``.

    Entries come sorted by ``labels`` (their group), with a column ``cols`` and a row vector
    ``X`` (entries, b); ``M`` is a (groups, b, b) batch (None: the identity). Groups of equal
    size go through one batched matmul, so the work is the pairs, sum over groups of k^2.
    """
    counts = torch.bincount(labels)
    start = torch.cumsum(counts, 0) - counts
    for k in torch.unique(counts).tolist():
        if k == 0:
            continue
        g = torch.nonzero(counts == k).squeeze(1)
        idx = start[g, None] + torch.arange(k, device=g.device)          # (groups of size k, k)
        Xg = X[idx]
        Yg = Xg if M is None else Xg @ M[g]
        c = cols[idx]
        S.index_add_(0, (c[:, :, None] * n + c[:, None, :]).reshape(-1), (sign * Yg @ Xg.transpose(1, 2)).reshape(-1))


def _dense_reduced(jc: SparseOperator, jp: PointBlocks, Vi: Tensor) -> Tensor:
    """``J_c^T J_c - W V^-1 W^T`` as a dense (split, split) matrix, summed over entry pairs that
    share a row (for ``J_c^T J_c``) or a point (for ``W V^-1 W^T``): the work is the nonzeros of
    the reduced system, never rows x columns."""
    nc = jc.shape[1]
    S = jc.vals.new_zeros(nc * nc)
    order = torch.argsort(jc.rows, stable=True)
    rows, cols, vals = jc.rows[order], jc.cols[order], jc.vals[order]
    _add_group_grams(S, nc, rows, cols, vals[:, None], None, 1.0)
    # W = J_c^T J_p: one b-vector per (point, camera column) that share a residual
    sees = jp.point[rows] >= 0
    pt, c = jp.point[rows[sees]], cols[sees]
    keys, inv = torch.unique(pt * nc + c, return_inverse=True)     # sorted: grouped by point
    W = vals.new_zeros(keys.numel(), jp.B.shape[1]).index_add_(0, inv, vals[sees, None] * jp.B[rows[sees]])
    _add_group_grams(S, nc, keys // nc, keys % nc, W, Vi, -1.0)
    return S.reshape(nc, nc)


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
        Vi = torch.cholesky_solve(torch.eye(block, dtype=V.dtype, device=V.device).expand_as(V), L)
        S = _dense_reduced(jc, jp, Vi) + torch.diag(damping * Dc)
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
