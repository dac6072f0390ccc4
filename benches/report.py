"""Turn the benchmarks' pytest-benchmark JSON into the docs' tables and plots.

The whole workflow, from the repository root (each suite takes a few minutes on
2 cores; the JSON files are committed under ``benches/results/``)::

    python -m pytest benches/bench_detection.py --benchmark-only --benchmark-json=benches/results/detection.json
    python -m pytest benches/bench_coloring.py --benchmark-only --benchmark-json=benches/results/coloring.json
    python -m pytest benches/bench_engine.py --benchmark-only --benchmark-json=benches/results/engine.json
    TRACKJAC_BENCH_COMPILE=1 OMP_NUM_THREADS=1 python -m pytest benches/bench_engine.py --benchmark-only \\
        -k warm --benchmark-json=benches/results/engine_compiled.json
    python -m pytest benches/bench_hessian.py --benchmark-only --benchmark-json=benches/results/hessian.json
    python benches/bench_peers.py --compile     # asdex vs trackjac: benches/results/peers.json (needs [peers])
    python benches/report.py benches/results/*.json --update docs/performance.md --readme README.md \\
        --plots docs/img

The fourth run times the warm plans, eager and compiled, with one thread: compiled
CPU kernels and torch's eager thread pool slow each other down on a busy machine
(docs/engine.md); the tables and plots label a series by its thread count where it
differs from the rest of its suite.

Without ``--update`` or ``--readme`` the tables are printed. With ``--update FILE``
the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in FILE is
replaced, for NAME in

- ``detection-results``: detection per problem, size and representation (one block
  per device), from ``bench_detection.py``;
- ``detection-asdex``: asdex next to trackjac, from ``peers.json`` (``bench_peers.py``: every
  problem, detection, colors, jit and warm-plan evaluation); without it, the Brusselator's
  detection next to the quoted ``ASDEX`` figures, labeled as quoted (``QUOTED``);
- ``coloring-results``: colors and time per pattern, from ``bench_coloring.py``;
- ``evaluation-results``: every method per problem and size, from ``bench_engine.py``;
- ``hessian-results``: sparse Hessians per problem (colors, lower bound, detection, coloring,
  warm plan, dense ``torch.func.hessian``), from ``bench_hessian.py``;
- ``symmetric-coloring-results``: star and acyclic colorings, from ``bench_symmetric_coloring.py``;
- ``first-call-results``: a fresh process's imports and first detection, from ``bench_first_call.py``;

a block whose suite is absent from the JSON files is left as it is, and a block whose
markers are missing is appended at the end of FILE. ``--threshold FILE2`` also puts the
table printed by ``python benches/bench_detection.py --threshold`` into the
``detection-threshold`` block.

``--readme FILE`` replaces the ``readme-summary`` block of FILE (the README's
Performance table; its markers must be there): one row per headline figure, from the
same records -- Brusselator detection at n = 32,768 (time and detection peak, vs
asdex) and 524,288 (vs the dense Jacobian's size), its row coloring at 524,288
(colors, lower bound), ``jacobian`` from scratch and the warm plan vs ``jacrev`` at
n = 4,608, the warm plan at 32,768 (eager and compiled, per thread count, vs asdex's jit
``jacobian``), and the largest bundle adjustment detected and evaluated (warm plan,
its colors and mode). ``SUMMARY_N`` holds the Brusselator sizes. The asdex figures come from
``peers.json`` where it has the case, else from the quoted ``ASDEX`` / ``ASDEX_JIT``. A row whose records
are not in the JSON files given is left out (pass all of them); without any, the
block is left as it is.

``--plots DIR`` writes ``detection.png`` (time vs size, log-log, per problem and
representation, with asdex and the plain ``f(x)`` as references), ``coloring.png``
(time and colors vs vertices colored) and ``evaluation.png`` (time vs size per method),
each only when its suite is present. Plots need matplotlib (``pip install
'trackjac[plot]'``); the tables do not.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

#: asdex detection on the same Brusselator, quoted from the project's reference notes (an earlier
#: measurement outside this repository): n -> seconds. Used only without ``peers.json``.
ASDEX = {2048: 0.08, 4608: 0.17, 8192: 0.34, 32768: 1.19}

#: what the docs say of asdex figures that come from ``ASDEX`` / ``ASDEX_JIT`` rather than peers.json
QUOTED = ("asdex figures quoted from the project's reference notes (an earlier measurement), "
          "not measured by this repository; `python benches/bench_peers.py` measures them")

PROBLEMS = {"brusselator": "2-D Brusselator", "bundle_adjustment": "Bundle adjustment",
            "bundle_adjustment_point": "Bundle adjustment, sorted by point",
            "bundle_adjustment_camera": "Bundle adjustment, sorted by camera (BAL order)",
            "bundle_adjustment_shuffled": "Bundle adjustment, shuffled",
            "brusselator_variable_part": "2-D Brusselator, constant entries reused or recomputed",
            "dense_mlp": "Dense layer, tanh(W @ x)"}

#: bench_peers.py's problems, in its table's order
PEER_PROBLEMS = {**PROBLEMS, "laplacian3d_cubic": "3-D Laplacian + cubic reaction",
                 "kuramoto_sivashinsky": "1-D Kuramoto-Sivashinsky"}

#: bench_engine.py's methods, in the tables' and legends' order, with their short labels
METHODS = {
    "trackjac.jacobian (from scratch)": "`jacobian` from scratch",
    "trackjac.jacobian_plan (build)": "`jacobian_plan` build",
    "trackjac plan(x) (warm, eager)": "warm `plan(x)`",
    "trackjac plan(x) (warm, compiled)": "warm `plan(x)` compiled",
    "one gradient (eager f(x) + torch.func.vjp)": "one gradient (`f` + `vjp`)",
    "trackjac plan(x) (warm, eager, constant_entries='recompute')": "warm `plan(x)`, `constant_entries='recompute'`",
    "trackjac plan(x) (warm, eager, constant_entries='reuse')": "warm `plan(x)`, `constant_entries='reuse'`",
    "torch.func.jacrev": "`jacrev`",
    "torch.func.jacfwd": "`jacfwd`",
    "autograd.functional.jacobian(vectorize=True)": "`functional.jacobian(vectorize=True)`",
    "autograd.functional.jacobian (loop)": "`functional.jacobian` loop",
}

Record = Tuple[dict, dict, str]  # (stats, extra_info, datetime of its run)


# -- reading -----------------------------------------------------------------------------

def load(paths: Iterable[str]) -> dict:
    """Several pytest-benchmark JSON files as one: their benchmarks, each with its run's date; a
    ``bench_peers.py`` file (``"suite": "peers"``) goes to ``"peers"``."""
    merged: dict = {"datetime": "", "benchmarks": []}
    for path in paths:
        with open(path) as fh:
            merged = merge(merged, json.load(fh))
    return merged


def merge(a: dict, b: dict) -> dict:
    def dated(data):
        return [dict(x, datetime=x.get("datetime", data.get("datetime", ""))) for x in data.get("benchmarks", [])]
    out = {"datetime": max(a.get("datetime", ""), b.get("datetime", "")), "benchmarks": dated(a) + dated(b)}
    runs = [p for d in (a, b) for p in ([d] if d.get("suite") == "peers" else [d["peers"]] if "peers" in d else [])]
    if runs:   # one peers run is shown: the latest
        out["peers"] = max(runs, key=lambda p: p.get("datetime", ""))
    return out


def suite_of(bench: dict) -> Optional[str]:
    e = bench.get("extra_info", {})
    if "suite" in e:
        return e["suite"]
    return "detection" if "representation" in e else None   # detection JSON from before "suite"


def records(data: dict, suite: str) -> List[Record]:
    return [(b["stats"], b["extra_info"], b.get("datetime", data.get("datetime", "")))
            for b in data["benchmarks"] if suite_of(b) == suite]


def _machine(recs: Sequence[Record]) -> str:
    """``device: name, torch version, date`` of a group of records (the latest date)."""
    e = recs[0][1]
    when = max(r[2] for r in recs)[:10]
    return f"{e.get('device', 'cpu')}: {e.get('device_name', '?')}, torch {e.get('torch', '?')}, {when}"


# -- formatting --------------------------------------------------------------------------

def _fmt_s(x: float) -> str:
    """Seconds with 3 significant digits (at least one decimal in ms): 0.92 ms, 1.21 ms, 28.8 ms, 288 ms, 2.47 s."""
    ms = x * 1000
    if ms >= 1000:
        return f"{x:.2f} s"
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def _mib(x) -> str:
    if x is None:
        return "-"
    return f"{x / 1024:.2f} GiB" if x >= 1024 else f"{x:.0f} MiB"


# -- tables ------------------------------------------------------------------------------

def detection_tables(data: dict) -> str:
    rows: Dict[tuple, List[Record]] = defaultdict(list)
    for rec in records(data, "detection"):
        e = rec[1]
        rows[(e["device"], e["problem"])].append(rec)
    out = []
    for (device, problem), items in sorted(rows.items()):
        items.sort(key=lambda r: (r[1]["size"], r[1]["representation"]))
        size_col = "n (unknowns)" if problem == "brusselator" else "observations"
        out.append(f"**{PROBLEMS.get(problem, problem)}**, {_machine(items)}\n")
        out.append(f"| {size_col} | inputs | representation | detection (best / median) | plain f(x) | "
                   f"detection / f(x) | pattern nnz | peak RSS | detection peak |")
        out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for st, e, _ in items:
            peak = e.get("cuda_peak_mib") if device == "cuda" else e.get("detection_peak_mib")
            out.append(
                f"| {e['size']:,} | {e['n_inputs']:,} | {e['representation']} | "
                f"{_fmt_s(st['min'])} / {_fmt_s(st['median'])} | {_fmt_s(e['f_seconds'])} | "
                f"{e['ratio_min']:,.0f}x | {e['nnz']:,} | {_mib(e.get('peak_rss_mib'))} | {_mib(peak)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _best_brusselator(data: dict) -> Dict[int, float]:
    """Best detection time on the CPU per Brusselator size, over the representations."""
    best: Dict[int, float] = {}
    for st, e, _ in records(data, "detection"):
        if e.get("problem") == "brusselator" and e.get("device") == "cpu":
            best[e["size"]] = min(best.get(e["size"], float("inf")), st["min"])
    return best


def asdex_table(data: dict) -> str:
    """asdex next to trackjac: from peers.json where given (:func:`peers_table`), else the quoted ``ASDEX``."""
    if "peers" in data:
        return peers_table(data["peers"])
    best = _best_brusselator(data)
    rows = ["| n | asdex | trackjac (best representation) | speed-up |", "|---:|---:|---:|---:|"]
    for n, t in sorted(ASDEX.items()):
        if n in best:
            rows.append(f"| {n:,} | {_fmt_s(t)} | {_fmt_s(best[n])} | {t / best[n]:.0f}x |")
    return f"{QUOTED}; trackjac's from `detection.json`.\n\n" + "\n".join(rows) + "\n"


#: the labels of bench_peers.py's evaluations in the failures under the peers table
PEER_FAILURES = {"eval_jit_s": "asdex jit `jacobian`", "compressed_jit_s": "asdex jit compressed"}


def _peer_time(res: dict, key: str, stat: str = "median") -> str:
    t = res.get(key)
    if t:
        return _fmt_s(t[stat])
    return "fails (below)" if key in res.get("errors", {}) else "-"


def _peer_colors(res: dict) -> str:
    return f"{res['colors']} ({res['mode']})" if "colors" in res else "-"


def _reused(res: dict) -> str:
    """The compiled plan with ``constant_entries="reuse"``: its time and colors, or why not."""
    if "plan_compiled_reuse_s" not in res:
        return "-"
    if res.get("reuse_entries") != "reuse":
        return "(fell back: cancellation)"
    return f"{_peer_time(res, 'plan_compiled_reuse_s')} ({res['reuse_colors']})"


def peers_table(peers: dict) -> str:
    """The cases of a ``bench_peers.py`` run: asdex and trackjac side by side, medians."""
    m = peers.get("machine", {})
    versions = ", ".join(f"{k} {m[k]}" for k in ("asdex", "jax", "torch") if k in m)
    out = [f"Measured by `benches/bench_peers.py` (`benches/results/peers.json`), both libraries of a case in "
           f"the same run, each in its own process: {m.get('cpu', '?')}, {versions}, {m.get('threads', '?')} "
           f"thread, float64, {peers.get('datetime', '')[:10]}; medians.\n",
           "| problem | n | nnz | asdex detection | trackjac detection | speed-up | asdex colors | trackjac colors "
           "| asdex jit `jacobian` | asdex jit compressed | trackjac warm `plan(x)` | trackjac compiled `plan(x)` "
           "| trackjac compiled, constants reused (colors) |",
           "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    order = list(PEER_PROBLEMS)
    for case in sorted(peers["cases"], key=lambda c: (order.index(c["problem"]) if c["problem"] in order
                                                      else len(order), c["size"])):
        a, t = case.get("asdex", {}), case.get("trackjac", {})
        speed = "-"
        if "detection_s" in a and "detection_s" in t:
            ratio = a["detection_s"]["median"] / t["detection_s"]["median"]
            speed = f"{ratio:.1f}x" if ratio < 9.95 else f"{ratio:.0f}x"
        size = f"{case['size']:,} obs." if case["problem"] == "bundle_adjustment" else f"{case['size']:,}"
        asdex_det = a["error"] if "error" in a else _peer_time(a, "detection_s")
        track_det = t["error"] if "error" in t else _peer_time(t, "detection_s")
        out.append(f"| {PEER_PROBLEMS.get(case['problem'], case['problem'])} | {size} | {case.get('nnz', 0):,} | "
                   f"{asdex_det} | {track_det} | {speed} | {_peer_colors(a)} | {_peer_colors(t)} | "
                   f"{_peer_time(a, 'eval_jit_s')} | {_peer_time(a, 'compressed_jit_s')} | "
                   f"{_peer_time(t, 'plan_eager_s')} | {_peer_time(t, 'plan_compiled_s')} | {_reused(t)} |")
    failures = []
    for c in peers["cases"]:
        for tool in ("asdex", "trackjac"):
            for key, msg in c.get(tool, {}).get("errors", {}).items():
                label = PEER_FAILURES.get(key, f"{tool} {key}")
                size = f"{c['size']:,} obs." if c["problem"] == "bundle_adjustment" else f"n = {c['size']:,}"
                first = msg.split(". ")[0].rstrip(".")   # the first sentence says what failed
                failures.append(f"- {label}, {PEER_PROBLEMS.get(c['problem'], c['problem'])} {size}: `{first}`")
    if failures:
        out += ["", "Failures (the other figures of those cases stand):", "", *failures]
    compiles = [c for c in peers["cases"] if "compiled_first_s" in c.get("trackjac", {})]
    if compiles:
        cold = m.get("cold_inductor_cache")
        out += ["", "First call (tracing and compilation included), seconds; trackjac's with "
                + ("an empty inductor cache (`--cold-cache`: a first process)" if cold else
                   "whatever inductor cache the machine had (hits counted in the JSON)")
                + "; the plan with constants reused compiles second in the same process, so torch.compile's "
                "one-time start-up (imports, the C++ toolchain's first build) is paid by the first column:", "",
                "| problem | n | asdex jit `jacobian` | asdex jit compressed | trackjac compiled `plan(x)` "
                "| trackjac compiled, constants reused |", "|---|---:|---:|---:|---:|---:|"]
        for c in sorted(compiles, key=lambda c: (order.index(c["problem"]) if c["problem"] in order
                                                 else len(order), c["size"])):
            a, t = c.get("asdex", {}), c["trackjac"]
            size = f"{c['size']:,} obs." if c["problem"] == "bundle_adjustment" else f"{c['size']:,}"
            cells = [_fmt_s(r[k]) if k in r else "-" for r, k in
                     ((a, "eval_jit_first_s"), (a, "compressed_jit_first_s"), (t, "compiled_first_s"),
                      (t, "compiled_reuse_first_s"))]
            out.append(f"| {PEER_PROBLEMS.get(c['problem'], c['problem'])} | {size} | " + " | ".join(cells) + " |")
    if "suite_wall_s" in peers:
        out.append(f"\nSuite runtime: {peers['suite_wall_s'] / 60:.0f} min (process starts and JIT compilation "
                   f"included).")
    return "\n".join(out) + "\n"


def _peer(data: dict, problem: str, size: int, tool: str) -> dict:
    """One library's figures of one case of peers.json; ``{}`` when absent or failed."""
    for case in data.get("peers", {}).get("cases", []):
        if case["problem"] == problem and case["size"] == size:
            res = case.get(tool, {})
            return {} if "error" in res else res
    return {}


def _vertices(e: dict) -> int:
    """The vertices a coloring colors: rows or columns of the pattern."""
    return e["rows"] if e["axis"] == "rows" else e["cols"]


def coloring_table(data: dict) -> str:
    recs = sorted(records(data, "coloring"), key=lambda r: (r[1]["problem"], r[1]["axis"], _vertices(r[1])))
    if not recs:
        return ""
    out = [f"{_machine(recs)}\n",
           "| pattern | colored | by | rows x columns | nonzeros | colors | lower bound | time (best / median) |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
    for st, e, _ in recs:   # "by": trackjac, or a baseline (scipy's group_columns)
        out.append(f"| {PROBLEMS.get(e['problem'], e['problem'])} | {e['axis']} | {e.get('method', 'trackjac')} | "
                   f"{e['rows']:,} x {e['cols']:,} | {e['nnz']:,} | {e['colors']} | {e['lower_bound']} | "
                   f"{_fmt_s(st['min'])} / {_fmt_s(st['median'])} |")
    return "\n".join(out) + "\n"


#: bench_hessian.py's stages, in the table's column order
HESSIAN_STAGES = ("detect", "color", "plan call", "torch.func.hessian")


def hessian_table(data: dict) -> str:
    """One row per Hessian problem: colors next to the lower bound, then each stage's median."""
    recs = records(data, "hessian")
    if not recs:
        return ""
    by: Dict[str, Dict[str, Record]] = defaultdict(dict)
    for r in recs:
        by[r[1]["problem"]][r[1]["method"]] = r
    cpu = recs[0][1].get("cpu", "?")
    out = [f"cpu: {cpu}, {max(r[2] for r in recs)[:10]} (median of the rounds)\n",
           "| problem | n | nonzeros | colors (longest row) | detect | color | warm `plan(x)` | "
           "`torch.func.hessian` |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, stages in by.items():
        e = next(iter(stages.values()))[1]
        cells = [_fmt_s(stages[s][0]["median"]) if s in stages else "-" for s in HESSIAN_STAGES]
        out.append(f"| {name} | {e['n']:,} | {e['nnz']:,} | {e['colors']} ({e['lower_bound']}) | "
                   + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


#: bench_symmetric_coloring.py's pattern families, as the table names them
SYMMETRIC = {"tridiagonal": "tridiagonal", "banded5": "banded, half-width 5", "arrowhead": "arrowhead",
             "random": "random, ~6 per row"}


def symmetric_table(data: dict) -> str:
    """Star and acyclic colors per pattern next to column coloring's, with coloring and decompression medians."""
    col = {(e["problem"], e["method"]): (st, e) for st, e, _ in records(data, "symmetric_coloring")}
    if not col:
        return ""
    dec = {(e["problem"], e["method"]): st for st, e, _ in records(data, "symmetric_decompression")}
    recs = records(data, "symmetric_coloring")
    out = [f"{_machine(recs)} (median of the rounds)\n",
           "| pattern | n | nonzeros | star colors | acyclic colors | column colors | lower bound | "
           "star: color / decompress | acyclic: color / decompress |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fam in sorted({p for p, _ in col}, key=lambda p: list(SYMMETRIC).index(p) if p in SYMMETRIC else 99):
        cells, e = [], None
        for m in ("star", "acyclic"):
            if (fam, m) in col:
                st, e = col[(fam, m)]
                d = dec.get((fam, m))
                cells.append((str(e["colors"]), f"{_fmt_s(st['median'])} / {_fmt_s(d['median']) if d else '-'}"))
            else:
                cells.append(("-", "-"))
        out.append(f"| {SYMMETRIC.get(fam, fam)} | {e['size']:,} | {e['nnz']:,} | {cells[0][0]} | {cells[1][0]} | "
                   f"{e['column_colors']:,} | {e['lower_bound']} | {cells[0][1]} | {cells[1][1]} |")
    return "\n".join(out) + "\n"


def series(recs: Sequence[Record]) -> Dict[Tuple[str, int], str]:
    """Label of each (method, threads) of the evaluation records, in ``METHODS`` order.

    The thread count is named only where it differs from the most common one."""
    common = Counter(e.get("threads") for _, e, _ in recs).most_common(1)[0][0] if recs else None
    keys = {(e["method"], e.get("threads")) for _, e, _ in recs}
    order = list(METHODS)

    def rank(k):
        return (order.index(k[0]) if k[0] in order else len(order), k[0], k[1] != common, k[1] or 0)

    out = {}
    for method, threads in sorted(keys, key=rank):
        label = METHODS.get(method, method)
        if threads != common:
            label += f" ({threads} thread{'s' if threads != 1 else ''})"
        out[(method, threads)] = label
    return out


def _size_label(e: dict) -> str:
    if e["problem"].startswith("brusselator"):
        return f"{e['size']:,} (N = {e['N']})" if "N" in e else f"{e['size']:,}"
    return f"{e['size']:,} ({e['rows']:,} x {e['cols']:,})"


def evaluation_tables(data: dict) -> str:
    recs = records(data, "evaluation")
    if not recs:
        return ""
    by_problem: Dict[str, List[Record]] = defaultdict(list)
    for rec in recs:
        by_problem[rec[1]["problem"]].append(rec)
    out = []
    for problem, items in sorted(by_problem.items()):
        labels = series(items)
        cells: Dict[int, Dict[str, str]] = defaultdict(dict)
        size_of, colors, ratios = {}, {}, {}
        for st, e, _ in items:
            label = labels[(e["method"], e.get("threads"))]
            cells[e["size"]][label] = _fmt_s(st["min"])
            if e.get("reference_min"):   # a warm plan timed interleaved with one gradient
                ratio = f"{label} / one gradient (interleaved)"
                ratios[ratio] = None
                cells[e["size"]][ratio] = f"{st['min'] / e['reference_min']:.2f}x"
            size_of[e["size"]] = _size_label(e)
            if "colors" in e:
                colors[e["size"]] = f"{e['colors']} ({e.get('mode', '?')})"
        size_col = ("n (N)" if problem.startswith("brusselator") else "n (rows x columns)" if problem == "dense_mlp"
                    else "observations (residuals x parameters)")
        cols = list(dict.fromkeys(labels.values())) + list(ratios)
        out.append(f"**{PROBLEMS.get(problem, problem)}**, {_machine(items)}; best of the rounds\n")
        out.append("| " + " | ".join([size_col, *cols] + (["plan colors (mode)"] if colors else [])) + " |")
        out.append("|---|" + "---:|" * (len(cols) + bool(colors)))
        for size in sorted(cells):
            row = [size_of[size]] + [cells[size].get(c, "-") for c in cols]
            if colors:
                row.append(colors.get(size, "-"))
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# -- the README's summary ------------------------------------------------------------------

#: asdex's jit-compiled compressed evaluation on the same Brusselator, quoted like ``ASDEX`` (not
#: measured by this repository): n -> seconds. Used only without ``peers.json``.
ASDEX_JIT = {32768: 0.42e-3}

#: the Brusselator sizes of the README's rows: detection, large detection and coloring, evaluation
SUMMARY_N = dict(detection=32768, large=524288, evaluation=4608, warm=32768)

MODES = {"fwd": "forward", "rev": "reverse"}

#: the warm plans of bench_engine.py, in the order of the README's cell
WARM = {"trackjac plan(x) (warm, eager)": "eager", "trackjac plan(x) (warm, compiled)": "`compile=True`"}


def _bytes(x: float) -> str:
    """A size in bytes, decimal units, 2 significant digits: 8.6 GB, 20 GB, 2.2 TB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if x < 999.5 or unit == "PB":
            break
        x /= 1000
    return f"{x:.0f} {unit}" if x >= 99.5 else f"{float(f'{x:.2g}'):g} {unit}"


def _dense(rows: int, cols: int) -> str:
    return _bytes(8 * rows * cols)   # float64


def _cpu(recs: Sequence[Record]) -> List[Record]:
    return [r for r in recs if r[1].get("device", "cpu") == "cpu"]


def _fastest(recs: Sequence[Record], **match) -> Optional[Record]:
    """The record with the best time among those whose extra_info has ``match``; None if none."""
    hits = [r for r in recs if all(r[1].get(k) == v for k, v in match.items())]
    return min(hits, key=lambda r: r[0]["min"]) if hits else None


def _threads(n) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def summary_rows(data: dict) -> List[Tuple[str, str, str, str]]:
    """The README's rows (problem, step, trackjac, for comparison), each only where its records are."""
    det = _cpu(records(data, "detection"))
    col = _cpu(records(data, "coloring"))
    ev = _cpu(records(data, "evaluation"))
    common = Counter(e.get("threads") for _, e, _ in ev).most_common(1)[0][0] if ev else None
    B = "brusselator"
    rows = []

    def brus(n):
        return f"Brusselator, n = {n:,}"

    def detection(rec):
        st, e, _ = rec
        return f"{_fmt_s(st['min'])}, {_mib(e.get('detection_peak_mib'))}"

    n = SUMMARY_N["detection"]
    rec = _fastest(det, problem=B, size=n)
    if rec:
        peer = _peer(data, B, n, "asdex").get("detection_s")
        asdex = (f"asdex (JAX) {_fmt_s(peer['min'])}" if peer
                 else f"asdex (JAX) {_fmt_s(ASDEX[n])}" if n in ASDEX else "")
        rows.append((brus(n), "detection", detection(rec), asdex))
    n = SUMMARY_N["large"]
    rec = _fastest(det, problem=B, size=n)
    if rec:
        e = rec[1]
        rows.append((brus(n), "detection", detection(rec),
                     f"dense Jacobian: {_dense(e.get('n_outputs', n), e.get('n_inputs', n))}"))
    rec = _fastest(col, problem=B, size=n, axis="rows")
    if rec:
        st, e, _ = rec
        bound = f"; lower bound {e['lower_bound']}" if "lower_bound" in e else ""
        at = next((k for k in (n, SUMMARY_N["detection"]) if "colors" in _peer(data, B, k, "asdex")), None)
        if at is None:
            asdex = "asdex 10-12 colors"
        else:
            peer = _peer(data, B, at, "asdex")
            asdex = (f"asdex {peer['colors']} colors ({MODES.get(peer['mode'], peer['mode'])}"
                     + (f", at n = {at:,})" if at != n else ")"))
        rows.append((brus(n), "row coloring", f"{_fmt_s(st['min'])}, {e['colors']} colors", f"{asdex}{bound}"))

    n = SUMMARY_N["evaluation"]
    jacrev = _fastest(ev, problem=B, size=n, method="torch.func.jacrev", threads=common)
    for method, step, ref in (("trackjac.jacobian (from scratch)", "`jacobian` from scratch", "`torch.func.jacrev`"),
                              ("trackjac plan(x) (warm, eager)", "warm `plan(x)`", "`jacrev`")):
        rec = _fastest(ev, problem=B, size=n, method=method, threads=common)
        if rec and jacrev:
            rows.append((brus(n), step, _fmt_s(rec[0]["min"]), f"{ref} {_fmt_s(jacrev[0]['min'])}"))

    n = SUMMARY_N["warm"]
    best: Dict[tuple, float] = {}   # (threads, label) -> time
    for st, e, _ in ev:
        if e["problem"] == B and e["size"] == n and e["method"] in WARM:
            key = (e.get("threads"), WARM[e["method"]])
            best[key] = min(best.get(key, float("inf")), st["min"])
    if (common, "eager") in best:
        def cells(t):
            return ", ".join(f"{_fmt_s(best[t, label])} {label}" for label in WARM.values() if (t, label) in best)
        others = sorted({t for t, _ in best} - {common}, key=lambda t: (t is None, t or 0))
        e = _fastest(ev, problem=B, size=n)[1]
        peer = _peer(data, B, n, "asdex").get("eval_jit_s")
        asdex = (f"asdex (jit) {_fmt_s(peer['min'])}; " if peer
                 else f"asdex (jit) {_fmt_s(ASDEX_JIT[n])}; " if n in ASDEX_JIT else "")
        timings = "; ".join([cells(common)] + [f"{_threads(t)}: {cells(t)}" for t in others])
        rows.append((brus(n), "warm `plan(x)`", timings, f"{asdex}dense {_dense(e.get('rows', n), e.get('cols', n))}"))

    ba = [r for r in det if r[1]["problem"] == "bundle_adjustment"]
    if ba:
        size = max(e["size"] for _, e, _ in ba)
        rows.append((f"bundle adjustment, {size:,} observations", "detection",
                     detection(_fastest(ba, size=size)), ""))
    ba = [r for r in ev if r[1]["problem"] == "bundle_adjustment"]
    size = max((e["size"] for _, e, _ in ba), default=None)
    warm = _fastest(ba, size=size, method="trackjac plan(x) (warm, eager)", threads=common)
    if warm:
        st, e, _ = warm
        plan = next((e2 for _, e2, _ in ba if e2["size"] == size and "colors" in e2), None)
        how = ""
        if plan:
            mode = plan.get("mode")
            how = f" ({plan['colors']} colors" + (f", {MODES.get(mode, mode)}" if mode else "") + ")"
        rows.append((f"bundle adjustment, {size:,} observations ({e['rows']:,} x {e['cols']:,})",
                     "warm `plan(x)`", _fmt_s(st["min"]) + how, f"dense Jacobian: {_dense(e['rows'], e['cols'])}"))
    return rows


def summary_table(data: dict) -> str:
    """The README's table of headline figures (``readme-summary``); empty without any of its records."""
    rows = summary_rows(data)
    if not rows:
        return ""
    out = ["| problem | step | trackjac | for comparison |", "|---|---|---|---|"]
    out += ["|" + "|".join(f" {cell} " if cell else " " for cell in row) + "|" for row in rows]
    return "\n".join(out) + "\n"


def blocks(data: dict) -> Dict[str, str]:
    """The marked blocks of the docs that ``data`` has results for: name -> markdown."""
    out = {}
    if records(data, "detection"):
        out["detection-results"] = detection_tables(data)
    if records(data, "detection") or "peers" in data:
        out["detection-asdex"] = asdex_table(data)
    if records(data, "coloring"):
        out["coloring-results"] = coloring_table(data)
    if records(data, "evaluation"):
        out["evaluation-results"] = evaluation_tables(data)
    if records(data, "hessian"):
        out["hessian-results"] = hessian_table(data)
    if records(data, "symmetric_coloring"):
        out["symmetric-coloring-results"] = symmetric_table(data)
    if records(data, "first_call"):
        out["first-call-results"] = first_call_table(data)
    return out


#: bench_first_call.py's stages, in order
FIRST_CALL = {"torch": "`import torch`", "trackjac_import": "`import trackjac` (after torch)",
              "first_sparsity": "first `jacobian_sparsity`", "beyond_torch": "trackjac in all (import + first call)",
              "first_jacobian": "then a first `jacobian` (torch imports `torch._dynamo`)"}


def first_call_table(data: dict) -> str:
    """Each stage of a fresh process, best and median of the rounds (one process each)."""
    recs = records(data, "first_call")
    by = {e["stage"]: e for _, e, _ in recs}
    pyc = all(e.get("pyc", True) for e in by.values())
    out = [f"{_machine(recs)}; fresh processes, {'bytecode cached' if pyc else 'no bytecode cache'}\n",
           "| stage | best | median |", "|---|---:|---:|"]
    for stage, label in FIRST_CALL.items():
        if stage in by:
            vals = sorted(by[stage]["all"])
            out.append(f"| {label} | {_fmt_s(vals[0])} | {_fmt_s(vals[len(vals) // 2])} |")
    return "\n".join(out) + "\n"


def replace_block(doc: str, name: str, text: str) -> str:
    """``doc`` with the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text}{end}"
    if start in doc and end in doc:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda m: block, doc, flags=re.S)
    return doc.rstrip() + "\n\n" + block + "\n"


def update(doc: str, data: dict, threshold: Optional[str] = None) -> str:
    for name, text in blocks(data).items():
        doc = replace_block(doc, name, text)
    if threshold is not None:
        doc = replace_block(doc, "detection-threshold", threshold.strip() + "\n")
    return doc


def readme_blocks(data: dict) -> Dict[str, str]:
    """The README's marked blocks that ``data`` has results for: ``readme-summary``."""
    table = summary_table(data)
    return {"readme-summary": table} if table else {}


def update_readme(doc: str, data: dict) -> str:
    """``doc`` (the README) with its ``readme-summary`` block regenerated; its markers must be there."""
    for name, text in readme_blocks(data).items():
        if f"<!-- {name}:start -->" not in doc or f"<!-- {name}:end -->" not in doc:
            raise ValueError(f"no <!-- {name}:start --> / <!-- {name}:end --> markers to put the table between")
        doc = replace_block(doc, name, text)
    return doc


# -- plots -------------------------------------------------------------------------------

def _figure(ncols: int, height: float = 4.2):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend switch)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("the plots need matplotlib: pip install matplotlib (or 'trackjac[plot]'); "
                          "the tables do not") from exc
    fig = Figure(figsize=(5.2 * ncols, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig, path: Path, recs: Sequence[Record]) -> None:
    fig.suptitle(f"{_machine(recs)}; best of the rounds", fontsize=9)
    fig.savefig(path, metadata={"Software": None})


def _labels(ax) -> List[str]:
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def _finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> List[str]:
    """Titles, grid, no labels on minor ticks (they overlap), the legend; returns its labels."""
    from matplotlib.ticker import NullFormatter
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.xaxis.set_minor_formatter(NullFormatter())
    if legend and _labels(ax):
        ax.legend(fontsize=8)
    return _labels(ax)


def plot_detection(data: dict, path: Path) -> List[str]:
    """Detection time vs size, log-log, per problem, representation and device. Returns the legend."""
    recs = records(data, "detection")
    fig, axes = _figure(2)
    legend = []
    for ax, problem in zip(axes, PROBLEMS):
        mine = [r for r in recs if r[1]["problem"] == problem]
        curves: Dict[tuple, List[Tuple[int, float]]] = defaultdict(list)
        plain: Dict[int, float] = {}
        for st, e, _ in mine:
            curves[(e["representation"], e["device"])].append((e["size"], st["min"]))
            plain[e["size"]] = min(plain.get(e["size"], float("inf")), e["f_seconds"])
        for (rep, device), pts in sorted(curves.items()):
            xs, ys = zip(*sorted(pts))
            ax.loglog(xs, ys, "o-", label=f"trackjac, {rep}" + (f" ({device})" if device != "cpu" else ""))
        if plain:
            xs, ys = zip(*sorted(plain.items()))
            ax.loglog(xs, ys, ":", color="grey", label="plain f(x)")
        peer = sorted((c["size"], c["asdex"]["detection_s"]["min"]) for c in data.get("peers", {}).get("cases", [])
                      if c["problem"] == problem and "detection_s" in c.get("asdex", {}))
        if peer:
            xs, ys = zip(*peer)
            ax.loglog(xs, ys, "x--", color="black", label="asdex (JAX), bench_peers")
        elif problem == "brusselator" and mine:
            xs, ys = zip(*sorted(ASDEX.items()))
            ax.loglog(xs, ys, "x--", color="black", label="asdex (JAX), reference")
        legend += _finish(ax, PROBLEMS[problem], "n (unknowns)" if problem == "brusselator" else "observations",
                          "detection time (s)")
    _save(fig, path, recs)
    return legend


def plot_coloring(data: dict, path: Path) -> List[str]:
    """Coloring time (log-log) and colors vs vertices colored, per pattern. Returns the legend."""
    recs = records(data, "coloring")
    fig, (ax_t, ax_c) = _figure(2)
    groups: Dict[tuple, List[Record]] = defaultdict(list)
    for rec in recs:
        groups[(rec[1]["problem"], rec[1]["axis"])].append(rec)
    for k, ((problem, axis), items) in enumerate(sorted(groups.items())):
        items.sort(key=lambda r: _vertices(r[1]))
        xs = [_vertices(e) for _, e, _ in items]
        label = f"{PROBLEMS.get(problem, problem)}, {axis}"
        color = f"C{k}"
        ax_t.loglog(xs, [st["min"] for st, _, _ in items], "o-", color=color, label=label)
        ax_c.semilogx(xs, [e["colors"] for _, e, _ in items], "o-", color=color, label=f"{label}: colors")
        ax_c.semilogx(xs, [e["lower_bound"] for _, e, _ in items], "--", color=color,
                      label=f"{label}: lower bound")
    ax_c.set_ylim(bottom=0)
    legend = _finish(ax_t, "Time", "vertices colored (rows or columns)", "coloring time (s)")
    legend += _finish(ax_c, "Colors", "vertices colored (rows or columns)", "colors")
    _save(fig, path, recs)
    return legend


def plot_evaluation(data: dict, path: Path) -> List[str]:
    """Time vs size per method, log-log, for each problem. Returns the legend."""
    recs = records(data, "evaluation")
    labels = series(recs)   # one color per series across both panels
    color = {label: f"C{k % 10}" for k, label in enumerate(dict.fromkeys(labels.values()))}
    fig, axes = _figure(2, height=5.2)
    legend = []
    for ax, problem in zip(axes, PROBLEMS):
        curves: Dict[str, List[Tuple[int, float]]] = defaultdict(list)
        for st, e, _ in recs:
            if e["problem"] == problem:
                curves[labels[(e["method"], e.get("threads"))]].append((e["size"], st["min"]))
        for label in color:
            if curves[label]:
                xs, ys = zip(*sorted(curves[label]))
                style = "o-" if label.startswith(("`jacobian", "warm")) else "s--"
                ax.loglog(xs, ys, style, color=color[label], label=label.replace("`", ""))
        legend += _finish(ax, PROBLEMS[problem], "n (unknowns)" if problem == "brusselator" else "observations",
                          "time (s)", legend=False)
    handles = {line.get_label(): line for ax in axes for line in ax.get_lines()}   # one legend for both panels
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=3, fontsize=8)
    _save(fig, path, recs)
    return legend


PLOTS = {"detection": plot_detection, "coloring": plot_coloring, "evaluation": plot_evaluation}


def plots(data: dict, outdir) -> List[Path]:
    """Write ``<suite>.png`` into ``outdir`` for each suite present in ``data``; the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for suite, plot in PLOTS.items():
        if records(data, suite):
            plot(data, outdir / f"{suite}.png")
            written.append(outdir / f"{suite}.png")
    return written


# -- command line ------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="pytest-benchmark JSON files (--benchmark-json output)")
    ap.add_argument("--update", help="markdown file whose marked blocks are replaced")
    ap.add_argument("--threshold", help="output of `bench_detection.py --threshold` to put in the file")
    ap.add_argument("--readme", metavar="FILE", help="README whose readme-summary block is replaced")
    ap.add_argument("--plots", metavar="DIR", help="directory for the PNG plots")
    args = ap.parse_args(argv)
    data = load(args.json)
    if args.update:
        with open(args.update) as fh:
            doc = fh.read()
        threshold = None
        if args.threshold:
            with open(args.threshold) as fh:
                threshold = fh.read()
        with open(args.update, "w") as fh:
            fh.write(update(doc, data, threshold))
        print(f"updated {args.update}")
    if args.readme:
        with open(args.readme) as fh:
            doc = fh.read()
        try:
            doc = update_readme(doc, data)
        except ValueError as exc:
            ap.error(f"{args.readme}: {exc}")
        with open(args.readme, "w") as fh:
            fh.write(doc)
        print(f"updated {args.readme}")
    if not args.update and not args.readme:
        print("\n".join([*blocks(data).values(), *readme_blocks(data).values()]))
    if args.plots:
        for path in plots(data, args.plots):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
