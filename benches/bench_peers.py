"""Peer benchmarks: asdex (JAX) and trackjac on the same problems, same point, same machine.

Per case (problem and size), each library runs in its own fresh subprocess with one
CPU thread (``OMP_NUM_THREADS=1``, ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``), float64:

- asdex: ``jacobian_sparsity`` (detection), ``jacobian_coloring_from_sparsity``
  (colors, its default mode choice), and ``jax.jit`` of ``jacobian_from_coloring``
  (the sparse BCOO Jacobian) and of ``compressed_jacobian_from_coloring``, timed warm
  after the compiling first call, as asdex's README recommends;
- trackjac: ``jacobian_sparsity`` (detection), ``jacobian_plan`` (build, colors,
  mode) and the warm ``plan(x)`` (a sparse COO Jacobian), eager and, with
  ``TRACKJAC_BENCH_COMPILE=1`` (or ``--compile``), ``compile=True``, with every entry from
  the products and with ``constant_entries="reuse"`` (constants computed once).

Detection is timed after one untimed call (the first pays one-time costs in both
libraries: JAX's tracing machinery, torch's subclass imports), which is recorded as
``first_s``. Timings are ``{"min", "median", "rounds"}`` in seconds. The problems'
JAX twins are in ``benches/peers.py``; asdex needs ``pip install 'trackjac[peers]'``
(never needed by the tests). Run from the repository root::

    python benches/bench_peers.py                      # the default cases
    python benches/bench_peers.py --cases brusselator:32768 laplacian3d_cubic:262144
    python benches/bench_peers.py --all                # every case of the issue's targets
    python benches/bench_peers.py --all --compile --cold-cache   # compile times of a first process
    python benches/bench_peers.py --merge --rounds 1 --cases brusselator:524288   # add a case to the file
    python benches/report.py benches/results/*.json --update docs/performance.md --readme README.md

Results go to ``benches/results/peers.json`` (``--out``), which ``benches/report.py``
renders next to trackjac's own suites. A library that fails or runs past
``--timeout`` gets ``{"error": ...}`` for that case instead of figures.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import problems  # noqa: E402

#: one intra-op thread for torch, OpenMP and XLA's CPU client in every worker
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
    "JAX_ENABLE_X64": "1",
}

PROBLEMS = ("brusselator", "laplacian3d_cubic", "kuramoto_sivashinsky", "bundle_adjustment")

#: bundle adjustment: observations -> (cameras, points), 4 observations per point (bench_engine / bench_detection)
BA_SHAPES = {400: (8, 100), 4000: (32, 1000), 40000: (128, 10000), 100000: (1000, 25000)}

#: the cases run without --cases / --all: small enough for a shared 2-core machine
DEFAULT_CASES = (("brusselator", 512), ("brusselator", 32768), ("bundle_adjustment", 400),
                 ("laplacian3d_cubic", 32768), ("kuramoto_sivashinsky", 32768))

#: the issue's targets (--all)
ALL_CASES = DEFAULT_CASES + (("brusselator", 524288), ("laplacian3d_cubic", 262144),
                             ("kuramoto_sivashinsky", 262144), ("bundle_adjustment", 100000))


@dataclass
class PeerCase:
    """One problem at one size: the torch function and point (and the BA instance, for its twin)."""

    problem: str
    size: int
    f: Callable
    args: Tuple[torch.Tensor, ...]
    ba: Optional[problems.BundleAdjustment] = None


def _root(size: int, power: int, what: str) -> int:
    N = round(size ** (1 / power))
    if N ** power != size:
        raise ValueError(f"{what}: size {size} is not {'2 N^2' if power == 2 else 'N^3'} for an integer N")
    return N


def make_case(problem: str, size: int) -> PeerCase:
    """The torch side of a case; ``size`` is n (unknowns), or observations for bundle adjustment."""
    if problem == "brusselator":
        if size % 2:
            raise ValueError(f"brusselator: size {size} is not 2 N^2 for an integer N")
        N = _root(size // 2, 2, "brusselator")
        return PeerCase(problem, size, problems.brusselator, (problems.brusselator_point(N),))
    if problem == "laplacian3d_cubic":
        N = _root(size, 3, "laplacian3d_cubic")
        return PeerCase(problem, size, problems.laplacian3d_cubic, (problems.laplacian3d_point(N),))
    if problem == "kuramoto_sivashinsky":
        if size < 5:
            raise ValueError("kuramoto_sivashinsky: size must be at least 5 (a 5-point stencil)")
        return PeerCase(problem, size, problems.kuramoto_sivashinsky, (problems.kuramoto_sivashinsky_point(size),))
    if problem == "bundle_adjustment":
        if size not in BA_SHAPES:
            raise ValueError(f"bundle_adjustment: observations must be one of {sorted(BA_SHAPES)}, not {size}")
        ba = problems.bundle_adjustment(*BA_SHAPES[size])
        return PeerCase(problem, size, ba.residual, ba.args, ba)
    raise ValueError(f"unknown problem {problem!r}; known: {', '.join(PROBLEMS)}")


def _timed(fn: Callable[[], object], rounds: int) -> Dict[str, float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": statistics.median(times), "rounds": rounds}


def _first(fn: Callable[[], object]) -> Tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # kB on Linux


# -- workers (one per library and case, in their own process) ---------------------------------

def run_trackjac(case: PeerCase, rounds: int, eval_rounds: int, compile_too: bool) -> dict:
    import trackjac   # here, not at the top: the asdex worker never loads it

    torch.set_num_threads(1)
    f, args = case.f, case.args
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pattern, first = _first(lambda: trackjac.jacobian_sparsity(f, *args))
        detection = _timed(lambda: trackjac.jacobian_sparsity(f, *args), rounds)
        plan, build = _first(lambda: trackjac.jacobian_plan(f, *args, threads=1))
        _, plan_first = _first(lambda: plan(*args))
        eager = _timed(lambda: plan(*args), eval_rounds)
        out = {"detection_s": detection, "first_s": first, "build_s": build, "plan_first_s": plan_first,
               "plan_eager_s": eager, "colors": plan.num_colors, "mode": plan.mode}
        if compile_too:
            cplan = trackjac.jacobian_plan(f, *args, threads=1, compile=True, pattern=pattern)
            _, out["compiled_first_s"] = _first(lambda: cplan(*args))
            out["plan_compiled_s"] = _timed(lambda: cplan(*args), eval_rounds)
            # constants computed once, only the variable entries colored (issue #13: the Brusselator's
            # reaction terms take 2 colors); where every entry varies it is the plan above
            rplan = trackjac.jacobian_plan(f, *args, threads=1, compile=True, constant_entries="reuse")
            _, out["compiled_reuse_first_s"] = _first(lambda: rplan(*args))
            out["plan_compiled_reuse_s"] = _timed(lambda: rplan(*args), eval_rounds)
            out["reuse_colors"] = rplan.num_colors
            out["reuse_entries"] = rplan.constant_entries   # "recompute" where reusing fell back
            from torch._dynamo.utils import counters   # did the first calls compile, or read inductor's cache?
            out["fxgraph_cache"] = {k: int(counters["inductor"].get(f"fxgraph_cache_{k}", 0))
                                    for k in ("hit", "miss", "bypass")}
    patterns = pattern if isinstance(pattern, tuple) else (pattern,)
    out.update(nnz=sum(int(p._nnz()) for p in patterns), n_outputs=int(patterns[0].shape[0]),
               n_inputs=sum(int(p.shape[1]) for p in patterns), peak_rss_mib=_peak_mib(),
               versions={"torch": torch.__version__})
    return out


def run_asdex(case: PeerCase, rounds: int, eval_rounds: int) -> dict:
    import asdex   # here, not at the top: the trackjac worker and the parent never need asdex,
    import jax     # nor jax,
    import peers   # nor the JAX twins

    f, args = peers.twin(case.problem, case.args, case.ba)
    argnums = tuple(range(len(args))) if len(args) > 1 else 0
    pattern, first = _first(lambda: asdex.jacobian_sparsity(f, *args, argnums=argnums))
    detection = _timed(lambda: asdex.jacobian_sparsity(f, *args, argnums=argnums), rounds)
    coloring, color_s = _first(lambda: asdex.jacobian_coloring_from_sparsity(pattern))
    out = {"detection_s": detection, "first_s": first, "coloring_s": color_s,
           "colors": int(coloring.num_colors), "mode": str(coloring.mode)}
    for key, build in (("eval_jit_s", asdex.jacobian_from_coloring),
                       ("compressed_jit_s", asdex.compressed_jacobian_from_coloring)):
        fn = jax.jit(build(f, coloring))

        def call():
            return jax.block_until_ready(fn(*args))

        try:
            _, out[key.replace("_s", "_first_s")] = _first(call)   # tracing and XLA compilation
        except Exception as exc:   # one evaluation failing (asdex's limits) keeps the other figures
            out.setdefault("errors", {})[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            continue
        out[key] = _timed(call, eval_rounds)
    out.update(nnz=int(len(pattern.rows)), n_outputs=int(pattern.shape[0]), n_inputs=int(pattern.shape[1]),
               peak_rss_mib=_peak_mib(),
               versions={"jax": jax.__version__, "jaxlib": jax.lib.__version__, "asdex": _version("asdex")})
    return out


def _version(dist: str) -> str:
    from importlib.metadata import version   # only the asdex worker asks
    return version(dist)


def worker(argv: Sequence[str]) -> None:
    tool, problem, size, rounds, eval_rounds, compile_too = argv
    case = make_case(problem, int(size))
    if tool == "asdex":
        out = run_asdex(case, int(rounds), int(eval_rounds))
    elif tool == "trackjac":
        out = run_trackjac(case, int(rounds), int(eval_rounds), compile_too == "1")
    else:
        raise ValueError(f"unknown tool {tool!r}")
    print("RESULT " + json.dumps(out), flush=True)


# -- the parent: one subprocess per library and case ------------------------------------------

def spawn(tool: str, problem: str, size: int, rounds: int, eval_rounds: int, compile_too: bool,
          timeout: float, cold_cache: Optional[str] = None) -> dict:
    """One worker's result, or ``{"error": ...}`` when it fails or times out."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", tool, problem, str(size),
           str(rounds), str(eval_rounds), "1" if compile_too else "0"]
    env = dict(os.environ, **SINGLE_THREAD_ENV)
    if tool == "trackjac" and cold_cache is not None:   # a cache of its own: the first call compiles for real
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cold_cache) / f"{problem}-{size}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        text = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        errors = [ln for ln in text if re.match(r"\w+(Error|Exception)\b", ln)]   # JAX appends notes after it
        return {"error": f"exit {proc.returncode}: {(errors or text)[-1][:300]}"}
    out = json.loads(lines[-1][len("RESULT "):])
    out["process_wall_s"] = wall
    return out


def run_cases(cases: Sequence[Tuple[str, int]], tools: Sequence[str], rounds: int, eval_rounds: int,
              compile_too: bool, timeout: float, cold_cache: Optional[str] = None) -> dict:
    t0 = time.perf_counter()
    results, versions = [], {"torch": torch.__version__}
    for problem, size in cases:
        make_case(problem, size)   # a bad case fails here, before any worker starts
        entry: dict = {"problem": problem, "size": size}
        for tool in tools:
            res = spawn(tool, problem, size, rounds, eval_rounds, compile_too, timeout, cold_cache)
            versions.update(res.pop("versions", {}))
            for key in ("n_inputs", "n_outputs", "nnz"):
                if key in res:
                    entry.setdefault(key, res[key])
                    if res[key] != entry[key]:   # both detect exact patterns: a difference is a bug
                        res["mismatch"] = f"{key} {res[key]} != {entry[key]}"
            entry[tool] = res
            print(f"{problem} {size:,} {tool}: {_summary(res)}", file=sys.stderr, flush=True)
        results.append(entry)
    machine = {"cpu": problems.cpu_name(), "python": platform.python_version(), **versions,
               "threads": 1, "compile": compile_too, "float": "float64", "cold_inductor_cache": cold_cache is not None}
    return {"suite": "peers", "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine, "suite_wall_s": time.perf_counter() - t0, "cases": results}


def merge_runs(old: dict, new: dict) -> dict:
    """``new`` with the cases of ``old`` that it does not rerun; run times add up, dates are the latest."""
    if old.get("suite") != "peers":
        raise ValueError("--merge: the existing --out file is not a bench_peers.py result")
    if old.get("machine", {}).get("cpu") != new["machine"]["cpu"]:
        raise ValueError(f"--merge: the existing results are from another machine ({old['machine'].get('cpu')})")
    rerun = {(c["problem"], c["size"]) for c in new["cases"]}
    kept = [c for c in old["cases"] if (c["problem"], c["size"]) not in rerun]
    return dict(new, cases=kept + new["cases"], suite_wall_s=old.get("suite_wall_s", 0.0) + new["suite_wall_s"])


def _summary(res: dict) -> str:
    if "error" in res:
        return res["error"]
    parts = [f"detection {res['detection_s']['min']:.4g} s", f"{res['colors']} colors ({res['mode']})"]
    for key in ("eval_jit_s", "compressed_jit_s", "plan_eager_s", "plan_compiled_s"):
        if key in res:
            parts.append(f"{key[:-2]} {res[key]['median'] * 1e3:.3g} ms")
    return ", ".join(parts)


def _parse_case(text: str) -> Tuple[str, int]:
    problem, _, size = text.partition(":")
    if not size.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected PROBLEM:SIZE, e.g. brusselator:32768")
    return problem, int(size)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", type=_parse_case, metavar="PROBLEM:SIZE",
                    help=f"problems: {', '.join(PROBLEMS)}; size: n, or observations ({sorted(BA_SHAPES)})")
    ap.add_argument("--all", action="store_true", help="every case of the issue's targets")
    ap.add_argument("--tools", default="asdex,trackjac", help="comma-separated: asdex, trackjac")
    ap.add_argument("--rounds", type=int, default=3, help="timed detections per case (after one untimed)")
    ap.add_argument("--eval-rounds", type=int, default=20, help="timed warm evaluations per case")
    ap.add_argument("--compile", action="store_true", default=os.environ.get("TRACKJAC_BENCH_COMPILE") == "1",
                    help="also time trackjac's compile=True plan")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per worker")
    ap.add_argument("--cold-cache", action="store_true",
                    help="give each trackjac worker an empty TORCHINDUCTOR_CACHE_DIR, so compile times are "
                         "those of a first process (asdex's JIT has no persistent cache by default)")
    ap.add_argument("--out", default=str(HERE / "results" / "peers.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the other cases of an existing --out file (this run's replace same-named ones)")
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not tools or set(tools) - {"asdex", "trackjac"}:
        ap.error(f"--tools: expected asdex and/or trackjac, got {args.tools!r}")
    cases = args.cases or (ALL_CASES if args.all else DEFAULT_CASES)
    with (tempfile.TemporaryDirectory(prefix="trackjac-inductor-") if args.cold_cache
          else contextlib.nullcontext()) as cold:   # None: the machine's inductor cache
        data = run_cases(cases, tools, args.rounds, args.eval_rounds, args.compile, args.timeout, cold)
    if args.merge and Path(args.out).exists():
        data = merge_runs(json.loads(Path(args.out).read_text()), data)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out} ({data['suite_wall_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
