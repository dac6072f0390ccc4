"""Turn the pytest-benchmark JSON of ``benches/bench_detection.py`` into markdown tables.

    python benches/report_detection.py detection.json                 # print the tables
    python benches/report_detection.py detection.json --update docs/performance.md

With ``--update`` the text between ``<!-- detection-results:start -->`` and
``<!-- detection-results:end -->`` in the file is replaced (one block per device), and
so is the comparison with asdex (``detection-asdex``); ``--threshold FILE`` also puts
the table printed by ``python benches/bench_detection.py --threshold`` into the
``detection-threshold`` block.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

#: asdex detection on the same Brusselator (docs anchors, CPU): n -> seconds
ASDEX = {2048: 0.08, 4608: 0.17, 8192: 0.34, 32768: 1.19}


def _fmt_s(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _mib(x) -> str:
    if x is None:
        return "-"
    return f"{x / 1024:.2f} GiB" if x >= 1024 else f"{x:.0f} MiB"


def tables(data: dict) -> str:
    rows = defaultdict(list)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if "problem" not in e:
            continue
        rows[(e["device"], e.get("device_name", ""), e["problem"])].append((b["stats"], e))
    out = []
    when = data.get("datetime", "")[:10]
    for (device, name, problem), items in sorted(rows.items()):
        items.sort(key=lambda se: (se[1]["size"], se[1]["representation"]))
        size_col = "n (unknowns)" if problem == "brusselator" else "observations"
        title = "2-D Brusselator" if problem == "brusselator" else "Bundle adjustment"
        out.append(f"**{title}**, {device}: {name}, torch {items[0][1].get('torch', '?')}, {when}\n")
        out.append(f"| {size_col} | inputs | representation | detection (best / median) | plain f(x) | "
                   f"detection / f(x) | pattern nnz | peak RSS | detection peak |")
        out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        for st, e in items:
            peak = e.get("cuda_peak_mib") if device == "cuda" else e.get("detection_peak_mib")
            out.append(
                f"| {e['size']:,} | {e['n_inputs']:,} | {e['representation']} | "
                f"{_fmt_s(st['min'])} / {_fmt_s(st['median'])} | {_fmt_s(e['f_seconds'])} | "
                f"{e['ratio_min']:,.0f}x | {e['nnz']:,} | {_mib(e.get('peak_rss_mib'))} | {_mib(peak)} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def asdex_table(data: dict) -> str:
    best = {}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if e.get("problem") == "brusselator" and e.get("device") == "cpu":
            key = e["size"]
            best[key] = min(best.get(key, float("inf")), b["stats"]["min"])
    rows = ["| n | asdex | trackjac (best representation) | speed-up |", "|---:|---:|---:|---:|"]
    for n, t in sorted(ASDEX.items()):
        if n in best:
            rows.append(f"| {n:,} | {_fmt_s(t)} | {_fmt_s(best[n])} | {t / best[n]:.0f}x |")
    return "\n".join(rows) + "\n"


def _replace(doc: str, name: str, text: str) -> str:
    start, end = f"<!-- detection-{name}:start -->", f"<!-- detection-{name}:end -->"
    block = f"{start}\n{text}{end}"
    if start in doc and end in doc:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda m: block, doc, flags=re.S)
    return doc.rstrip() + "\n\n" + block + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--update", help="markdown file whose detection blocks are replaced")
    ap.add_argument("--threshold", help="output of `bench_detection.py --threshold` to put in the file")
    args = ap.parse_args()
    with open(args.json) as fh:
        data = json.load(fh)
    text, versus = tables(data), asdex_table(data)
    if not args.update:
        print(text + "\n" + versus)
        return
    with open(args.update) as fh:
        doc = fh.read()
    doc = _replace(doc, "results", text)
    doc = _replace(doc, "asdex", versus)
    if args.threshold:
        with open(args.threshold) as fh:
            doc = _replace(doc, "threshold", fh.read().strip() + "\n")
    with open(args.update, "w") as fh:
        fh.write(doc)
    print(f"updated {args.update}")


if __name__ == "__main__":
    main()
