"""Where the time of a compiled plan's first call goes, in a first process and in later ones.

For each case, fresh processes (one CPU thread, float64) share one new inductor cache
directory and run, in this order:

1. ``cold``: the first process, empty cache;
2. ``warm``: a later process, the cache warm;
3. ``warm, TORCHINDUCTOR_VEC_ISA_OK=1`` (after one untimed process with that setting, which
   changes inductor's cache key): inductor trusts the CPU flags instead of probing each
   vector ISA with a compile and a subprocess per process.

Each process times ``import trackjac``, ``jacobian_plan(f, x, compile=True)`` (detection,
coloring and the import of torch.compile's machinery) and the first ``plan(x)`` (dynamo and
AOTAutograd tracing, inductor or its cache), and reads inductor's cache counters and
dynamo's own phase times (``torch._dynamo.utils.compilation_time_metrics``)::

    python benches/bench_compile_cache.py [--cases brusselator:32768 kuramoto_sivashinsky:32768]
                                          [--doc docs/engine.md]

``--doc`` writes the table into that file's ``compile-cache`` block.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
DEFAULT = ["brusselator:32768", "kuramoto_sivashinsky:32768", "bundle_adjustment:4000"]
STATES = (("cold", {}), ("warm", {}), ("warm, TORCHINDUCTOR_VEC_ISA_OK=1", {"TORCHINDUCTOR_VEC_ISA_OK": "1"}))
PHASES = ("bytecode_tracing", "create_aot_dispatcher_function")
LABELS = {"brusselator": "2-D Brusselator", "kuramoto_sivashinsky": "1-D Kuramoto-Sivashinsky",
          "bundle_adjustment": "Bundle adjustment"}


def worker(case: str) -> None:
    """One process: time the stages and print one JSON line."""
    import warnings

    t0 = time.perf_counter()
    import torch
    t_torch = time.perf_counter()
    import trackjac
    t_import = time.perf_counter()
    sys.path.insert(0, str(HERE))
    from bench_peers import make_case  # the peer suite's problems at a PROBLEM:SIZE

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    name, size = case.split(":")
    c = make_case(name, int(size))
    f, args = c.f, c.args
    t = time.perf_counter()
    plan = trackjac.jacobian_plan(f, *args, compile=True)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    plan(*args)
    t_first = time.perf_counter() - t
    from torch._dynamo.utils import compilation_time_metrics, counters

    phase = {k: sum(v) for k, v in compilation_time_metrics.items()}  # dynamo_timed phases, seconds
    print(json.dumps(dict(
        torch_s=t_torch - t0, import_s=t_import - t_torch, build_s=t_build, first_s=t_first,
        compiled=plan._compiled is not None,
        fxgraph_hit=counters["inductor"].get("fxgraph_cache_hit", 0),
        fxgraph_miss=counters["inductor"].get("fxgraph_cache_miss", 0),
        aot_bypass=counters["aot_autograd"].get("autograd_cache_bypass", 0),
        aot_hit=counters["aot_autograd"].get("autograd_cache_hit", 0),
        phases={k: phase.get(k) for k in PHASES})), flush=True)


def run(case: str, cache: str, extra: Dict[str, str]) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1", **extra}
    out = subprocess.run([sys.executable, __file__, "--worker", case], env=env, capture_output=True, text=True,
                         check=False, cwd=tempfile.gettempdir())
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


def measure(case: str) -> List[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="trackjac-inductor-") as cache:
        for state, extra in STATES:
            if extra:
                run(case, cache, extra)  # the setting is part of inductor's key: warm its own entry
            rows.append({"case": case, "state": state, **run(case, cache, extra)})
    return rows


def _s(x) -> str:
    return "-" if x is None else (f"{x:.2f} s" if x >= 1 else f"{x * 1e3:.0f} ms")


def table(rows: List[dict]) -> str:
    out = ["| problem | n | process | `import trackjac` | `jacobian_plan(compile=True)` | first `plan(x)` | "
           "of which dynamo tracing | AOT + inductor | inductor FX cache | AOTAutograd cache |",
           "|---|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        name, size = r["case"].split(":")
        label = LABELS.get(name, name)
        size = f"{int(size):,}" + (" obs." if name == "bundle_adjustment" else "")
        if "error" in r:
            out.append(f"| {label} | {size} | {r['state']} | fails: {r['error']} | | | | | | |")
            continue
        if not r["compiled"]:
            out.append(f"| {label} | {size} | {r['state']} | fell back to eager | | | | | | |")
            continue
        ph = r["phases"]
        fx = "hit" if r["fxgraph_hit"] else ("miss" if r["fxgraph_miss"] else "-")
        aot = "hit" if r["aot_hit"] else ("bypass" if r["aot_bypass"] else "-")
        out.append(f"| {label} | {size} | {r['state']} | {_s(r['import_s'])} | {_s(r['build_s'])} | "
                   f"{_s(r['first_s'])} | {_s(ph.get('bytecode_tracing'))} | "
                   f"{_s(ph.get('create_aot_dispatcher_function'))} | {fx} | {aot} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=DEFAULT, metavar="PROBLEM:SIZE")
    ap.add_argument("--doc", help="write the table into this Markdown file's compile-cache block")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker)
        return
    import torch
    sys.path.insert(0, str(HERE))
    from problems import cpu_name
    from report import replace_block

    rows = [r for case in a.cases for r in measure(case)]
    head = (f"Measured by `benches/bench_compile_cache.py`: {cpu_name()}, torch {torch.__version__}, 1 thread, "
            f"float64, {datetime.date.today().isoformat()}; one process per row, in this order, sharing one "
            "new inductor cache directory.\n\n")
    print(head + table(rows))
    if a.doc:
        doc = Path(a.doc).read_text()
        Path(a.doc).write_text(replace_block(doc, "compile-cache", head + table(rows)))


if __name__ == "__main__":
    main()
