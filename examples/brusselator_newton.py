"""Implicit time steps of the 2-D Brusselator with Newton's method on a sparse Jacobian.

The Brusselator is a reaction-diffusion system of two species ``u, v`` on a
periodic N x N grid (n = 2 N^2 unknowns):

    du/dt = 1 + u^2 v - 4.4 u + alpha * Laplacian(u)
    dv/dt = 3.4 u - u^2 v     + alpha * Laplacian(v)

Diffusion makes it stiff, so explicit steps must be tiny; an implicit Euler step
solves ``G(x) = x - x_old - dt * f(x) = 0`` with Newton's method, which needs
the Jacobian ``I - dt * J_f`` at every iteration. ``J_f`` has exactly 6
nonzeros per row. Dense, it is ``n x n`` (537 MB at N = 64) and ``jacrev``
costs ``n`` vjps; with a ``trackjac.jacobian_plan`` it costs about 10 vjps per
iteration and is returned as a sparse CSR matrix, ready for a sparse solver.

The linear solve uses ``scipy.sparse.linalg.spsolve`` when scipy is installed
(torch has no sparse direct solver on the CPU), else BiCGSTAB with a Jacobi
preconditioner written with torch's sparse matrix-vector product.

Checks: random rows of the sparse Jacobian against autograd vjps, and Newton's
convergence to ``|G| < 1e-10`` in a few iterations (a wrong Jacobian would not
converge quadratically).

Run: ``python examples/brusselator_newton.py [--N 64] [--steps 5] [--solver auto|scipy|torch]``
"""
import argparse
import time
import warnings

import torch
from torch.func import jacrev

import trackjac

ALPHA = 10.0
warnings.filterwarnings("ignore", message="Sparse (CSR|BSR|CSC|BSC)? ?tensor support is in beta")


def laplacian(a):
    """Periodic 5-point Laplacian on the last two dims."""
    return (torch.roll(a, 1, -2) + torch.roll(a, -1, -2)
            + torch.roll(a, 1, -1) + torch.roll(a, -1, -1) - 4.0 * a)


def brusselator(x):
    """Right-hand side f(x), x of shape (2, N, N)."""
    u, v = x[0], x[1]
    uuv = u * u * v
    du = 1.0 + uuv - 4.4 * u + ALPHA * laplacian(u)
    dv = 3.4 * u - uuv + ALPHA * laplacian(v)
    return torch.stack([du, dv])


# --- linear solvers for (I - dt J) dx = -G ------------------------------------------


def sparse_identity(n, dtype):
    i = torch.arange(n)
    return torch.sparse_coo_tensor(torch.stack([i, i]), torch.ones(n, dtype=dtype), (n, n),
                                   is_coalesced=True, check_invariants=False)


def solve_scipy(A_csr, b):
    import numpy as np
    import scipy.sparse
    import scipy.sparse.linalg
    A = scipy.sparse.csr_matrix((A_csr.values().numpy(), A_csr.col_indices().numpy(),
                                 A_csr.crow_indices().numpy()), shape=tuple(A_csr.shape))
    return torch.from_numpy(np.asarray(scipy.sparse.linalg.spsolve(A.tocsc(), b.numpy())))


def diagonal(A_csr):
    crow, col, val = A_csr.crow_indices(), A_csr.col_indices(), A_csr.values()
    rows = torch.repeat_interleave(torch.arange(A_csr.shape[0]), crow.diff())
    d = torch.zeros(A_csr.shape[0], dtype=val.dtype)
    on = rows == col
    d[rows[on]] = val[on]
    return d


def solve_bicgstab(A_csr, b, tol=1e-13, maxiter=500):
    """Jacobi-preconditioned BiCGSTAB with torch sparse matvecs."""
    Minv = 1.0 / diagonal(A_csr)

    def mv(v):
        return A_csr @ v

    x = torch.zeros_like(b)
    r = b.clone()
    r0 = r.clone()
    rho = alpha = omega = torch.tensor(1.0, dtype=b.dtype)
    v = p = torch.zeros_like(b)
    bnorm = b.norm()
    for it in range(maxiter):
        rho_new = r0.dot(r)
        beta = (rho_new / rho) * (alpha / omega)
        p = r + beta * (p - omega * v)
        ph = Minv * p
        v = mv(ph)
        alpha = rho_new / r0.dot(v)
        s = r - alpha * v
        sh = Minv * s
        t = mv(sh)
        omega = t.dot(s) / t.dot(t)
        x = x + alpha * ph + omega * sh
        r = s - omega * t
        rho = rho_new
        if r.norm() <= tol * bnorm:
            break
    else:
        raise RuntimeError("BiCGSTAB did not converge")
    return x


# --- the time stepper ------------------------------------------------------------------


def check_rows(J_csr, x, rows=16, seed=0):
    """Compare random rows of the sparse Jacobian with autograd vjps."""
    n = x.numel()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:rows]
    _, vjp = torch.func.vjp(lambda y: brusselator(y).reshape(-1), x)
    E = torch.zeros(rows, n, dtype=x.dtype)
    E[torch.arange(rows), idx] = 1.0
    ref = torch.stack([vjp(e)[0].reshape(-1) for e in E])
    got = torch.index_select(J_csr.to_sparse_coo(), 0, idx).to_dense()
    err = float((got - ref).abs().max())
    assert err < 1e-12, f"sparse Jacobian rows differ from autograd by {err}"
    return err


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, default=64, help="grid size (n = 2 N^2 unknowns), default 64")
    ap.add_argument("--steps", type=int, default=5, help="implicit Euler steps, default 5")
    ap.add_argument("--dt", type=float, default=0.05, help="time step, default 0.05")
    ap.add_argument("--solver", choices=["auto", "scipy", "torch"], default="auto")
    ap.add_argument("--no-dense", action="store_true", help="skip the comparison with dense jacrev")
    a = ap.parse_args(argv)

    solver = a.solver
    if solver == "auto":
        try:
            import scipy.sparse.linalg  # noqa: F401
            solver = "scipy"
        except ImportError:
            solver = "torch"
    solve = solve_scipy if solver == "scipy" else solve_bicgstab

    N, dt = a.N, a.dt
    n = 2 * N * N
    dtype = torch.float64
    # steady state (u, v) = (1, 3.4) plus a smooth bump
    xs = torch.linspace(0, 1, N, dtype=dtype)
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    bump = torch.exp(-40 * ((X - 0.3) ** 2 + (Y - 0.6) ** 2))
    x = torch.stack([1.0 + 0.5 * bump, 3.4 - 0.5 * bump])

    t = time.perf_counter()
    plan = trackjac.jacobian_plan(brusselator, x, layout=torch.sparse_csr)
    t_plan = time.perf_counter() - t
    print(f"Brusselator N = {N}: n = {n:,} unknowns, {plan.pattern._nnz():,} Jacobian nonzeros")
    print(f"plan built in {t_plan:.2f} s: {plan.num_colors} colors ({plan.mode}); solver: {solver}")

    I = sparse_identity(n, dtype)
    t_jac = t_solve = 0.0
    n_jac = 0
    for step in range(1, a.steps + 1):
        x_old = x
        x = x_old.clone()
        norms = []
        for it in range(10):
            t = time.perf_counter()
            F, J = plan.value_and_jacobian(x)
            t_jac += time.perf_counter() - t
            n_jac += 1
            if step == 1 and it == 0:
                err = check_rows(J, x)
                print(f"check: 16 random rows equal autograd's vjps (max diff {err:.1e})")
            G = (x - x_old - dt * F).reshape(-1)
            norms.append(float(G.norm()))
            if norms[-1] < 1e-10:
                break
            A = (I - dt * J.to_sparse_coo()).coalesce().to_sparse_csr()
            t = time.perf_counter()
            dx = solve(A, -G)
            t_solve += time.perf_counter() - t
            x = x + dx.reshape(x.shape)
        print(f"step {step}: Newton |G| = " + ", ".join(f"{v:.1e}" for v in norms))
        assert norms[-1] < 1e-10, "Newton did not converge"
        assert len(norms) <= 6, "Newton converged too slowly: is the Jacobian right?"
    u = x[0]
    print(f"t = {a.steps * dt:.2f}: u in [{float(u.min()):.4f}, {float(u.max()):.4f}]")

    print(f"\nJacobian (plan.value_and_jacobian): {n_jac} evaluations, "
          f"{1e3 * t_jac / n_jac:.1f} ms each; linear solves: {1e3 * t_solve / max(n_jac - a.steps, 1):.1f} ms each")
    if a.no_dense:
        print("OK")
        return
    # Dense comparison on a smaller grid (jacrev at this N would need an n x n matrix).
    Nd = min(N, 40)
    xd = torch.rand(2, Nd, Nd, dtype=dtype)
    jacrev(brusselator)(xd)  # warm
    t = time.perf_counter()
    D = jacrev(brusselator)(xd).reshape(2 * Nd * Nd, -1)
    t_dense = time.perf_counter() - t
    pd = trackjac.jacobian_plan(brusselator, xd)
    pd(xd)
    t = time.perf_counter()
    Jd = pd(xd)
    t_sparse = time.perf_counter() - t
    assert torch.allclose(Jd.to_dense(), D, atol=1e-12)
    print(f"at N = {Nd} (n = {2 * Nd * Nd:,}): dense jacrev {1e3 * t_dense:.1f} ms, "
          f"warm plan {1e3 * t_sparse:.2f} ms, same values")
    print("OK")


if __name__ == "__main__":
    main()
