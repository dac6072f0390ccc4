"""Warm compiled plans with and without trackjac's inductor options (``INDUCTOR_OPTIONS``).

Each state runs in its own process (inductor reads its options at compile time), one
thread, float64; prints one line per problem: mode, colors, best and median of 20 calls,
build + first call. ``docs/engine.md`` quotes a run of it::

    python benches/ab_inductor_options.py [ks32k,ks262k,bruss128,lap3d64,ba40k,ba100k]
"""
from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = "ks32k,ks262k,bruss128,lap3d64,ba40k,ba100k"


def worker(state: str, names: str) -> None:
    import torch
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    import problems
    import trackjac
    import trackjac.evaluate.products as products

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if state == "off":
        products.INDUCTOR_OPTIONS = {}
    cases = {
        "ks32k": lambda: (problems.kuramoto_sivashinsky, (problems.kuramoto_sivashinsky_point(32768),)),
        "ks262k": lambda: (problems.kuramoto_sivashinsky, (problems.kuramoto_sivashinsky_point(262144),)),
        "bruss128": lambda: (problems.brusselator, (problems.brusselator_point(128),)),
        "lap3d64": lambda: (problems.laplacian3d_cubic, (problems.laplacian3d_point(64),)),
        "ba40k": lambda: (lambda ba: (ba.residual, ba.args))(problems.bundle_adjustment(128, 10000)),
        "ba100k": lambda: (lambda ba: (ba.residual, ba.args))(problems.bundle_adjustment(1000, 25000)),
    }
    for name in names.split(","):
        f, args = cases[name]()
        t = time.perf_counter()
        plan = trackjac.jacobian_plan(f, *args, compile=True, threads=1)
        plan(*args)
        build = time.perf_counter() - t
        times = []
        for _ in range(20):
            t = time.perf_counter()
            plan(*args)
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"options {state:3s} {name:9s} {plan.mode} {plan.num_colors:2d} colors: best {times[0] * 1e3:.2f} ms, "
              f"median {times[10] * 1e3:.2f} ms, build + first call {build:.1f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        names = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
        for state in ("on", "off"):
            subprocess.run([sys.executable, __file__, "--worker", state, names], check=True)
