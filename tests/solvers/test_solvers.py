"""``trackjac.solvers``: every step equals a dense solve of the damped normal equations, and LM
reaches the solution scipy's least_squares (or the known minimum) gives."""
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac
from trackjac.solvers import SolverWarning, gauss_newton_step, levenberg_marquardt

D64 = torch.float64
LAYOUTS = ["coo", "csr", "csc", "bsr", "dense"]


def _layout(J, name):
    if name == "coo":
        return J.to_sparse()
    if name == "csr":
        return J.to_sparse_csr()
    if name == "csc":
        return J.to_sparse_csc()
    if name == "bsr":
        return J.to_sparse_bsr((1, 1))
    return J


def dense_step(J, r, damping, damping_diag="jtj"):
    """The reference: torch.linalg.solve on the dense normal equations."""
    A = J.T @ J
    d = torch.diagonal(A).clone()
    D = torch.where(d > 0, d, torch.ones_like(d)) if damping_diag == "jtj" else torch.ones_like(d)
    return torch.linalg.solve(A + damping * torch.diag(D), -J.T @ r)


def close(dx, ref, rtol=1e-7):
    return float((dx - ref).norm()) <= rtol * max(float(ref.norm()), 1e-30)


def random_sparse(g, m, n, density, dtype=D64):
    return torch.randn(m, n, generator=g, dtype=dtype) * (torch.rand(m, n, generator=g) < density)


@pytest.fixture(autouse=True)
def _no_beta_notice():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR|CSC|BSR|BSC) tensor support is in beta")
        yield


# -- cg and dense steps on random sparse J ------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 14), st.integers(1, 9), st.floats(0.05, 1.0), st.sampled_from([1e-2, 0.3, 2.0]),
       st.sampled_from(["jtj", "identity"]), st.sampled_from(LAYOUTS), st.sampled_from(["cg", "dense"]),
       st.integers(0, 2 ** 31 - 1))
def test_damped_step_equals_dense_solve(m, n, density, damping, diag, layout, method, seed):
    g = torch.Generator().manual_seed(seed)
    J = random_sparse(g, m, n, density)
    r = torch.randn(m, generator=g, dtype=D64)
    dx = gauss_newton_step(_layout(J, layout), r, damping, method, damping_diag=diag, tol=1e-13)
    assert dx.shape == (n,) and dx.dtype == D64
    assert close(dx, dense_step(J, r, damping, diag), 1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(0, 10), st.floats(0.05, 1.0), st.sampled_from(["cg", "dense"]),
       st.integers(0, 2 ** 31 - 1))
def test_undamped_gauss_newton_step_equals_dense_solve(n, extra, density, method, seed):
    g = torch.Generator().manual_seed(seed)
    # a full-column-rank J: a nonsingular diagonal stacked over random sparse rows
    diag = torch.diag(1 + torch.rand(n, generator=g, dtype=D64))
    J = torch.cat([diag, random_sparse(g, extra, n, density)])
    r = torch.randn(n + extra, generator=g, dtype=D64)
    dx = gauss_newton_step(J.to_sparse(), r, 0.0, method, tol=1e-13)
    assert close(dx, dense_step(J, r, 0.0), 1e-6)
    # the Gauss-Newton step is the least-squares solution of J dx = -r
    assert close(dx, torch.linalg.lstsq(J, -r.unsqueeze(1)).solution.squeeze(1), 1e-6)


def test_tuple_of_blocks_is_joined_column_wise():
    g = torch.Generator().manual_seed(3)
    A, B = random_sparse(g, 10, 3, 0.6), random_sparse(g, 10, 4, 0.6)
    r = torch.randn(10, generator=g, dtype=D64)
    dx = gauss_newton_step((A.to_sparse(), B.to_sparse_csr()), r, 0.1)
    assert close(dx, dense_step(torch.cat([A, B], 1), r, 0.1))


# -- Schur on bundle-adjustment structure -------------------------------------------------------------------
def ba_jacobian(g, cams, cam_params, points, block, rows, dtype=D64, no_point=0.2):
    """J = [J_c | J_p]: each row sees a random camera's parameters and at most one point block."""
    Jc = torch.zeros(rows, cams * cam_params, dtype=dtype)
    Jp = torch.zeros(rows, points * block, dtype=dtype)
    cam = torch.randint(0, cams, (rows,), generator=g)
    pt = torch.randint(0, points, (rows,), generator=g)
    sees = torch.rand(rows, generator=g) >= no_point
    for i in range(rows):
        c = int(cam[i]) * cam_params
        Jc[i, c:c + cam_params] = torch.randn(cam_params, generator=g, dtype=dtype) * \
            (torch.rand(cam_params, generator=g) < 0.8)
        if sees[i]:
            p = int(pt[i]) * block
            Jp[i, p:p + block] = torch.randn(block, generator=g, dtype=dtype)
    return Jc, Jp


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.integers(1, 3), st.integers(1, 40),
       st.sampled_from([1e-3, 0.1, 1.0]), st.sampled_from([None, 0]), st.sampled_from(["coo", "csr", "dense"]),
       st.integers(0, 2 ** 31 - 1))
def test_schur_step_equals_dense_solve(cams, cam_params, points, block, rows, damping, dense_max, layout, seed):
    g = torch.Generator().manual_seed(seed)
    Jc, Jp = ba_jacobian(g, cams, cam_params, points, block, rows)
    r = torch.randn(rows, generator=g, dtype=D64)
    ref = dense_step(torch.cat([Jc, Jp], 1), r, damping)
    opts = {} if dense_max is None else {"dense_max": dense_max}   # 0: the reduced system by CG
    # as a plan returns it (one block per input) and as one matrix with split=
    dx = gauss_newton_step((_layout(Jc, layout), _layout(Jp, layout)), r, damping, "schur", block=block,
                           tol=1e-13, **opts)
    assert close(dx, ref, 1e-6)
    dx1 = gauss_newton_step(_layout(torch.cat([Jc, Jp], 1), layout), r, damping, "schur", block=block,
                            split=Jc.shape[1], tol=1e-13, **opts)
    assert close(dx1, ref, 1e-6)


def test_undamped_schur_step_on_a_well_observed_problem():
    g = torch.Generator().manual_seed(0)
    Jc, Jp = ba_jacobian(g, 3, 4, 5, 3, 200, no_point=0.0)
    r = torch.randn(200, generator=g, dtype=D64)
    ref = dense_step(torch.cat([Jc, Jp], 1), r, 0.0)
    assert close(gauss_newton_step((Jc.to_sparse(), Jp.to_sparse()), r, 0.0, "schur"), ref)
    assert close(gauss_newton_step((Jc.to_sparse(), Jp.to_sparse()), r, 0.0, "schur", dense_max=0, tol=1e-13), ref)


def test_schur_rejects_a_residual_on_two_points():
    Jc = torch.ones(2, 2, dtype=D64)
    Jp = torch.tensor([[1.0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=D64)
    with pytest.raises(ValueError, match="residual 0 depends on point blocks 0 and 1"):
        gauss_newton_step((Jc.to_sparse(), Jp.to_sparse()), torch.ones(2, dtype=D64), 0.1, "schur")
    with pytest.raises(ValueError, match="not a multiple of block=4"):
        gauss_newton_step((Jc.to_sparse(), Jp.to_sparse()), torch.ones(2, dtype=D64), 0.1, "schur", block=4)
    with pytest.raises(ValueError, match="needs split="):
        gauss_newton_step(Jc.to_sparse(), torch.ones(2, dtype=D64), 0.1, "schur")


def test_singular_systems_are_errors_not_garbage():
    Jc = torch.ones(2, 1, dtype=D64)
    Jp = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=D64)      # the point's 3rd coordinate is unobserved
    with pytest.raises(ValueError, match="point block 0 .* singular"):
        gauss_newton_step((Jc.to_sparse(), Jp.to_sparse()), torch.ones(2, dtype=D64), 0.0, "schur")
    J = torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=D64)       # dependent columns
    with pytest.raises(ValueError, match="singular"):
        gauss_newton_step(J.to_sparse(), torch.ones(2, dtype=D64), 0.0, "dense")


def test_bad_arguments_are_clear_errors():
    J, r = torch.eye(3, dtype=D64).to_sparse(), torch.ones(3, dtype=D64)
    with pytest.raises(ValueError, match="method must be one of"):
        gauss_newton_step(J, r, method="qr")
    with pytest.raises(ValueError, match="damping must be finite and >= 0"):
        gauss_newton_step(J, r, -1.0)
    with pytest.raises(ValueError, match="damping must be finite and >= 0"):
        gauss_newton_step(J, r, float("nan"))
    with pytest.raises(ValueError, match="r has 4 entries but J has 3 rows"):
        gauss_newton_step(J, torch.ones(4, dtype=D64))
    with pytest.raises(ValueError, match="differ"):
        gauss_newton_step(J, r.float())
    with pytest.raises(ValueError, match="dense_max=2"):
        gauss_newton_step(J, r, method="dense", dense_max=2)
    with pytest.raises(ValueError, match="different row counts"):
        gauss_newton_step((J, torch.eye(4, dtype=D64)), r)
    with pytest.raises(TypeError, match="real floating point"):
        gauss_newton_step(torch.eye(3, dtype=torch.int64), r)
    with pytest.raises(ValueError, match="damping_diag"):
        gauss_newton_step(J, r, 0.1, damping_diag="ones")


def test_cg_that_stops_early_warns():
    g = torch.Generator().manual_seed(1)
    J = random_sparse(g, 30, 20, 0.3)
    with pytest.warns(SolverWarning, match="CG stopped after 1 iterations"):
        gauss_newton_step(J.to_sparse(), torch.randn(30, generator=g, dtype=D64), 1e-3, max_iter=1)


@pytest.mark.parametrize("method", ["cg", "schur", "dense"])
def test_float32_steps(method):
    g = torch.Generator().manual_seed(2)
    Jc, Jp = ba_jacobian(g, 3, 4, 6, 3, 60)
    r = torch.randn(60, generator=g, dtype=D64)
    ref = dense_step(torch.cat([Jc, Jp], 1), r, 0.1)
    dx = gauss_newton_step((Jc.float().to_sparse(), Jp.float().to_sparse()), r.float(), 0.1, method, tol=1e-6)
    assert dx.dtype == torch.float32
    assert close(dx.double(), ref, 1e-3)


# -- Levenberg-Marquardt ------------------------------------------------------------------------------------
def rosenbrock(x):
    """Extended Rosenbrock residuals (sparse Jacobian, minimum 0 at all ones)."""
    return torch.cat([10 * (x[1::2] - x[0::2] ** 2), 1 - x[0::2]])


@pytest.mark.parametrize("method", ["cg", "dense"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lm_reaches_the_known_minimum(method, dtype):
    x0 = torch.tensor([-1.2, 1.0] * 10, dtype=dtype)
    res = levenberg_marquardt(rosenbrock, x0, method=method, max_iter=200,
                              ftol=1e-12 if dtype == torch.float64 else 1e-6)
    assert res.converged, res.message
    assert res.x.dtype == dtype and res.x.shape == x0.shape
    assert torch.allclose(res.x.double(), torch.ones(20, dtype=D64), atol=1e-6 if dtype == D64 else 1e-2)
    assert res.costs[0] > res.costs[-1] == res.cost
    assert all(a > b for a, b in zip(res.costs, res.costs[1:]))   # only steps that lower the cost are taken
    assert res.jacobians <= res.iterations + 1 and res.plan is not None


def curve(params, t, y):
    """Per-curve exponential fits sharing nothing: a block-diagonal Jacobian."""
    a, b = params[:, 0:1], params[:, 1:2]
    return a * torch.exp(-b * t) - y


def test_lm_matches_scipy_least_squares():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 3, 12, dtype=D64).expand(6, 12)
    true = torch.stack([1 + torch.rand(6, generator=g, dtype=D64), 0.5 + torch.rand(6, generator=g, dtype=D64)], 1)
    y = true[:, 0:1] * torch.exp(-true[:, 1:2] * t) + 0.01 * torch.randn(6, 12, generator=g, dtype=D64)
    f = lambda p: curve(p, t, y)  # noqa: E731
    x0 = torch.ones(6, 2, dtype=D64)
    res = levenberg_marquardt(f, x0, ftol=1e-15, xtol=1e-15, gtol=1e-13, max_iter=100)
    ref = scipy_optimize.least_squares(lambda p: f(torch.from_numpy(p).reshape(6, 2)).reshape(-1).numpy(),
                                       x0.reshape(-1).numpy(), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert res.converged, res.message
    assert torch.allclose(res.x.reshape(-1), torch.from_numpy(ref.x), atol=1e-7)
    assert abs(res.cost - ref.cost) <= 1e-10 * max(ref.cost, 1.0)


def tiny_ba(seed=0, cams=3, points=12):
    """Translation-only cameras (3 parameters) looking at points: a residual of 2 per observation."""
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(cams, 3, generator=g, dtype=D64) * 0.3
    C[:, 2] -= 6
    X = torch.randn(points, 3, generator=g, dtype=D64)
    ci = torch.arange(cams).repeat(points)           # every camera sees every point
    pi = torch.arange(points).repeat_interleave(cams)

    def proj(c, x):
        P = x[pi] - c[ci]
        return P[:, :2] / P[:, 2:3]

    obs = proj(C, X) + 1e-3 * torch.randn(cams * points, 2, generator=g, dtype=D64)
    f = lambda c, x: proj(c, x) - obs  # noqa: E731
    start = (C + 0.05 * torch.randn(C.shape, generator=g, dtype=D64),
             X + 0.05 * torch.randn(X.shape, generator=g, dtype=D64))
    return f, start


def test_lm_schur_equals_lm_dense_on_bundle_adjustment():
    f, start = tiny_ba()
    plan = trackjac.jacobian_plan(lambda c, x: f(c, x).reshape(-1), *start, layout=torch.sparse_bsr,
                                  blocksize=(2, 3))
    dense = levenberg_marquardt(f, start, method="dense", max_iter=30)
    for opts in ({}, {"dense_max": 0, "tol": 1e-12}):
        schur = levenberg_marquardt(f, start, plan=plan, method="schur", max_iter=30, step_options=opts)
        assert schur.converged and dense.converged
        assert schur.costs[:3] == pytest.approx(dense.costs[:3], rel=1e-8)   # the same steps
        for a, b in zip(schur.x, dense.x):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
        assert schur.cost < 1e-4 < schur.costs[0]   # down to the noise (72 residuals of sd 1e-3)
    assert levenberg_marquardt(f, start, plan=plan, method="schur", max_iter=30).cost == pytest.approx(schur.cost)


def test_lm_arguments():
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        levenberg_marquardt(rosenbrock, torch.ones(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="one tensor of residuals"):
        levenberg_marquardt(lambda x: (x, x), torch.ones(4, dtype=D64))
    with pytest.raises(ValueError, match="not finite"):
        levenberg_marquardt(lambda x: x / 0, torch.zeros(4, dtype=D64))
    with pytest.raises(ValueError, match="x0 is empty"):
        levenberg_marquardt(lambda x: x, torch.zeros(0, dtype=D64))
    plan = trackjac.jacobian_plan(rosenbrock, torch.ones(4, dtype=D64))
    with pytest.raises(ValueError, match="plan_options are for building a plan"):
        levenberg_marquardt(rosenbrock, torch.ones(4, dtype=D64), plan=plan, plan_options={"mode": "rev"})
    res = levenberg_marquardt(rosenbrock, torch.ones(4, dtype=D64), plan=plan)
    assert res.converged and res.iterations == 0 and res.cost == 0   # already at the minimum
    res = levenberg_marquardt(rosenbrock, torch.tensor([-1.2, 1.0], dtype=D64), max_iter=2)
    assert not res.converged and res.message == "max_iter=2 iterations" and res.iterations == 2


def test_docs_examples_run():
    """Every python block of docs/solvers.md runs (the scipy one only where scipy is installed)."""
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "docs", "solvers.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 4
    for block in blocks:
        if "scipy" in block:
            pytest.importorskip("scipy")
        exec(compile(block, "docs/solvers.md", "exec"), {})
