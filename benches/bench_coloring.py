"""Coloring: ``trackjac.coloring`` on growing Jacobian patterns.

Problems (benches/problems.py), patterns built by hand so that detection is not timed:

- the rows of the 2-D Brusselator pattern (n = 2 N^2 rows, 6 nonzeros per row),
  ``color_rows``, n = 512 ... 524,288 (the pattern is symmetric, so columns would
  color the same graph);
- the columns of the bundle-adjustment pattern (cameras and points side by side,
  12 nonzeros per row), ``color_columns``, 1,000 ... 100,000 observations;
- bundle adjustment with 100,000 observations in three orders (sorted by point, the
  layout above; sorted by camera, as in BAL files; shuffled), rows and columns, each
  next to scipy's sequential greedy column grouping (``scipy.optimize._numdiff.group_columns``,
  method ``scipy``; skipped without scipy) on the same pattern;
- the rows of the arrowhead pattern (a dense row over a bidiagonal, 3 colors), ``color_rows``.

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


BA_ORDERED = 10_000 if QUICK else 100_000  # observations of the three-order cases
ARROWHEAD_N = 2_000 if QUICK else 20_000  # a dense row over a bidiagonal: 3 colors (100k takes seconds: stalls)


def cases() -> List[tuple]:
    """``(problem, size, axis)``: size is n for the Brusselator, observations for BA."""
    return ([("brusselator", 2 * N * N, "rows") for N in BRUSSELATOR_N]
            + [("bundle_adjustment", obs, "columns") for obs in BA_OBSERVATIONS]
            + [("arrowhead", ARROWHEAD_N, "rows")])


def ordered_cases() -> List[tuple]:
    """``(order, axis, method)``: BA in each observation order, trackjac and scipy."""
    return [(order, axis, method) for order in problems.BA_ORDERS for axis in ("columns", "rows")
            for method in ("trackjac", "scipy")]


def make(problem: str, size: int):
    if problem == "brusselator":
        P = problems.brusselator_pattern(int(round((size // 2) ** 0.5)))
        idx = P.indices()
        return (idx[0], idx[1], tuple(P.shape))
    if problem == "arrowhead":
        P = problems.arrowhead_pattern(size)
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


if pytest is not None:
    @pytest.mark.parametrize("case", ordered_cases(), ids=lambda c: f"bundle_adjustment-{c[0]}-{c[1]}-{c[2]}")
    def test_coloring_ba_orders(benchmark, case):
        order, axis, method = case
        rows, cols, (m, n) = pattern = problems.bundle_adjustment_coo(BA_ORDERED, order)
        benchmark.group = f"bundle adjustment {BA_ORDERED} observations, {order} order, {axis}"
        if method == "scipy":
            sparse = pytest.importorskip("scipy.sparse")
            numdiff = pytest.importorskip("scipy.optimize._numdiff")
            A = sparse.csr_matrix((torch.ones(rows.numel()).numpy(), (rows.numpy(), cols.numpy())), shape=(m, n))
            A = A if axis == "columns" else A.T.tocsr()
            run = lambda: numdiff.group_columns(A)  # noqa: E731
            k = int(run().max()) + 1
            lower = int(torch.bincount(rows if axis == "columns" else cols).max())
        else:
            color = color_rows if axis == "rows" else color_columns
            run = lambda: color(pattern)  # noqa: E731
            c = run()
            assert is_structurally_orthogonal(pattern, c.colors, axis)
            k, lower = c.num_colors, c.lower_bound
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
        benchmark.extra_info.update(
            suite="coloring", problem=f"bundle_adjustment_{order}", size=BA_ORDERED, axis=axis, method=method,
            rows=m, cols=n, nnz=int(rows.numel()), colors=k, lower_bound=lower,
            threads=torch.get_num_threads(), torch=torch.__version__, device="cpu",
            device_name=problems.cpu_name())


if __name__ == "__main__":
    print(__doc__)
