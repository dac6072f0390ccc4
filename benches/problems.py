"""Benchmark problems with known Jacobian structure, reusable by benches and tests.

- Brusselator 2-D: 2 species on an N x N periodic grid, 5-point Laplacian via
  ``torch.roll``; every row of the Jacobian holds exactly 6 nonzeros.
- Bundle adjustment: cameras (9 parameters: axis-angle rotation, translation,
  focal length, k1, k2) and points (3), 2 residuals per observation, BAL model.
- 3-D reaction-diffusion (7-point Laplacian, cubic reaction) and 1-D
  Kuramoto-Sivashinsky (5-point stencil): the peer benchmarks' PDEs.

Each problem comes with its exact pattern built by hand, so engine tests do not
depend on sparsity detection.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

__all__ = [
    "brusselator",
    "brusselator_point",
    "brusselator_pattern",
    "BundleAdjustment",
    "bundle_adjustment",
    "cpu_name",
    "rosenbrock",
    "sparse_quadratic",
    "ba_cost",
    "arrowhead",
    "arrowhead_cost",
    "PerSampleMLP",
    "laplacian3d_cubic",
    "laplacian3d_point",
    "kuramoto_sivashinsky",
    "kuramoto_sivashinsky_point",
]

ALPHA = 10.0  # diffusion coefficient; any nonzero value gives the same pattern


def _laplacian(a: Tensor) -> Tensor:
    """Periodic 5-point Laplacian on the last two dimensions."""
    return (
        torch.roll(a, 1, -2) + torch.roll(a, -1, -2)
        + torch.roll(a, 1, -1) + torch.roll(a, -1, -1) - 4.0 * a
    )


def brusselator(x: Tensor) -> Tensor:
    """Residual of the 2-D Brusselator, ``x`` of shape (2, N, N) -> (2, N, N).

    du = 1 + u^2 v - 4.4 u + alpha lap(u),  dv = 3.4 u - u^2 v + alpha lap(v).
    Written with few, large ops (one Laplacian for both species, ``unbind``
    rather than indexing) because every eager op costs a memory pass.
    """
    u, v = x.unbind(0)
    uuv = u * u * v
    reaction = torch.stack([1.0 + uuv - 4.4 * u, 3.4 * u - uuv])
    return reaction + ALPHA * _laplacian(x)


def brusselator_point(N: int, dtype: torch.dtype = torch.float64, device=None, seed: int = 0) -> Tensor:
    """A random state of shape (2, N, N)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, N, N, generator=g, dtype=dtype).to(device)


def brusselator_pattern(N: int) -> Tensor:
    """Exact Jacobian pattern of :func:`brusselator`: sparse COO bool (2N^2, 2N^2)."""
    idx = torch.arange(N * N).view(N, N)
    nbrs = [idx, idx.roll(1, 0), idx.roll(-1, 0), idx.roll(1, 1), idx.roll(-1, 1)]
    rows, cols = [], []
    for s in range(2):  # species of the row
        o = s * N * N
        r = idx.reshape(-1) + o
        for nb in nbrs:  # own species: 5-point stencil
            rows.append(r)
            cols.append(nb.reshape(-1) + o)
        rows.append(r)  # other species: the reaction term at the same cell
        cols.append(idx.reshape(-1) + (1 - s) * N * N)
    n = 2 * N * N
    ind = torch.stack([torch.cat(rows), torch.cat(cols)])
    vals = torch.ones(ind.shape[1], dtype=torch.bool)
    return torch.sparse_coo_tensor(ind, vals, (n, n), check_invariants=False).coalesce()


# ----------------------------------------------------------------------------
# Bundle adjustment (BAL camera model)
# ----------------------------------------------------------------------------


def _rotate(w: Tensor, p: Tensor) -> Tensor:
    """Rodrigues rotation of points ``p`` (..., 3) by axis-angle ``w`` (..., 3)."""
    theta = torch.sqrt((w * w).sum(-1, keepdim=True) + 1e-12)  # smooth at w = 0
    k = w / theta
    cos, sin = torch.cos(theta), torch.sin(theta)
    kxp = torch.linalg.cross(k, p, dim=-1)
    kdp = (k * p).sum(-1, keepdim=True)
    return p * cos + kxp * sin + k * kdp * (1.0 - cos)


def project(cams: Tensor, pts: Tensor) -> Tensor:
    """BAL projection of one point per camera row: (..., 9), (..., 3) -> (..., 2)."""
    P = _rotate(cams[..., 0:3], pts) + cams[..., 3:6]
    p = -P[..., 0:2] / P[..., 2:3]
    f, k1, k2 = cams[..., 6:7], cams[..., 7:8], cams[..., 8:9]
    r2 = (p * p).sum(-1, keepdim=True)
    return f * (1.0 + k1 * r2 + k2 * r2 * r2) * p


@dataclass
class BundleAdjustment:
    """A synthetic bundle-adjustment problem.

    ``residual(cams, pts)`` maps cameras (C, 9) and points (P, 3) to residuals
    (O, 2): observation ``o`` sees point ``pt_idx[o]`` from camera ``cam_idx[o]``.
    """

    cams: Tensor
    pts: Tensor
    cam_idx: Tensor
    pt_idx: Tensor
    observed: Tensor

    def residual(self, cams: Tensor, pts: Tensor) -> Tensor:
        return project(cams[self.cam_idx], pts[self.pt_idx]) - self.observed

    @property
    def args(self) -> Tuple[Tensor, Tensor]:
        return self.cams, self.pts

    def pattern(self) -> Tuple[Tensor, Tensor]:
        """Exact pattern: (rows = 2 * O) x (9 * C) and (2 * O) x (3 * P), sparse COO bool."""
        O = self.cam_idx.numel()
        r = torch.arange(2 * O)
        obs = r // 2

        def block(idx: Tensor, width: int, count: int) -> Tensor:
            rows = r.repeat_interleave(width)
            cols = (idx[obs].unsqueeze(1) * width + torch.arange(width)).reshape(-1)
            ind = torch.stack([rows, cols])
            vals = torch.ones(ind.shape[1], dtype=torch.bool)
            return torch.sparse_coo_tensor(ind, vals, (2 * O, width * count), check_invariants=False).coalesce()

        return (block(self.cam_idx, 9, self.cams.shape[0]), block(self.pt_idx, 3, self.pts.shape[0]))


def bundle_adjustment(
    n_cams: int,
    n_pts: int,
    obs_per_pt: int = 4,
    dtype: torch.dtype = torch.float64,
    device=None,
    seed: int = 0,
) -> BundleAdjustment:
    """Synthetic BA problem: every point seen by ``obs_per_pt`` distinct cameras."""
    g = torch.Generator().manual_seed(seed)
    obs_per_pt = min(obs_per_pt, n_cams)
    cams = torch.zeros(n_cams, 9, dtype=dtype)
    cams[:, 0:3] = 0.1 * torch.randn(n_cams, 3, generator=g, dtype=dtype)
    cams[:, 3:6] = 0.5 * torch.randn(n_cams, 3, generator=g, dtype=dtype)
    cams[:, 5] -= 8.0  # points sit in front of the cameras (BAL looks down -z)
    cams[:, 6] = 500.0 + 10.0 * torch.randn(n_cams, generator=g, dtype=dtype)
    cams[:, 7:9] = 1e-3 * torch.randn(n_cams, 2, generator=g, dtype=dtype)
    pts = torch.randn(n_pts, 3, generator=g, dtype=dtype)
    cam_idx = torch.stack([torch.randperm(n_cams, generator=g)[:obs_per_pt] for _ in range(n_pts)])
    cam_idx = cam_idx.reshape(-1)
    pt_idx = torch.arange(n_pts).repeat_interleave(obs_per_pt)
    observed = project(cams[cam_idx], pts[pt_idx]) + torch.randn(cam_idx.numel(), 2, generator=g, dtype=dtype)
    return BundleAdjustment(
        cams.to(device), pts.to(device), cam_idx.to(device), pt_idx.to(device), observed.to(device)
    )


BA_ORDERS = ("point", "camera", "shuffled")  # observation orders: problems' layout, BAL files', random


def bundle_adjustment_coo(observations: int, order: str = "point", seed: int = 0
                          ) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
    """The bundle-adjustment pattern (cameras' 9 columns, then points' 3) as ``(rows, cols, (m, n))``,
    with the observations (2 rows each) sorted by point (:func:`bundle_adjustment`'s layout), by
    camera (BAL files) or shuffled."""
    ba = bundle_adjustment(max(observations // 100, 10), observations // 4, seed=seed)
    O = ba.cam_idx.numel()
    if order == "point":
        perm = torch.arange(O)
    elif order == "camera":
        perm = torch.sort(ba.cam_idx, stable=True).indices
    elif order == "shuffled":
        perm = torch.randperm(O, generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"order must be one of {BA_ORDERS}; got {order!r}")
    ci, pi = ba.cam_idx[perm], ba.pt_idx[perm]
    C = ba.cams.shape[0]
    r = torch.arange(2 * O)
    o = r // 2
    rows = torch.cat([r.repeat_interleave(9), r.repeat_interleave(3)])
    cols = torch.cat([(ci[o].unsqueeze(1) * 9 + torch.arange(9)).reshape(-1),
                      (9 * C + pi[o].unsqueeze(1) * 3 + torch.arange(3)).reshape(-1)])
    return rows, cols, (2 * O, 9 * C + 3 * ba.pts.shape[0])


def arrowhead(x: Tensor) -> Tensor:
    """A dense row under a bidiagonal: ``x[i+1] - x[i]``, then ``sum(x**2)``; (n, n) Jacobian.

    Row coloring needs 3 colors (the dense row, then two for the bidiagonal rows, which
    conflict only with their neighbors); a greedy in a random order often needs 4.
    """
    return torch.cat([x[1:] - x[:-1], (x * x).sum(0, keepdim=True)])


def arrowhead_pattern(n: int) -> Tensor:
    """Exact pattern of :func:`arrowhead` at length ``n``: sparse COO bool (n, n)."""
    i = torch.arange(n - 1)
    rows = torch.cat([i, i, torch.full((n,), n - 1)])
    cols = torch.cat([i, i + 1, torch.arange(n)])
    vals = torch.ones(rows.numel(), dtype=torch.bool)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()


def cpu_name() -> str:
    """The CPU's model name and core count, for the benchmarks' records."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores)"


# ----------------------------------------------------------------------------
# Scalar problems with known Hessian structure (for the Hessian plans)
# ----------------------------------------------------------------------------


def rosenbrock(x: Tensor) -> Tensor:
    """Chained Rosenbrock function: a tridiagonal Hessian (3 nonzeros per inner row)."""
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def sparse_quadratic(n: int, per_row: int = 3, dtype: torch.dtype = torch.float64, seed: int = 0):
    """``(f, A)``: ``f(x) = x^T A x`` with a random sparse ``A`` (about ``per_row`` nonzeros a row);
    the Hessian is ``A + A^T`` (``A`` returned as a sparse COO matrix, for the reference)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(per_row)
    cols = torch.randint(0, n, (n * per_row,), generator=g)
    vals = torch.randn(n * per_row, generator=g, dtype=dtype)
    A = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=True).coalesce()

    def f(x: Tensor) -> Tensor:   # gathers, not a sparse matmul: torch.func transforms gathers
        return (vals * x[rows] * x[cols]).sum()

    return f, A


def ba_cost(ba: BundleAdjustment):
    """``0.5 * ||r(cams, pts)||^2`` of a bundle-adjustment problem: camera-camera blocks on the
    diagonal, camera-point blocks where a camera sees a point, point-point blocks on the diagonal."""
    def f(cams: Tensor, pts: Tensor) -> Tensor:
        return 0.5 * (ba.residual(cams, pts) ** 2).sum()

    return f


def arrowhead_cost(x: Tensor) -> Tensor:
    """``x[0]^2 * sum(x) + sum(x^4)``: row and column 0 dense, the rest diagonal."""
    return x[0] ** 2 * x.sum() + (x ** 4).sum()


class PerSampleMLP:
    """A fixed two-layer MLP's loss summed over samples, as a function of the inputs ``X (B, d)``:
    the Hessian is block diagonal with ``d x d`` blocks (samples do not interact)."""

    def __init__(self, d: int, hidden: int = 16, dtype: torch.dtype = torch.float64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.W1 = torch.randn(hidden, d, generator=g, dtype=dtype) / d ** 0.5
        self.b1 = torch.randn(hidden, generator=g, dtype=dtype)
        self.w2 = torch.randn(hidden, generator=g, dtype=dtype) / hidden ** 0.5

    def __call__(self, X: Tensor) -> Tensor:
        h = torch.tanh(X @ self.W1.T + self.b1)
        return torch.nn.functional.softplus(h @ self.w2).sum()


# ----------------------------------------------------------------------------
# PDE residuals of the peer benchmarks (benches/bench_peers.py; JAX twins in benches/peers.py)
# ----------------------------------------------------------------------------

#: diffusion coefficient of the 3-D reaction-diffusion residual (the pattern does not depend on it)
DIFFUSION_3D = 0.1

#: grid spacing of the 1-D Kuramoto-Sivashinsky residual (domain 32 pi on 1,024 points per period)
KS_H = 32.0 * 3.141592653589793 / 1024


def laplacian3d_cubic(u: Tensor) -> Tensor:
    """Residual of 3-D reaction-diffusion with a cubic (Allen-Cahn) reaction, ``u`` of shape (N, N, N).

    r = D lap(u) + u - u^3 with the periodic 7-point Laplacian: 7 nonzeros per Jacobian row.
    """
    lap = (
        torch.roll(u, 1, 0) + torch.roll(u, -1, 0) + torch.roll(u, 1, 1) + torch.roll(u, -1, 1)
        + torch.roll(u, 1, 2) + torch.roll(u, -1, 2) - 6.0 * u
    )
    return DIFFUSION_3D * lap + u - u * u * u


def laplacian3d_point(N: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    """A random state of shape (N, N, N), in [-1, 1)."""
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.rand(N, N, N, generator=g, dtype=dtype) - 1.0


def kuramoto_sivashinsky(u: Tensor) -> Tensor:
    """Residual of the 1-D Kuramoto-Sivashinsky equation on a periodic grid, ``u`` of shape (n,).

    u_t = -u u_x - u_xx - u_xxxx with central differences (spacing ``KS_H``): the 5-point
    u_xxxx stencil gives 5 nonzeros per Jacobian row.
    """
    h = KS_H
    um2, um1 = torch.roll(u, 2), torch.roll(u, 1)
    up1, up2 = torch.roll(u, -1), torch.roll(u, -2)
    ux = (up1 - um1) / (2.0 * h)
    uxx = (up1 - 2.0 * u + um1) / (h * h)
    uxxxx = (up2 - 4.0 * up1 + 6.0 * u - 4.0 * um1 + um2) / (h ** 4)
    return -u * ux - uxx - uxxxx


def kuramoto_sivashinsky_point(n: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    """A random state of shape (n,), in [-1, 1)."""
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.rand(n, generator=g, dtype=dtype) - 1.0
