"""Symmetric coloring (Hessians): ``color_symmetric`` star and acyclic, and their decompression.

Patterns, built by hand (symmetric, with the diagonal):

- tridiagonal, n = 100,000 (the chained Rosenbrock Hessian);
- banded, half-bandwidth 5, n = 100,000;
- arrowhead (one dense row and column), n = 10,000;
- random sparse symmetric, about 6 off-diagonal nonzeros per row, n = 20,000.

``test_symmetric_coloring`` times the coloring, ``test_symmetric_decompression``
the precomputed decompression of ``C = (H S)^T`` (float64) into all nonzeros.
Recorded (``extra_info``): colors, the lower bound, and the distance-2 column
coloring's count on the same pattern (not timed; for the arrowhead it is n, every
two columns share the dense row, and computing it takes minutes).

Run::

    python -m pytest benches/bench_symmetric_coloring.py --benchmark-only \\
        --benchmark-json=benches/results/symmetric_coloring.json

``TRACKJAC_BENCH_QUICK=1`` divides the sizes by 10.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Tuple

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import problems  # noqa: E402

from trackjac.coloring import color_columns, color_symmetric, is_acyclic_coloring, is_star_coloring  # noqa: E402

QUICK = os.environ.get("TRACKJAC_BENCH_QUICK") == "1"
SCALE = 10 if QUICK else 1
FAMILIES = {"tridiagonal": 100_000 // SCALE, "banded5": 100_000 // SCALE, "arrowhead": 10_000 // SCALE,
            "random": 20_000 // SCALE}

Pattern = Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]


def _band(n: int, w: int) -> Pattern:
    i = torch.arange(n)
    rows, cols = [], []
    for d in range(-w, w + 1):
        keep = (i + d >= 0) & (i + d < n)
        rows.append(i[keep])
        cols.append(i[keep] + d)
    return torch.cat(rows), torch.cat(cols), (n, n)


@functools.lru_cache(maxsize=None)
def make(family: str) -> Pattern:
    n = FAMILIES[family]
    i = torch.arange(n)
    if family == "tridiagonal":
        return _band(n, 1)
    if family == "banded5":
        return _band(n, 5)
    if family == "arrowhead":
        z = torch.zeros(n - 1, dtype=torch.long)
        return torch.cat([i, z, i[1:]]), torch.cat([i, i[1:], z]), (n, n)
    g = torch.Generator().manual_seed(0)
    r, c = torch.randint(0, n, (3 * n,), generator=g), torch.randint(0, n, (3 * n,), generator=g)
    key = torch.unique(torch.cat([r * n + c, c * n + r, i * n + i]))
    return key // n, key % n, (n, n)


@functools.lru_cache(maxsize=None)
def column_colors(family: str) -> int:
    if family == "arrowhead":
        return FAMILIES[family]
    return color_columns(make(family)).num_colors


try:
    import pytest
except ImportError:  # script use only
    pytest = None

if pytest is not None:
    CASES = [(f, m) for f in FAMILIES for m in ("star", "acyclic")]

    @pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
    def test_symmetric_coloring(benchmark, case):
        family, method = case
        pattern = make(family)
        c = color_symmetric(pattern, method=method)  # warm-up, and the coloring for the record
        assert (is_star_coloring if method == "star" else is_acyclic_coloring)(pattern, c.colors)
        benchmark.pedantic(color_symmetric, args=(pattern,), kwargs={"method": method}, rounds=3,
                           iterations=1, warmup_rounds=0)
        n = pattern[2][0]
        benchmark.extra_info.update(
            suite="symmetric_coloring", problem=family, method=method, size=n, nnz=int(pattern[0].numel()),
            colors=c.num_colors, lower_bound=c.lower_bound, column_colors=column_colors(family),
            threads=torch.get_num_threads(), torch=torch.__version__, device="cpu",
            device_name=problems.cpu_name())

    @pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
    def test_symmetric_decompression(benchmark, case):
        family, method = case
        rows, cols, (n, _) = make(family)
        c = color_symmetric((rows, cols, (n, n)), method=method)
        d = c.decompression(rows, cols)
        g = torch.Generator().manual_seed(0)
        C = torch.randn(c.num_colors, n, generator=g, dtype=torch.float64)
        benchmark.pedantic(d, args=(C,), rounds=10, iterations=1, warmup_rounds=1)
        benchmark.extra_info.update(
            suite="symmetric_decompression", problem=family, method=method, size=n,
            nnz=int(rows.numel()), colors=c.num_colors, device="cpu")


if __name__ == "__main__":
    print(__doc__)
