"""First call: ``import trackjac`` and a first ``jacobian_sparsity`` in a fresh process.

Each round starts a new Python process, so import and first-dispatch costs are all
paid again; the time of ``import torch`` alone is measured the same way and recorded
as its own case, so that the difference is trackjac's (target: <= 0.3 s beyond torch).

    python -m pytest benches/bench_first_call.py --benchmark-only --benchmark-json=benches/results/first_call.json
    python benches/bench_first_call.py   # one table
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict

import torch

from problems import cpu_name   # benches/ is on the path (pytest's pythonpath, or the script's own folder)

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = """
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import trackjac
t2 = time.perf_counter()
trackjac.jacobian_sparsity(lambda x: x[1:] - x[:-1], torch.randn(8))
t3 = time.perf_counter()
trackjac.jacobian(lambda x: x[1:] - x[:-1], torch.randn(8))
t4 = time.perf_counter()
import os
print(json.dumps(dict(torch=t1 - t0, trackjac_import=t2 - t1, first_sparsity=t3 - t2, beyond_torch=t3 - t1,
                      first_jacobian=t4 - t3, pyc=os.path.exists(trackjac.__cached__))))
"""

STAGES = ("torch", "trackjac_import", "first_sparsity", "beyond_torch", "first_jacobian")


def fresh() -> Dict[str, float]:
    """Seconds of each stage in a new interpreter."""
    # from a neutral directory: the checkout's root on sys.path changes what torch's first
    # subclass dispatch imports (measured: 0.8 s from /tmp, 0.01 s from the root, same code)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], check=True, capture_output=True, text=True,
                         cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


try:
    import pytest
except ImportError:  # script use only
    pytest = None

if pytest is not None:
    @pytest.mark.parametrize("stage", STAGES)
    def test_first_call(benchmark, stage):
        benchmark.group = "first call (fresh process)"
        times = []

        def run():
            times.append(fresh())
        benchmark.pedantic(run, rounds=3, iterations=1)
        # the process's wall time is not the stage's: record the stage's own best
        # pyc: trackjac's bytecode was cached (with PYTHONDONTWRITEBYTECODE=1 and no __pycache__,
        # every import compiles trackjac's sources again: about 0.1 s here)
        benchmark.extra_info.update(suite="first_call", stage=stage, seconds=min(t[stage] for t in times),
                                    all=[t[stage] for t in times], pyc=all(t["pyc"] for t in times),
                                    torch=torch.__version__, device="cpu", device_name=cpu_name())


if __name__ == "__main__":
    runs = [fresh() for _ in range(5)]
    for s in STAGES:
        print(f"{s:16s} best {min(r[s] for r in runs):.3f} s   median {sorted(r[s] for r in runs)[2]:.3f} s")
