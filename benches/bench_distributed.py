"""Distributed plans on CPU with gloo: evaluation time with 1, 2 and 4 processes, and its split
into the local products and the communication (the nnz-value all-reduce and the status checks).

Jacobian problems: the Brusselator and a bundle adjustment. Hessian problems: a banded
quartic (``hessian-star`` and ``hessian-acyclic``: the same function with a star coloring,
which sums the nnz values, and an acyclic one, which sums the ``num_colors x n``
compressed products and substitutes on every rank).

Each configuration spawns its processes once (one intra-op thread each); every rank builds
the plan, makes two warm-up calls, then times ``--calls`` calls and records the phases of
``DistributedPlan.last_timings``; the table shows rank 0's medians. ``build`` is one rank's
detection + coloring, ``bcast`` what broadcasting the coloring from rank 0 instead would
cost (``broadcast_object_list``), to compare the two ways of giving every rank the plan.
More processes than cores oversubscribe the machine: the products then stop scaling.

    python benches/bench_distributed.py [--quick] [--procs 1 2 4] [--calls 10] [--problems ...]
                                        [--doc docs/scale_out.md]

``--doc`` writes the tables into that file's ``bench-distributed`` (Jacobian problems) and
``bench-distributed-hessian`` blocks (``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``).

or with pytest-benchmark, which times one whole spawned measurement per configuration (spawn
included) and stores the per-call medians in ``extra_info``:

    python -m pytest benches/bench_distributed.py --benchmark-only
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist

import trackjac

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from problems import brusselator, brusselator_point, bundle_adjustment  # noqa: E402

from report import replace_block  # noqa: E402

HESSIAN = {"hessian-star": "star", "hessian-acyclic": "acyclic"}
SIZES = {"full": {"brusselator": 64, "bundle": (50, 2000), "hessian-star": (20000, 4), "hessian-acyclic": (20000, 4)},
         "quick": {"brusselator": 24, "bundle": (10, 200), "hessian-star": (2000, 3), "hessian-acyclic": (2000, 3)}}
PHASES = ("check", "products", "status", "all_reduce", "assemble")


def banded_quartic(width: int):
    """``sum_k sum_i sin(x_i x_{i+k}) + sum x^4`` for ``k <= width``: a band of half-width ``width``."""
    def f(x: torch.Tensor) -> torch.Tensor:
        return sum(torch.sin(x[k:] * x[:-k]).sum() for k in range(1, width + 1)) + (x ** 4).sum()

    return f


def _problem(name: str, size):
    if name in HESSIAN:
        n, w = size
        x = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return banded_quartic(w), (x,), f"band n={n}, half-width {w}, {HESSIAN[name]}"
    if name == "brusselator":
        return brusselator, (brusselator_point(size),), f"N={size} (n={2 * size * size})"
    ba = bundle_adjustment(*size, obs_per_pt=4)
    return ba.residual, ba.args, f"{size[0]} cams, {size[1]} pts, {ba.cam_idx.numel()} obs"


def _plan(name: str, f, args, group=None):
    """The distributed plan (``group``: the default one) or, without, the single-process plan."""
    if name in HESSIAN:
        return trackjac.hessian_plan(f, *args, coloring=HESSIAN[name],
                                     process_group=dist.group.WORLD if group else None)
    if group:
        return trackjac.distributed_plan(f, *args, threads=0)
    return trackjac.jacobian_plan(f, *args, threads=0)


def _worker(rank: int, world: int, init_file: str, out: str, name: str, size, calls: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        f, args, label = _problem(name, size)
        t0 = time.perf_counter()
        plan = _plan(name, f, args, group=True)
        build = time.perf_counter() - t0
        obj = [plan.plan.coloring if rank == 0 else None]
        dist.barrier()
        t0 = time.perf_counter()
        dist.broadcast_object_list(obj, src=0)
        bcast = time.perf_counter() - t0
        for _ in range(2):
            plan(*args)
        rec: Dict[str, List[float]] = {p: [] for p in PHASES + ("total",)}
        for _ in range(calls):
            dist.barrier()   # every call starts together, as a solver's would
            t0 = time.perf_counter()
            plan(*args)
            rec["total"].append(time.perf_counter() - t0)
            for p in PHASES:
                rec[p].append(plan.last_timings[p])
        if rank == 0:
            single = _plan(name, f, args)
            for _ in range(2):
                single(*args)
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter()
                single(*args)
                ts.append(time.perf_counter() - t0)
            res = {p: statistics.median(v) for p, v in rec.items()}
            res.update(problem=name, label=label, procs=world, colors=plan.num_colors, nnz=plan.nnz,
                       local_colors=len(plan.local_colors), build=build, bcast=bcast,
                       reduced=plan.reduce_numel, reduce=getattr(plan, "reduce", "values"),
                       single_plan=statistics.median(ts))
            with open(out, "w") as fh:
                json.dump(res, fh)
    finally:
        dist.destroy_process_group()


def measure(name: str, size, procs: int, calls: int) -> dict:
    import torch.multiprocessing as mp  # only a measurement starts processes
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "res.json")
        mp.spawn(_worker, args=(procs, os.path.join(tmp, "init"), out, name, size, calls), nprocs=procs)
        with open(out) as fh:
            return json.load(fh)


def table(rows: List[dict]) -> str:
    hess = all(r["problem"] in HESSIAN for r in rows)
    head = ("| problem | procs | colors (local) | nnz | " + ("all-reduced | " if hess else "")
            + "single plan ms | call ms | products ms | all-reduce ms | status+check ms | comm share "
            "| build s | bcast ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        comm = r["all_reduce"] + r["status"] + r["check"]
        reduced = f"{r['reduced']} ({r['reduce']}) | " if hess else ""
        lines.append(
            f"| {r['label']} | {r['procs']} | {r['colors']} ({r['local_colors']}) | {r['nnz']} | {reduced}"
            f"{1e3 * r['single_plan']:.2f} | {1e3 * r['total']:.2f} | {1e3 * r['products']:.2f} "
            f"| {1e3 * r['all_reduce']:.2f} | {1e3 * (r['status'] + r['check']):.2f} "
            f"| {100 * comm / r['total']:.0f}% | {r['build']:.2f} | {1e3 * r['bcast']:.2f} |")
    return "\n".join(lines)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.parametrize("procs", [1, 2, 4])
@pytest.mark.parametrize("name", ["brusselator", "bundle", "hessian-star", "hessian-acyclic"])
def test_distributed_eval(benchmark, name, procs):
    size = SIZES["quick"][name]
    res = benchmark.pedantic(measure, args=(name, size, procs, 5), rounds=1, iterations=1)
    benchmark.extra_info.update(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--problems", nargs="+", default=["brusselator", "bundle", *HESSIAN], choices=list(SIZES["full"]))
    ap.add_argument("--doc", help="write the tables into this Markdown file's marked blocks")
    a = ap.parse_args()
    sizes = SIZES["quick" if a.quick else "full"]
    rows = [measure(n, sizes[n], p, a.calls) for n in a.problems for p in a.procs]
    head = (f"CPU, gloo, 1 intra-op thread per process, {os.cpu_count()} cores, medians of {a.calls} calls "
            f"(rank 0), load average {os.getloadavg()[0]:.1f} at the end\n")
    parts = {"bench-distributed": [r for r in rows if r["problem"] not in HESSIAN],
             "bench-distributed-hessian": [r for r in rows if r["problem"] in HESSIAN]}
    for block, rs in parts.items():
        if rs:
            print(head + table(rs))
    if a.doc:
        with open(a.doc) as fh:
            doc = fh.read()
        for block, rs in parts.items():
            if rs:
                doc = replace_block(doc, block, head + table(rs) + "\n")
        with open(a.doc, "w") as fh:
            fh.write(doc)


if __name__ == "__main__":
    main()
