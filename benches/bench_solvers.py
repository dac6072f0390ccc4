"""Gauss-Newton / LM steps (``trackjac.solvers``) and ``scipy.optimize.least_squares`` with a plan.

Stages, on bundle adjustment (benches/problems.py, damping 1e-3, Jacobian from a warm plan):

- ``schur``: ``gauss_newton_step(..., "schur")``, the reduced camera system solved densely;
- ``schur-cg``: the same with the reduced system by CG (``dense_max=0``, tol 1e-8);
- ``cg``: CG on the whole normal equations (tol 1e-8);
- ``dense``: ``torch.linalg.solve`` of the dense damped normal equations from the dense
  Jacobian (the reference; small problems only).

And one ``least_squares(method="trf", tr_solver="lsmr")`` solve of a Brusselator implicit Euler
step with ``jac=`` from ``trackjac.interop.least_squares_problem`` vs ``jac=`` from
``torch.func.jacrev`` (dense). ``extra_info`` records problem, n, nnz and method. Rounds are
small; on a busy machine compare ratios within one run:

    python -m pytest benches/bench_solvers.py --benchmark-only --benchmark-json=benches/results/solvers.json
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from problems import brusselator, brusselator_point, bundle_adjustment, cpu_name  # noqa: E402

import trackjac  # noqa: E402
from trackjac.solvers import gauss_newton_step  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse (CSR|BSR|CSC|BSC)? ?tensor support is in beta")
BA = {"ba-20x500": (20, 500), "ba-50x2000": (50, 2000)}
DENSE_MAX_N = 2000
_CACHE: dict = {}


def _ba(name: str):
    if name not in _CACHE:
        ba = bundle_adjustment(*BA[name])
        plan = trackjac.jacobian_plan(ba.residual, *ba.args, layout=torch.sparse_bsr, blocksize=(2, 3))
        r, J = plan.value_and_jacobian(*ba.args)
        _CACHE[name] = (ba, plan, r.reshape(-1), J)
    return _CACHE[name]


def _info(benchmark, problem: str, n: int, nnz: int, method: str) -> None:
    benchmark.extra_info.update(problem=problem, n=n, nnz=nnz, method=method, suite="solvers", cpu=cpu_name(),
                                torch=torch.__version__, threads=torch.get_num_threads())


STEPS = {"schur": dict(method="schur"), "schur-cg": dict(method="schur", dense_max=0, tol=1e-8),
         "cg": dict(method="cg", tol=1e-8)}


@pytest.mark.parametrize("stage", [*STEPS, "dense"])
@pytest.mark.parametrize("name", list(BA))
def test_step(benchmark, name, stage):
    ba, plan, r, J = _ba(name)
    n = sum(a.numel() for a in ba.args)
    if stage == "dense":
        if n > DENSE_MAX_N:
            pytest.skip(f"dense normal equations at n = {n}")
        Jd = torch.cat([j.to_dense() for j in J], 1)

        def run():
            A = Jd.T @ Jd
            return torch.linalg.solve(A + 1e-3 * torch.diag(torch.diagonal(A)), -Jd.T @ r)
    else:
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # an inexact CG step is what an LM loop uses
                return gauss_newton_step(J, r, 1e-3, **STEPS[stage])
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    _info(benchmark, name, n, plan.nnz, stage)


@pytest.mark.parametrize("jac", ["trackjac", "jacrev"])
@pytest.mark.parametrize("N", [16])
def test_least_squares(benchmark, N, jac):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    from trackjac.interop import least_squares_problem
    x_old = brusselator_point(N)

    def G(x):
        return x - x_old - 0.01 * brusselator(x)

    prob = least_squares_problem(G, x_old)
    if jac == "trackjac":
        fun, jacobian = prob.fun, prob.jac
    else:
        dense = torch.func.jacrev(lambda x: G(x.reshape(x_old.shape)).reshape(-1))

        def fun(x):
            return G(torch.from_numpy(x).reshape(x_old.shape)).reshape(-1).numpy()

        def jacobian(x):
            return dense(torch.from_numpy(x)).numpy()

    def run():
        prob._x = None   # no cached evaluation between rounds
        res = scipy_optimize.least_squares(fun, prob.x0, jac=jacobian, method="trf", tr_solver="lsmr")
        assert res.success
        return res

    benchmark.pedantic(run, rounds=2, iterations=1)
    _info(benchmark, f"brusselator-{N}", x_old.numel(), prob.plan.nnz, f"least_squares jac={jac}")
