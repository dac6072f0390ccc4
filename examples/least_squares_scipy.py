"""``scipy.optimize.least_squares`` on a sparse problem, with trackjac's pattern and Jacobian.

The residual is one implicit Euler step of the 2-D Brusselator (a stiff reaction-diffusion
system on a periodic N x N grid, n = 2 N^2 unknowns): ``G(x) = x - x_old - dt f(x)``, whose
Jacobian has 6 nonzeros per row. It is written in plain PyTorch;
``trackjac.interop.least_squares_problem`` turns it into what least_squares takes:

* ``jac=``: the sparse Jacobian from a plan (about 10 vjps per evaluation), as scipy CSR, so
  least_squares' "trf" method uses its sparse trust-region solver (``tr_solver="lsmr"``);
* ``jac_sparsity=``: the pattern only, for least_squares' own finite differences, which it
  groups by the pattern's columns.

Both are compared with the same solve on the dense Jacobian from ``torch.func.jacrev``
(n vjps per evaluation, n x n memory): times, evaluations and the final cost. The example checks
that all three reach the same solution at a cost near zero (G(x) = 0 has a solution).

Run: ``python examples/least_squares_scipy.py [--N 24] [--small]``
"""
import argparse
import time
import warnings

import numpy as np
import scipy.optimize
import torch
from torch.func import jacrev

from trackjac.interop import least_squares_problem

ALPHA, DT = 10.0, 0.01
warnings.filterwarnings("ignore", message="Sparse (CSR|BSR|CSC|BSC)? ?tensor support is in beta")


def laplacian(a):
    """Periodic 5-point Laplacian on the last two dims."""
    return torch.roll(a, 1, -2) + torch.roll(a, -1, -2) + torch.roll(a, 1, -1) + torch.roll(a, -1, -1) - 4.0 * a


def brusselator(x):
    """Right-hand side f(x), x of shape (2, N, N)."""
    u, v = x[0], x[1]
    uuv = u * u * v
    return torch.stack([1.0 + uuv - 4.4 * u + ALPHA * laplacian(u), 3.4 * u - uuv + ALPHA * laplacian(v)])


def start(N):
    g = torch.Generator().manual_seed(0)
    s = torch.linspace(0, 1, N, dtype=torch.float64)
    u = 22 * (s[:, None] * (1 - s[:, None])) ** 1.5 * torch.ones(N, dtype=torch.float64)
    v = 27 * (s[None, :] * (1 - s[None, :])) ** 1.5 * torch.ones(N, 1, dtype=torch.float64)
    return torch.stack([u, v]) + 0.01 * torch.randn(2, N, N, generator=g, dtype=torch.float64)


def solve(label, fun, x0, **kw):
    t = time.perf_counter()
    res = scipy.optimize.least_squares(fun, x0, method="trf", xtol=1e-12, ftol=1e-12, gtol=1e-12, **kw)
    dt = time.perf_counter() - t
    print(f"{label:<34} {dt:8.2f} s  {res.nfev:>4} f  {res.njev or 0:>4} J   cost {res.cost:.2e}  ({res.status})")
    return res, dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, default=24, help="grid size (2 N^2 unknowns)")
    ap.add_argument("--small", action="store_true", help="N = 8, for the tests")
    a = ap.parse_args(argv)
    N = 8 if a.small else a.N
    x_old = start(N)

    def G(x):
        return x - x_old - DT * brusselator(x)

    n = x_old.numel()
    t = time.perf_counter()
    prob = least_squares_problem(G, x_old)                  # pattern + coloring, once
    t_plan = time.perf_counter() - t
    print(f"Brusselator implicit Euler step: N = {N}, {n} residuals and unknowns; "
          f"pattern {prob.jac_sparsity.nnz} nonzeros ({prob.jac_sparsity.nnz / n:.0f} per row, "
          f"{100 * prob.jac_sparsity.nnz / n ** 2:.2f}% dense), plan {prob.plan.num_colors} colors in {t_plan:.2f} s")

    def G_np(x):
        return G(torch.from_numpy(x).reshape(x_old.shape)).reshape(-1).numpy()

    dense_jac = jacrev(lambda x: G(x.reshape(x_old.shape)).reshape(-1))

    def J_dense(x):
        return dense_jac(torch.from_numpy(x)).numpy()

    x0 = prob.x0
    # one Jacobian each way, same point (warm first)
    prob.jac(x0 + 1e-3)
    J_dense(x0)
    t = time.perf_counter()
    Js = prob.jac(x0 + 2e-3)
    t_sparse = time.perf_counter() - t
    t = time.perf_counter()
    Jd = J_dense(x0 + 2e-3)
    t_dense = time.perf_counter() - t
    assert np.allclose(Js.toarray(), Jd, rtol=1e-12, atol=1e-12), "the sparse Jacobian differs from jacrev's"
    print(f"one Jacobian: trackjac plan {1e3 * t_sparse:.1f} ms (scipy CSR) vs jacrev {1e3 * t_dense:.1f} ms "
          f"(dense, {Jd.nbytes / 2 ** 20:.1f} MB): same values\n")

    title = 'least_squares(method="trf")'
    print(f"{title:<34} {'time':>10}  {'evaluations':>11}   final cost")
    sp, t_sp = solve("jac=trackjac (sparse, lsmr)", prob.fun, x0, jac=prob.jac, tr_solver="lsmr")
    fd, t_fd = solve("jac_sparsity=trackjac (2-point)", G_np, x0, jac="2-point", jac_sparsity=prob.jac_sparsity,
                     tr_solver="lsmr")
    # the same solve (lsmr) with the dense Jacobian: only the Jacobian differs
    de, t_de = solve("jac=jacrev (dense, lsmr)", G_np, x0, jac=J_dense, tr_solver="lsmr")
    print(f"\nsparse Jacobian: {t_de / t_sp:.1f}x faster than the dense solve; pattern + finite differences: "
          f"{t_de / t_fd:.1f}x")

    for r in (sp, fd, de):
        assert r.success and r.cost < 1e-12, f"least_squares did not solve G(x) = 0: cost {r.cost:.1e}"
    assert np.allclose(sp.x, de.x, atol=1e-8) and np.allclose(fd.x, de.x, atol=1e-6), "the solutions differ"
    print("OK: all three reach the same solution")


if __name__ == "__main__":
    main()
