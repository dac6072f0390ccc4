"""Sparsity detection: ``trackjac.jacobian_sparsity`` on growing problems.

Problems (benches/problems.py): the 2-D Brusselator (n = 2 N^2 unknowns, exactly 6
nonzeros per Jacobian row) and a bundle-adjustment residual (cameras x points, 2
residuals per observation, 12 nonzeros per row), each with both provenance
representations where feasible (``sets``: CSR index sets, ``bits``: packed bitmasks,
only up to ``BITS_MAX_INPUTS`` inputs since they cost ``numel x n_inputs`` bits).

Recorded per case (``extra_info`` of the pytest-benchmark JSON): the plain ``f(x)``
time, the ratio detection / ``f(x)``, the pattern's nonzeros, and the peak memory of
one detection measured in a fresh subprocess (peak RSS of the process, and the peak
above the RSS just before detection; on CUDA the peak of the caching allocator).

Run (not part of the default test run, ``testpaths = tests``)::

    python -m pytest benches/bench_detection.py --benchmark-only --benchmark-json=benches/results/detection.json
    python benches/report.py benches/results/*.json --update docs/performance.md --plots docs/img

``TRACKJAC_BENCH_QUICK=1`` keeps the small sizes only.  One case's memory by hand, and
the table behind the automatic bitmask threshold (sets vs bits on sparse and dense problems)::

    python benches/bench_detection.py --memory brusselator 32768 sets cpu
    python benches/bench_detection.py --threshold
"""
from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, List, Tuple

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import problems  # noqa: E402

import trackjac  # noqa: E402

QUICK = os.environ.get("TRACKJAC_BENCH_QUICK") == "1"
BRUSSELATOR_N = (16, 32, 64, 128) if QUICK else (16, 32, 64, 128, 256, 512, 1024)   # n = 2 N^2
BA_OBSERVATIONS = (1_000, 10_000) if QUICK else (1_000, 10_000, 100_000)
BITS_MAX_INPUTS = 8192   # bitmasks beyond this are slower than sets on these sparse problems
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make(problem: str, size: int, device: str) -> Tuple[Callable, list, int]:
    """``(f, args, n_inputs)``; ``size`` is n for the Brusselator, observations for BA."""
    if problem == "brusselator":
        N = int(round((size // 2) ** 0.5))
        return problems.brusselator, [problems.brusselator_point(N, device=device)], 2 * N * N
    ba = problems.bundle_adjustment(max(size // 100, 10), size // 4, device=device)
    return ba.residual, list(ba.args), sum(a.numel() for a in ba.args)


def detect(f, args, representation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trackjac.jacobian_sparsity(f, *args, representation=representation)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_plain(f, args, device, rounds: int = 20) -> float:
    """Best time of the plain function, with one thread and with torch's default count
    (on a busy machine a thread pool can be much slower than one thread)."""
    f(*args)
    best = float("inf")
    default = torch.get_num_threads()
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        try:
            for _ in range(rounds):
                _sync(device)
                t = time.perf_counter()
                f(*args)
                _sync(device)
                best = min(best, time.perf_counter() - t)
        finally:
            torch.set_num_threads(default)
    return best


def _nnz(pats) -> int:
    pats = pats if isinstance(pats, tuple) else (pats,)
    return sum(int(p._nnz()) for p in pats)


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _hwm_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(problem: str, size: int, representation: str, device: str) -> dict:
    """Peak memory of one detection in this process (run it in a fresh one)."""
    small = make(problem, 128 if problem == "brusselator" else 100, device)
    detect(small[0], small[1], representation)   # first call: imports, op tables
    f, args, _ = make(problem, size, device)
    gc.collect()
    try:  # give freed heap back to the OS, so the baseline is what is really in use
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    before = _rss_mib()
    reset = False
    try:  # Linux: reset the peak RSS to the current RSS
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        reset = True
    except OSError:
        pass
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    pats = detect(f, args, representation)
    _sync(device)
    out = {"peak_rss_mib": round(_hwm_mib(), 1), "rss_before_mib": round(before, 1),
           "peak_reset": reset, "nnz": _nnz(pats)}
    out["detection_peak_mib"] = round(out["peak_rss_mib"] - before, 1) if reset else None
    if device == "cuda":
        out["cuda_peak_mib"] = round((torch.cuda.max_memory_allocated() - cuda_before) / 2 ** 20, 1)
    return out


def peak_memory(problem: str, size: int, representation: str, device: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory", problem, str(size), representation, device]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode:
        return {"memory_error": r.stderr[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def cases() -> List[tuple]:
    out = []
    for device in DEVICES:
        for N in BRUSSELATOR_N:
            n = 2 * N * N
            for rep in ("sets", "bits") if n <= BITS_MAX_INPUTS else ("sets",):
                out.append(("brusselator", n, rep, device))
        for obs in BA_OBSERVATIONS:
            n_in = 9 * max(obs // 100, 10) + 3 * (obs // 4)
            for rep in ("sets", "bits") if n_in <= BITS_MAX_INPUTS else ("sets",):
                out.append(("bundle_adjustment", obs, rep, device))
    return out


def _check(problem, size, f, args, pats):
    if problem == "brusselator" and size <= 32768:
        N = int(round((size // 2) ** 0.5))
        assert torch.equal(pats.cpu().indices(), problems.brusselator_pattern(N).indices())


try:
    import pytest
except ImportError:  # script use only
    pytest = None

if pytest is not None:
    @pytest.mark.parametrize("case", cases(), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
    def test_detection(benchmark, case):
        problem, size, rep, device = case
        f, args, n_inputs = make(problem, size, device)
        pats = detect(f, args, rep)   # warm-up, and the pattern for the record
        _check(problem, size, f, args, pats)
        rounds = 3 if n_inputs > 100_000 else 7
        benchmark.pedantic(detect, args=(f, args, rep), setup=lambda: _sync(device),
                           rounds=rounds, iterations=1, warmup_rounds=0)
        t_f = time_plain(f, args, device)
        st = benchmark.stats.stats
        benchmark.extra_info.update(
            suite="detection", problem=problem, size=size, representation=rep, device=device, n_inputs=n_inputs,
            n_outputs=f(*args).numel(),
            nnz=_nnz(pats), f_seconds=t_f, ratio_min=st.min / t_f, ratio_median=st.median / t_f,
            threads=torch.get_num_threads(), torch=torch.__version__,
            device_name=torch.cuda.get_device_name() if device == "cuda" else problems.cpu_name())
        benchmark.extra_info.update(peak_memory(problem, size, rep, device))


# -- the automatic bitmask threshold ------------------------------------------------------

def _mlp(x):
    """Two dense layers: every output depends on every input (a dense Jacobian)."""
    W1 = torch.linspace(-1, 1, 64 * x.numel(), dtype=x.dtype, device=x.device).reshape(64, -1)
    W2 = torch.linspace(-1, 1, 64 * 64, dtype=x.dtype, device=x.device).reshape(64, 64)
    return W2 @ torch.tanh(W1 @ x)


def _softmax(x):
    """Dense rows: a softmax over everything, times a shifted copy."""
    return torch.softmax(x, 0) * x.roll(1)


def _attention(x):
    """Self-attention over the rows of ``x`` (s, 8): dense intermediates ``(s, s)``."""
    return torch.softmax(x @ x.t(), -1) @ x


def _conv(x):
    k = torch.ones(1, 1, 3, 3, dtype=x.dtype, device=x.device)
    h = torch.tanh(torch.nn.functional.conv2d(x, k, padding=1))
    return torch.nn.functional.conv2d(h, k, padding=1)


def threshold_problems(n: int, device: str = "cpu"):
    """Problems with about ``n`` inputs, sparse and dense, for the bitmask threshold."""
    N = max(2, int(round((n // 2) ** 0.5)))
    s = max(2, int(round(n ** 0.5)))
    obs = max(40, int(n / 0.84))
    ba = problems.bundle_adjustment(max(obs // 100, 10), obs // 4, device=device)
    g = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64).to(device)  # noqa: E731
    return [("brusselator", problems.brusselator, [problems.brusselator_point(N, device=device)]),
            ("bundle adjustment", ba.residual, list(ba.args)),
            ("conv 3x3 twice", _conv, [rnd(1, 1, s, s)]),
            ("mlp (dense)", _mlp, [rnd(n)]),
            ("softmax (dense)", _softmax, [rnd(n)]),
            ("attention (dense)", _attention, [rnd(max(n // 8, 1), 8)])]


def threshold_table(sizes=(256, 512, 1024, 2048, 4096), rounds: int = 5, device: str = "cpu",
                    budget: float = 20.0) -> str:
    """Median detection time with sets, bits and auto, interleaved, per problem and size."""
    lines = ["| problem | inputs | sets | bits | bits / sets | auto |", "|---|---:|---:|---:|---:|---:|"]
    slow = set()
    for n in sizes:
        for name, f, args in threshold_problems(n, device):
            n_in = sum(a.numel() for a in args)
            times = {"sets": [], "bits": [], "auto": []}
            for rep in times:
                if (name, rep) not in slow:
                    detect(f, args, rep)
            for _ in range(rounds):
                for rep in times:
                    if (name, rep) in slow:
                        continue
                    _sync(device)
                    t = time.perf_counter()
                    detect(f, args, rep)
                    _sync(device)
                    times[rep].append(time.perf_counter() - t)
                    if times[rep][-1] > budget:
                        slow.add((name, rep))
            med = {k: sorted(v)[len(v) // 2] if v else None for k, v in times.items()}
            cell = lambda t: f"> {budget:.0f} s" if t is None else f"{t * 1000:.1f} ms"  # noqa: E731
            ratio = f"{med['bits'] / med['sets']:.2f}" if med["bits"] and med["sets"] else "-"
            lines.append(f"| {name} | {n_in:,} | {cell(med['sets'])} | {cell(med['bits'])} | {ratio} "
                         f"| {cell(med['auto'])} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--memory":
        print(json.dumps(measure_memory(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])))
    elif len(sys.argv) >= 2 and sys.argv[1] == "--threshold":
        print(threshold_table(device=sys.argv[2] if len(sys.argv) > 2 else "cpu"))
    else:
        print(__doc__)
