"""Sparse Jacobians: trackjac side by side with torch's dense Jacobians.

Problems (benches/problems.py): the 2-D Brusselator (n = 2 N^2 unknowns, 6
nonzeros per row) and a bundle-adjustment residual, at growing sizes. Methods:

- ``trackjac.jacobian`` from scratch (detection + fast coloring + evaluation);
- ``jacobian_plan`` build (detection + best coloring), and a warm plan call,
  eager and (``--compile`` / ``TRACKJAC_BENCH_COMPILE=1``) compiled;
- ``torch.func.jacrev``, ``torch.func.jacfwd``, ``torch.autograd.functional.jacobian``
  with ``vectorize=True`` and as a Python loop, where the dense Jacobian fits.

Run with pytest-benchmark (not part of the default test run, ``testpaths = tests``);
``TRACKJAC_BENCH_COMPILE=1`` adds the compiled plans, ``extra_info`` records problem,
numeric size (n, or observations), Jacobian shape, method and, for plan builds, colors:

    TRACKJAC_BENCH_COMPILE=1 python -m pytest benches/bench_engine.py --benchmark-only \
        --benchmark-json=benches/results/engine.json
    python benches/report.py benches/results/*.json --update docs/performance.md --plots docs/img

or as a script, which prints every number of one run as a markdown table:

    python benches/bench_engine.py [--quick] [--compile] [--threads N]
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from problems import brusselator, brusselator_pattern, brusselator_point, bundle_adjustment, cpu_name  # noqa: E402

from trackjac.coloring import color_rows  # noqa: E402
from trackjac import jacobian, jacobian_plan  # noqa: E402

COMPILE = os.environ.get("TRACKJAC_BENCH_COMPILE") == "1"
LOOP_MAX = 2048  # output rows beyond which the per-row autograd loop is skipped
BRUSSELATOR_N = (16, 32, 48, 128)  # dense methods up to 48 (n = 4608; 128 would need 8.6 GB)
BRUSSELATOR_DENSE_N = 48
# (cameras, points), 4 observations per point: 400 to 100,000 observations (issue #13: a from-scratch
# jacobian of the largest in 2 s or less)
BA_SIZES = ((8, 100), (32, 1000), (128, 10000), (1000, 25000))
DENSE_MLP = 1024  # tanh(W @ x) with a dense W: trackjac should cost about what jacrev does
BA_DENSE = 1  # dense methods on the first BA size only: jacrev took 100 s at (32, 1000)
VARIABLE_PART_N = 128  # n = 32,768: warm plans with constant_entries "recompute" and "reuse"


@dataclass
class Case:
    problem: str
    size: str
    method: str
    run: Callable[[], object]
    rounds: int  # timing rounds (slow dense methods get few)
    setup: Optional[Callable[[], None]] = None  # untimed, before the first round
    info: Dict[str, object] = field(default_factory=dict)  # extra_info of the pytest-benchmark JSON
    # the one gradient a warm plan is held to: timed by the bench itself just before every round
    # (outside pytest-benchmark's timing), so that load on the machine hits both alike
    reference: Optional[Callable[[], object]] = None


def _quiet(fn: Callable) -> Callable:
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    return run


def _dense_methods(f: Callable, args: Tuple[torch.Tensor, ...], rows: int) -> List[Tuple[str, Callable, int]]:
    argnums = tuple(range(len(args)))
    inputs = args if len(args) > 1 else args[0]
    out = [
        ("torch.func.jacrev", lambda: torch.func.jacrev(f, argnums=argnums)(*args), 1),
        ("torch.func.jacfwd", lambda: torch.func.jacfwd(f, argnums=argnums)(*args), 1),
        ("autograd.functional.jacobian(vectorize=True)",
         lambda: torch.autograd.functional.jacobian(f, inputs, vectorize=True), 1),
    ]
    if rows <= LOOP_MAX:
        out.append(("autograd.functional.jacobian (loop)",
                    lambda: torch.autograd.functional.jacobian(f, inputs), 1))
    return out


ONE_GRADIENT = "one gradient (eager f(x) + torch.func.vjp)"  # the price the warm plan is held to


def one_gradient(f: Callable, args: Tuple[torch.Tensor, ...]) -> Callable[[], object]:
    """One eager ``f(*args)`` and one ``torch.func.vjp`` of ``f`` with its backward: the reference
    a warm eager plan is measured against (issue #13: the whole Jacobian for about this)."""
    def run():
        out, vjp = torch.func.vjp(f, *args)
        return vjp(torch.ones_like(out))
    return run


def _sparse_methods(f, args, compile_too: bool) -> List[Case]:
    cases = []
    state = {}

    def build():
        state["plan"] = jacobian_plan(f, *args)

    ref = one_gradient(f, args)
    cases.append(("trackjac.jacobian (from scratch)", lambda: jacobian(f, *args), 3, None, None))
    cases.append(("trackjac.jacobian_plan (build)", lambda: jacobian_plan(f, *args), 1, None, None))
    cases.append(("trackjac plan(x) (warm, eager)", lambda: state["plan"](*args), 20, build, ref))
    cases.append((ONE_GRADIENT, ref, 20, None, None))
    if compile_too:
        def build_compiled():
            state["cplan"] = jacobian_plan(f, *args, compile=True)
            state["cplan"](*args)  # compile outside the timing
        cases.append(("trackjac plan(x) (warm, compiled)", lambda: state["cplan"](*args), 20, build_compiled,
                      ref))
    return cases


def cases(quick: bool = False, compile_too: bool = COMPILE) -> List[Case]:
    out: List[Case] = []
    for N in BRUSSELATOR_N[:2] if quick else BRUSSELATOR_N:
        x = brusselator_point(N)
        n = x.numel()
        size = f"N={N} (n={n})"
        info = dict(problem="brusselator", size=n, N=N, rows=n, cols=n)
        for name, run, rounds, setup, ref in _sparse_methods(brusselator, (x,), compile_too):
            out.append(Case("brusselator", size, name, _quiet(run), rounds, setup, info, ref))
        if N <= BRUSSELATOR_DENSE_N:
            for name, run, rounds in _dense_methods(brusselator, (x,), n):
                out.append(Case("brusselator", size, name, run, rounds, None, info))
    for k, (C, P) in enumerate(BA_SIZES[:2] if quick else BA_SIZES):
        ba = bundle_adjustment(C, P)
        rows = 2 * ba.cam_idx.numel()
        cols = ba.cams.numel() + ba.pts.numel()
        size = f"{C} cams, {P} pts ({rows} x {cols})"
        info = dict(problem="bundle_adjustment", size=ba.cam_idx.numel(), cameras=C, points=P, rows=rows, cols=cols)
        for name, run, rounds, setup, ref in _sparse_methods(ba.residual, ba.args, compile_too):
            out.append(Case("bundle adjustment", size, name, _quiet(run), rounds, setup, info, ref))
        if k < BA_DENSE:
            for name, run, rounds in _dense_methods(ba.residual, ba.args, rows):
                out.append(Case("bundle adjustment", size, name, run, rounds, None, info))
    # a dense Jacobian: identity seeds (DenseColoringWarning), the same work as jacrev
    W = torch.randn(DENSE_MLP, DENSE_MLP, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xm = torch.randn(DENSE_MLP, dtype=torch.float64)

    def mlp(x):
        return torch.tanh((W / DENSE_MLP ** 0.5) @ x)

    info = dict(problem="dense_mlp", size=DENSE_MLP, rows=DENSE_MLP, cols=DENSE_MLP)
    size = f"{DENSE_MLP} x {DENSE_MLP}"
    out.append(Case("dense MLP", size, "trackjac.jacobian (from scratch)", _quiet(lambda: jacobian(mlp, xm)), 3,
                    None, info))
    out.append(Case("dense MLP", size, "torch.func.jacrev", lambda: torch.func.jacrev(mlp)(xm), 3, None, info))
    out.extend(_variable_part_cases(VARIABLE_PART_N))
    P = brusselator_pattern(512)
    out.append(Case("coloring", "Brusselator rows, n=524288", "trackjac.color_rows",
                    lambda: color_rows(P), 3))
    return out


def _variable_part_cases(N: int) -> List[Case]:
    """Warm eager plans on the Brusselator: every entry from the products (9-10 colors) against
    constants computed once and only the variable entries colored (2 colors)."""
    x = brusselator_point(N)
    n = x.numel()
    out, state = [], {}
    info = dict(problem="brusselator_variable_part", size=n, N=N, rows=n, cols=n)
    ref = one_gradient(brusselator, (x,))
    out.append(Case("brusselator variable part", f"N={N} (n={n})", ONE_GRADIENT, ref, 20, None, info))
    for entries in ("recompute", "reuse"):
        def build(entries=entries):
            state[entries] = jacobian_plan(brusselator, x, constant_entries=entries)

        info = dict(problem="brusselator_variable_part", size=n, N=N, rows=n, cols=n, constant_entries=entries)
        out.append(Case("brusselator variable part", f"N={N} (n={n})",
                        f"trackjac plan(x) (warm, eager, constant_entries={entries!r})",
                        lambda entries=entries: state[entries](x), 20, build, info, ref))
    return out


# ----------------------------------------------------------------------------
# pytest-benchmark entry point
# ----------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # script use without pytest
    pytest = None

if pytest is not None:
    # coloring at every size is benches/bench_coloring.py's; the script below still times the largest
    _CASES = [c for c in cases() if c.problem != "coloring"]

    @pytest.mark.parametrize("case", _CASES, ids=[f"{c.problem}|{c.size}|{c.method}" for c in _CASES])
    def test_bench(benchmark, case):
        benchmark.group = f"{case.problem} {case.size}"
        if case.setup is not None:
            case.setup()
        case.run()  # warm-up: one-time costs (imports, functorch batching rules) are not timed
        ref_times: List[float] = []

        def time_reference():
            start = time.perf_counter()
            case.reference()
            ref_times.append(time.perf_counter() - start)

        result = benchmark.pedantic(case.run, setup=time_reference if case.reference else None,
                                    rounds=case.rounds, iterations=1)
        if ref_times:
            ref_times.sort()
            benchmark.extra_info.update(reference=ONE_GRADIENT, reference_min=ref_times[0],
                                        reference_median=ref_times[len(ref_times) // 2])
        if hasattr(result, "num_colors"):  # a plan: record its coloring
            benchmark.extra_info.update(colors=result.num_colors, mode=result.mode)
        benchmark.extra_info.update(
            suite="evaluation", method=case.method, compiled=COMPILE, threads=torch.get_num_threads(),
            torch=torch.__version__, device="cpu", device_name=cpu_name(), **case.info)


# ----------------------------------------------------------------------------
# Script: one run, one table
# ----------------------------------------------------------------------------


def _time(case: Case) -> Tuple[float, float]:
    """(best wall seconds, best process CPU seconds) over the case's rounds, after a warm-up."""
    if case.setup is not None:
        case.setup()
    case.run()
    wall, cpu = [], []
    for _ in range(case.rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        case.run()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def _fmt(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def main(argv: List[str]) -> None:
    quick = "--quick" in argv
    compile_too = COMPILE or "--compile" in argv
    if "--threads" in argv:  # on a busy machine one intra-op thread is often much faster
        torch.set_num_threads(int(argv[argv.index("--threads") + 1]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print("| problem | size | method | wall (best) | CPU (best) |")
    print("|---|---|---|---|---|")
    for case in cases(quick, compile_too):
        wall, cpu = _time(case)
        print(f"| {case.problem} | {case.size} | {case.method} | {_fmt(wall)} | {_fmt(cpu)} |", flush=True)
    for N in (48, 128, 512):
        P = brusselator_pattern(N)
        x = brusselator_point(N)
        plan = jacobian_plan(brusselator, x, pattern=P) if N <= 128 else None
        c = color_rows(P)
        extra = f", plan: mode={plan.mode}, colors={plan.num_colors}" if plan else ""
        print(f"colors, Brusselator N={N}: rows {c.num_colors} (lower bound {c.lower_bound}){extra}")


if __name__ == "__main__":
    main(sys.argv[1:])
