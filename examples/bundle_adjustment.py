"""Bundle adjustment with Levenberg-Marquardt on a block-sparse Jacobian.

Cameras (9 parameters each: axis-angle rotation, translation, focal length, two
radial distortion terms, the BAL model) look at 3-D points; every observation
gives a 2-D reprojection residual that depends on one camera and one point. The
Jacobian is therefore made of 2 x 9 camera blocks and 2 x 3 point blocks, one of
each per observation, and nothing else. Written as plain PyTorch (gather the
cameras and points of each observation, project, subtract), trackjac finds that
structure by itself; ``trackjac.jacobian_plan`` then evaluates the Jacobian with
a handful of vjps per iteration and returns it as BSR matrices, whose blocks feed
the classic Schur-complement solve of the normal equations (points eliminated
block by block, a small dense system for the cameras).

A synthetic problem with a few thousand observations: the example checks the
sparse Jacobian against a dense one from ``torch.func.jacfwd``, compares their
times, and checks that LM reaches a cost below that of the ground truth (it fits
the noise), from a perturbed start.

Run: ``python examples/bundle_adjustment.py [--cams 20] [--points 500] [--obs 4]``
"""
import argparse
import time
import warnings

import torch
from torch.func import jacfwd

import trackjac
from trackjac.solvers import gauss_newton_step, levenberg_marquardt

warnings.filterwarnings("ignore", message="Sparse (CSR|BSR|CSC|BSC)? ?tensor support is in beta")


# --- the model: plain PyTorch --------------------------------------------------------


def rotate(w, p):
    """Rodrigues rotation of points p (..., 3) by axis-angle w (..., 3)."""
    theta = torch.sqrt((w * w).sum(-1, keepdim=True) + 1e-12)
    k = w / theta
    cos, sin = torch.cos(theta), torch.sin(theta)
    return p * cos + torch.linalg.cross(k, p, dim=-1) * sin + k * (k * p).sum(-1, keepdim=True) * (1 - cos)


def project(cams, pts):
    """BAL camera model: (..., 9) cameras, (..., 3) points -> (..., 2) pixels."""
    P = rotate(cams[..., 0:3], pts) + cams[..., 3:6]
    p = -P[..., 0:2] / P[..., 2:3]
    f, k1, k2 = cams[..., 6:7], cams[..., 7:8], cams[..., 8:9]
    r2 = (p * p).sum(-1, keepdim=True)
    return f * (1 + k1 * r2 + k2 * r2 * r2) * p


class Problem:
    def __init__(self, n_cams, n_pts, obs_per_pt, noise=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        d = torch.float64
        cams = torch.zeros(n_cams, 9, dtype=d)
        cams[:, 0:3] = 0.1 * torch.randn(n_cams, 3, generator=g, dtype=d)
        cams[:, 3:6] = 0.5 * torch.randn(n_cams, 3, generator=g, dtype=d)
        cams[:, 5] -= 8.0                                   # points in front of the cameras
        cams[:, 6] = 500 + 10 * torch.randn(n_cams, generator=g, dtype=d)
        cams[:, 7:9] = 1e-3 * torch.randn(n_cams, 2, generator=g, dtype=d)
        pts = torch.randn(n_pts, 3, generator=g, dtype=d)
        self.cam_idx = torch.stack([torch.randperm(n_cams, generator=g)[:obs_per_pt]
                                    for _ in range(n_pts)]).reshape(-1)
        self.pt_idx = torch.arange(n_pts).repeat_interleave(obs_per_pt)
        self.observed = project(cams[self.cam_idx], pts[self.pt_idx])
        self.observed = self.observed + noise * torch.randn(self.observed.shape, generator=g, dtype=d)
        self.true = (cams, pts)
        # a perturbed start
        c0 = cams.clone()
        c0[:, 0:3] += 0.01 * torch.randn(n_cams, 3, generator=g, dtype=d)
        c0[:, 3:6] += 0.05 * torch.randn(n_cams, 3, generator=g, dtype=d)
        c0[:, 6] *= 1 + 0.01 * torch.randn(n_cams, generator=g, dtype=d)
        p0 = pts + 0.05 * torch.randn(n_pts, 3, generator=g, dtype=d)
        self.start = (c0, p0)

    def residual(self, cams, pts):
        """(C, 9), (P, 3) -> (O, 2): the only function trackjac sees."""
        return project(cams[self.cam_idx], pts[self.pt_idx]) - self.observed

    def cost(self, cams, pts):
        return 0.5 * float((self.residual(cams, pts) ** 2).sum())


# --- BSR blocks ----------------------------------------------------------------------




def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cams", type=int, default=20)
    ap.add_argument("--points", type=int, default=500)
    ap.add_argument("--obs", type=int, default=4, help="observations per point")
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--no-dense", action="store_true", help="skip the dense Jacobian comparison")
    a = ap.parse_args(argv)

    prob = Problem(a.cams, a.points, a.obs)
    C, P, O = a.cams, a.points, prob.cam_idx.numel()
    cams, pts = prob.start
    print(f"bundle adjustment: {C} cameras, {P} points, {O} observations "
          f"({2 * O} residuals, {9 * C + 3 * P} parameters)")

    t = time.perf_counter()
    # one blocksize per argument: a 2 x 9 block per (observation, camera), 2 x 3 per point
    plan = trackjac.jacobian_plan(prob.residual, cams, pts, layout=torch.sparse_bsr, blocksize=[(2, 9), (2, 3)])
    t_plan = time.perf_counter() - t
    print(f"plan: pattern + coloring in {t_plan:.2f} s, {plan.num_colors} colors ({plan.mode}) "
          f"instead of {2 * O} vjps or {9 * C + 3 * P} jvps")

    # --- the sparse Jacobian against a dense one -------------------------------------
    plan(cams, pts)  # warm
    t = time.perf_counter()
    Jc, Jp = plan(cams, pts)
    t_sparse = time.perf_counter() - t
    if not a.no_dense:
        t = time.perf_counter()
        Dc, Dp = jacfwd(prob.residual, argnums=(0, 1))(cams, pts)  # faster than jacrev here
        t_dense = time.perf_counter() - t
        Dc, Dp = Dc.reshape(2 * O, 9 * C), Dp.reshape(2 * O, 3 * P)
        assert torch.allclose(Jc.to_dense(), Dc, rtol=1e-10, atol=1e-8)
        assert torch.allclose(Jp.to_dense(), Dp, rtol=1e-10, atol=1e-8)
        mb = (Dc.numel() + Dp.numel()) * 8 / 2 ** 20
        print(f"Jacobian: plan {1e3 * t_sparse:.1f} ms ({(Jc.values().numel() + Jp.values().numel()) * 8 / 2 ** 20:.1f} MB "
              f"of blocks) vs dense jacfwd {1e3 * t_dense:.0f} ms ({mb:.0f} MB): "
              f"{t_dense / t_sparse:.0f}x faster, same values")

    # --- Levenberg-Marquardt: trackjac.solvers, the points eliminated by a Schur complement ---
    # The plan's blocks are (cameras, points): method="schur" takes the last input as the point
    # blocks (3 columns each; every observation sees one point) and solves the reduced camera system.
    cost_true = prob.cost(*prob.true)
    t0 = time.perf_counter()
    res = levenberg_marquardt(prob.residual, (cams, pts), plan=plan, method="schur", damping=1e-3,
                              max_iter=a.iters)
    t_total = time.perf_counter() - t0
    print(f"\n{'iter':>4} {'cost':>12} {'lambda':>8}  (cost at the ground truth: {cost_true:.1f})")
    print(f"{0:>4} {res.costs[0]:12.4f} {1e-3:8.0e}")
    for it, (c, lam) in enumerate(zip(res.costs[1:], res.dampings), 1):
        print(f"{it:>4} {c:12.4f} {lam:8.0e}")
    cams, pts = res.x
    r, J = plan.value_and_jacobian(cams, pts)
    t = time.perf_counter()
    gauss_newton_step(J, r, 1e-3, "schur")
    t_step = time.perf_counter() - t
    print(f"\nLM: {res.iterations} iterations, {res.jacobians} Jacobians in {t_total:.2f} s "
          f"(one Schur step: {1e3 * t_step:.1f} ms); {res.message}")
    cost = res.cost
    assert cost <= cost_true, f"LM stopped above the ground truth's cost ({cost:.2f} > {cost_true:.2f})"
    print(f"OK: final cost {cost:.2f} <= ground truth {cost_true:.2f}")

if __name__ == "__main__":
    main()
