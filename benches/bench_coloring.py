"""Coloring: ``trackjac.coloring`` on growing Jacobian patterns.

Problems (benches/problems.py), patterns built by hand so that detection is not timed:

- the rows of the 2-D Brusselator pattern (n = 2 N^2 rows, 6 nonzeros per row),
  ``color_rows``, n = 512 ... 524,288 (the pattern is symmetric, so columns would
  color the same graph);
- the columns of the bundle-adjustment pattern (cameras and points side by side,
  12 nonzeros per row), ``color_columns``, 1,000 ... 100,000 observations.

Both with the defaults of ``color_rows`` / ``color_columns`` (the ones
``jacobian_plan`` uses). Recorded per case (``extra_info`` of the pytest-benchmark
JSON): rows, columns and nonzeros of the pattern, the number of colors, its lower
bound (the largest clique the coloring can see) and the vertex order that won.

Run (not part of the default test run, ``testpaths = tests``)::

    python -m pytest benches/bench_coloring.py --benchmark-only --benchmark-json=benches/results/coloring.json
    python benches/report.py benches/results/*.json --update docs/performance.md --plots docs/img

``TRACKJAC_BENCH_QUICK=1`` keeps the small sizes only.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Tuple

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import problems  # noqa: E402

from trackjac.coloring import color_columns, color_rows, is_structurally_orthogonal  # noqa: E402

QUICK = os.environ.get("TRACKJAC_BENCH_QUICK") == "1"
BRUSSELATOR_N = (16, 32, 64) if QUICK else (16, 32, 64, 128, 256, 512)   # n = 2 N^2 rows
BA_OBSERVATIONS = (1_000, 10_000) if QUICK else (1_000, 10_000, 100_000)


def ba_pattern(observations: int) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
    """The bundle-adjustment Jacobian as one ``(rows, cols, (m, n))`` pattern: cameras, then points."""
    ba = problems.bundle_adjustment(max(observations // 100, 10), observations // 4)
    cams, pts = ba.pattern()
    ic, ip = cams.indices(), pts.indices()
    rows = torch.cat([ic[0], ip[0]])
    cols = torch.cat([ic[1], ip[1] + cams.shape[1]])
    return rows, cols, (cams.shape[0], cams.shape[1] + pts.shape[1])


def cases() -> List[tuple]:
    """``(problem, size, axis)``: size is n for the Brusselator, observations for BA."""
    return ([("brusselator", 2 * N * N, "rows") for N in BRUSSELATOR_N]
            + [("bundle_adjustment", obs, "columns") for obs in BA_OBSERVATIONS])


def make(problem: str, size: int):
    if problem == "brusselator":
        P = problems.brusselator_pattern(int(round((size // 2) ** 0.5)))
        idx = P.indices()
        return (idx[0], idx[1], tuple(P.shape))
    return ba_pattern(size)


try:
    import pytest
except ImportError:  # script use only
    pytest = None

if pytest is not None:
    @pytest.mark.parametrize("case", cases(), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
    def test_coloring(benchmark, case):
        problem, size, axis = case
        pattern = make(problem, size)
        color = color_rows if axis == "rows" else color_columns
        c = color(pattern)   # warm-up, and the coloring for the record
        assert is_structurally_orthogonal(pattern, c.colors, axis)
        m, n = pattern[2]
        rounds = 3 if max(m, n) > 100_000 else 5
        benchmark.pedantic(color, args=(pattern,), rounds=rounds, iterations=1, warmup_rounds=0)
        benchmark.extra_info.update(
            suite="coloring", problem=problem, size=size, axis=axis, rows=m, cols=n,
            nnz=int(pattern[0].numel()), colors=c.num_colors, lower_bound=c.lower_bound, order=c.order,
            threads=torch.get_num_threads(), torch=torch.__version__, device="cpu",
            device_name=problems.cpu_name())


if __name__ == "__main__":
    print(__doc__)
