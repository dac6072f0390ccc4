"""Sparse Hessians: detection, coloring and evaluation next to ``torch.func.hessian`` (dense).

Problems (benches/problems.py): chained Rosenbrock (tridiagonal) at n = 1,000 (dense feasible)
and n = 100,000 (dense would need 80 GB), a sparse quadratic, a bundle-adjustment cost
(two inputs), an arrowhead and a per-sample MLP loss (block diagonal). Stages:

- ``detect``: ``trackjac.hessian_sparsity``;
- ``color``: the coloring the Hessian plans use (symmetric where available, else columns);
- ``plan call``: a warm ``HessianPlan`` call (batched forward-over-reverse HVPs + assembly);
- ``torch.func.hessian``: the dense Hessian, where it fits.

``extra_info`` records problem, n, nnz, colors and their lower bound (the longest row of the
pattern: that many columns must get distinct colors). Rounds are small so the file runs in
well under two minutes on two cores:

    python -m pytest benches/bench_hessian.py --benchmark-only --benchmark-json=benches/results/hessian.json
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from problems import (PerSampleMLP, arrowhead_cost, ba_cost, bundle_adjustment, cpu_name, rosenbrock,  # noqa: E402
                      sparse_quadratic)

import trackjac  # noqa: E402
from trackjac import coloring as tjc  # noqa: E402

D = torch.float64


def _rosen(n: int):
    return rosenbrock, (torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(0)),)


def _quadratic(n: int):
    f, _ = sparse_quadratic(n, 3, seed=0)
    return f, (torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(1)),)


def _ba(cams: int, pts: int):
    ba = bundle_adjustment(cams, pts)
    return ba_cost(ba), ba.args


def _arrow(n: int):
    return arrowhead_cost, (torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(0)),)


def _mlp(batch: int, d: int = 8):
    return PerSampleMLP(d, hidden=32), (torch.randn(batch, d, dtype=D, generator=torch.Generator().manual_seed(0)),)


# name -> (builder, n, whether the dense Hessian is benchmarked too)
PROBLEMS: Dict[str, Tuple[Callable, int, bool]] = {
    "rosenbrock-1k": (lambda: _rosen(1000), 1000, True),
    "rosenbrock-100k": (lambda: _rosen(100_000), 100_000, False),
    "quadratic-2k": (lambda: _quadratic(2000), 2000, True),
    "quadratic-100k": (lambda: _quadratic(100_000), 100_000, False),
    "bundle-adjustment-8x100": (lambda: _ba(8, 100), 8 * 9 + 100 * 3, True),
    "arrowhead-1k": (lambda: _arrow(1000), 1000, True),
    "mlp-per-sample-500x8": (lambda: _mlp(500), 4000, True),
}
_CACHE: Dict[str, tuple] = {}


def _problem(name: str):
    """(f, args, plan) built once per problem (untimed)."""
    if name not in _CACHE:
        f, args = PROBLEMS[name][0]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = trackjac.hessian_plan(f, *args)
            plan(*args)   # warm: the first call audits two colors against plain autograd
        _CACHE[name] = (f, args, plan)
    return _CACHE[name]


def _info(benchmark, name: str, stage: str, plan) -> None:
    rows, cols, (n, _) = plan.structure.global_coo()
    lower = int(torch.bincount(rows, minlength=n).max()) if rows.numel() else 0
    benchmark.extra_info.update(problem=name, n=n, nnz=plan.nnz, colors=plan.num_colors, lower_bound=lower,
                                coloring=type(plan.coloring).__name__, method=stage, cpu=cpu_name(),
                                symmetric=getattr(plan.coloring, "method", None), suite="hessian",
                                torch=torch.__version__, threads=torch.get_num_threads())


def _color_fn() -> Callable:
    symmetric = getattr(tjc, "color_symmetric", None)
    if symmetric is not None:
        return lambda coo: symmetric(coo, method="auto")
    return tjc.color_columns


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_detect(benchmark, name):
    f, args, plan = _problem(name)
    benchmark.pedantic(lambda: trackjac.hessian_sparsity(f, *args), rounds=2, iterations=1)
    _info(benchmark, name, "detect", plan)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_color(benchmark, name):
    _, _, plan = _problem(name)
    rows, cols, (n, _) = plan.structure.global_coo()
    color = _color_fn()
    benchmark.pedantic(lambda: color((rows, cols, (n, n))), rounds=2, iterations=1)
    _info(benchmark, name, "color", plan)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_plan_call(benchmark, name):
    _, args, plan = _problem(name)
    benchmark.pedantic(lambda: plan(*args), rounds=3, iterations=1, warmup_rounds=1)
    _info(benchmark, name, "plan call", plan)


@pytest.mark.parametrize("name", [k for k, v in PROBLEMS.items() if v[2]])
def test_dense_torch_func_hessian(benchmark, name):
    f, args, plan = _problem(name)
    dense = torch.func.hessian(f, argnums=tuple(range(len(args))))
    benchmark.pedantic(lambda: dense(*args), rounds=2, iterations=1)
    _info(benchmark, name, "torch.func.hessian", plan)
