"""benches/report.py: tables and plots from synthetic pytest-benchmark JSON."""
import json
import sys
from pathlib import Path

import pytest

import report  # benches/report.py (benches/ is on sys.path: pyproject's pytest options)

MACHINE = dict(device="cpu", device_name="Test CPU (2 cores)", torch="2.13.0+cpu")


def bench(name, best, median, **extra):
    """One benchmark in pytest-benchmark's schema."""
    stats = dict(min=best, max=2 * median, mean=median, stddev=0.0, rounds=3, median=median,
                 iqr=0.0, q1=best, q3=median, iterations=1)
    return {"name": name, "group": None, "stats": stats, "extra_info": dict(MACHINE, **extra)}


def detection_json():
    def det(size, rep, best, median, n_inputs=None, **kw):
        return bench(f"test_detection[{size}-{rep}]", best, median, suite="detection", size=size,
                     representation=rep, n_inputs=n_inputs or size, n_outputs=size,
                     nnz=6 * size, f_seconds=1e-4, ratio_min=best / 1e-4, peak_rss_mib=300.0,
                     detection_peak_mib=5.0, **kw)
    return {"datetime": "2026-01-02T03:04:05", "benchmarks": [
        det(2048, "sets", 0.0288, 0.0325, problem="brusselator"),
        det(2048, "bits", 0.0123, 0.0127, problem="brusselator"),
        det(32768, "sets", 0.0231, 0.0244, problem="brusselator"),
        det(1000, "sets", 0.0659, 0.0681, n_inputs=840, problem="bundle_adjustment"),
    ]}


def coloring_json():
    def col(problem, size, axis, rows, cols, colors, lower, best):
        return bench(f"test_coloring[{problem}-{size}]", best, 1.5 * best, suite="coloring", problem=problem,
                     size=size, axis=axis, rows=rows, cols=cols, nnz=6 * rows, colors=colors,
                     lower_bound=lower, order="largest_first", threads=2)
    return {"datetime": "2026-01-03T00:00:00", "benchmarks": [
        col("brusselator", 512, "rows", 512, 512, 9, 6, 0.30),
        col("brusselator", 524288, "rows", 524288, 524288, 10, 6, 2.47),
        col("bundle_adjustment", 1000, "columns", 2000, 840, 12, 12, 0.055),
    ]}


def evaluation_json(threads=2):
    def ev(method, problem, size, best, threads=threads, **kw):
        return bench(f"test_bench[{problem}|{size}|{method}]", best, best, suite="evaluation", method=method,
                     problem=problem, size=size, threads=threads, compiled=False, **kw)
    B = dict(problem="brusselator")
    return {"datetime": "2026-01-04T00:00:00", "benchmarks": [
        ev("trackjac.jacobian (from scratch)", size=512, best=0.0355, N=16, rows=512, cols=512, **B),
        ev("trackjac.jacobian_plan (build)", size=512, best=0.271, N=16, rows=512, cols=512, colors=9,
           mode="rev", **B),
        ev("trackjac plan(x) (warm, eager)", size=512, best=0.00092, N=16, rows=512, cols=512, **B),
        ev("torch.func.jacrev", size=512, best=0.0109, N=16, rows=512, cols=512, **B),
        ev("trackjac.jacobian (from scratch)", size=32768, best=0.0799, N=128, rows=32768, cols=32768, **B),
        ev("trackjac plan(x) (warm, compiled)", size=32768, best=0.00121, N=128, rows=32768, cols=32768,
           threads=1, **B),
        ev("trackjac.jacobian (from scratch)", problem="bundle_adjustment", size=400, best=0.0663,
           rows=800, cols=372),
        ev("torch.func.jacfwd", problem="bundle_adjustment", size=400, best=0.0447, rows=800, cols=372),
    ]}


def all_json():
    data = {"datetime": "", "benchmarks": []}
    for part in (detection_json(), coloring_json(), evaluation_json()):
        data = report.merge(data, part)
    return data


def table_rows(markdown, first_header):
    """The rows of the markdown table whose header starts with ``first_header``, as dicts."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return out


def test_detection_tables():
    text = report.detection_tables(detection_json())
    assert "**2-D Brusselator**, cpu: Test CPU (2 cores), torch 2.13.0+cpu, 2026-01-02" in text
    rows = table_rows(text, "n (unknowns)")
    assert [(r["n (unknowns)"], r["representation"]) for r in rows] == [
        ("2,048", "bits"), ("2,048", "sets"), ("32,768", "sets")]
    assert rows[1]["detection (best / median)"] == "28.8 ms / 32.5 ms"
    assert rows[0]["pattern nnz"] == "12,288"
    assert rows[2]["detection / f(x)"] == "231x"
    ba = table_rows(text, "observations")
    assert len(ba) == 1 and ba[0]["inputs"] == "840" and ba[0]["detection (best / median)"] == "65.9 ms / 68.1 ms"


def test_asdex_table_takes_the_best_representation():
    rows = table_rows(report.asdex_table(detection_json()), "n")
    assert [r["n"] for r in rows] == ["2,048", "32,768"]   # only the sizes both have
    assert rows[0] == {"n": "2,048", "asdex": "80.0 ms", "trackjac (best representation)": "12.3 ms",
                       "speed-up": "7x"}
    assert rows[1]["speed-up"] == "52x"


def test_coloring_table():
    rows = table_rows(report.coloring_table(coloring_json()), "pattern")
    assert [(r["pattern"], r["rows x columns"], r["colors"], r["lower bound"]) for r in rows] == [
        ("2-D Brusselator", "512 x 512", "9", "6"),
        ("2-D Brusselator", "524,288 x 524,288", "10", "6"),
        ("Bundle adjustment", "2,000 x 840", "12", "12")]
    assert rows[1]["time (best / median)"] == "2.47 s / 3.71 s"


def test_evaluation_tables():
    text = report.evaluation_tables(evaluation_json())
    rows = {r["n (N)"]: r for r in table_rows(text, "n (N)")}
    assert set(rows) == {"512 (N = 16)", "32,768 (N = 128)"}
    small, large = rows["512 (N = 16)"], rows["32,768 (N = 128)"]
    assert small["`jacobian` from scratch"] == "35.5 ms" and large["`jacobian` from scratch"] == "79.9 ms"
    assert small["warm `plan(x)`"] == "0.92 ms" and large["warm `plan(x)`"] == "-"
    assert small["`jacrev`"] == "10.9 ms"
    # the compiled plan ran with 1 thread, the rest with 2: its column says so
    assert large["warm `plan(x)` compiled (1 thread)"] == "1.21 ms"
    assert small["plan colors (mode)"] == "9 (rev)" and large["plan colors (mode)"] == "-"
    # columns in the order of report.METHODS
    header = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    assert header == ["n (N)", "`jacobian` from scratch", "`jacobian_plan` build", "warm `plan(x)`",
                      "warm `plan(x)` compiled (1 thread)", "`jacrev`", "plan colors (mode)"]
    ba = table_rows(text, "observations (residuals x parameters)")
    assert ba == [{"observations (residuals x parameters)": "400 (800 x 372)",
                   "`jacobian` from scratch": "66.3 ms", "`jacfwd`": "44.7 ms"}]


def test_update_replaces_only_the_blocks_it_has_results_for():
    doc = ("# Perf\n\nprose stays\n\n<!-- detection-results:start -->\nold detection\n"
           "<!-- detection-results:end -->\n\nmore prose\n\n<!-- evaluation-results:start -->\nold evaluation\n"
           "<!-- evaluation-results:end -->\n")
    new = report.update(doc, report.merge(detection_json(), coloring_json()), threshold="| t |\n")
    assert "prose stays" in new and "more prose" in new
    assert "old detection" not in new and "| 2,048 | 2,048 | bits | 12.3 ms / 12.7 ms |" in new
    assert "old evaluation" in new   # no evaluation results given: block untouched
    # blocks without markers are appended, each once
    for name in ("detection-asdex", "coloring-results", "detection-threshold"):
        assert new.count(f"<!-- {name}:start -->") == 1 and new.count(f"<!-- {name}:end -->") == 1
    assert report.update(new, report.merge(detection_json(), coloring_json()), threshold="| t |\n") == new


def check_png(path):
    from matplotlib.image import imread
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400 and img.shape[2] in (3, 4)
    assert img[..., :3].std() > 0.05   # not a blank canvas


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    data = all_json()
    legend = report.plot_detection(data, tmp_path / "detection.png")
    assert "asdex (JAX), reference" in legend and "trackjac, sets" in legend and "plain f(x)" in legend
    legend = report.plot_evaluation(data, tmp_path / "evaluation.png")
    assert "warm plan(x) compiled (1 thread)" in legend and "jacfwd" in legend
    assert "2-D Brusselator, rows: lower bound" in report.plot_coloring(data, tmp_path / "coloring.png")
    for name in ("detection", "coloring", "evaluation"):
        check_png(tmp_path / f"{name}.png")


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib raises ImportError
    with pytest.raises(ImportError, match="pip install matplotlib"):
        report.plots(coloring_json(), tmp_path)
    # the tables need no matplotlib
    assert "| 2-D Brusselator | rows | trackjac | 512 x 512 |" in report.coloring_table(coloring_json())


def test_command_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    files = []
    for name, part in (("detection", detection_json()), ("coloring", coloring_json()),
                       ("engine", evaluation_json())):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(part))
    doc = tmp_path / "perf.md"
    doc.write_text("# Perf\n\n<!-- coloring-results:start -->\n<!-- coloring-results:end -->\n")
    report.main([str(f) for f in files] + ["--update", str(doc)])
    text = doc.read_text()
    assert "| 2-D Brusselator | rows | trackjac | 524,288 x 524,288 | 3,145,728 | 10 | 6 | 2.47 s / 3.71 s |" in text
    assert "| 512 (N = 16) | 35.5 ms |" in text and "| 32,768 | 1.19 s | 23.1 ms | 52x |" in text
    # no --update: the tables are printed; --plots: one PNG per suite present, here coloring only
    report.main([str(files[1]), "--plots", str(tmp_path / "img")])
    assert "| Bundle adjustment | columns | trackjac | 2,000 x 840 |" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "img").iterdir()] == ["coloring.png"]
    check_png(tmp_path / "img" / "coloring.png")


# -- the README's summary (readme-summary) ------------------------------------------------

def summary_json():
    """Detection, coloring, engine and compiled-engine results at the README's sizes, as separate runs."""
    def det(problem, size, rep, best, peak, n_inputs=None, **kw):
        n_outputs = 2 * size if problem == "bundle_adjustment" else size
        return bench(f"test_detection[{size}-{rep}]", best, 1.1 * best, suite="detection", problem=problem,
                     size=size, representation=rep, n_inputs=n_inputs or size, n_outputs=n_outputs,
                     nnz=6 * size, f_seconds=1e-3, ratio_min=best / 1e-3, peak_rss_mib=300.0,
                     detection_peak_mib=peak, **kw)

    def col(problem, size, axis, colors, best, **kw):
        return bench(f"test_coloring[{problem}-{size}]", best, best, suite="coloring", problem=problem, size=size,
                     axis=axis, rows=size, cols=size, nnz=6 * size, colors=colors, order="largest_first",
                     threads=2, **kw)

    def ev(method, problem, size, best, threads=2, compiled=False, **kw):
        if problem == "brusselator":
            dims = dict(N=int((size // 2) ** 0.5), rows=size, cols=size)
        else:   # 40,000 observations of 10,000 points by 128 cameras: 80,000 residuals x 31,152 parameters
            dims = dict(rows=2 * size, cols={400: 372, 40000: 31152}[size])
        return bench(f"test_bench[{problem}|{size}|{method}]", best, best, suite="evaluation", method=method,
                     problem=problem, size=size, threads=threads, compiled=compiled, **dims, **kw)

    B, BA = "brusselator", "bundle_adjustment"
    detection = {"datetime": "2026-01-02T00:00:00", "benchmarks": [
        det(B, 2048, "sets", 0.008, 0.9),
        det(B, 32768, "sets", 0.0231, 14.9),
        det(B, 32768, "bits", 0.0612, 96.0),         # slower: not the one shown
        det(B, 32768, "sets", 0.0041, 3.0, device="cuda", cuda_peak_mib=3.0),   # GPU: left out
        det(B, 524288, "sets", 0.291, 223.6),
        det(BA, 1000, "sets", 0.061, 2.1, n_inputs=840),
        det(BA, 100000, "sets", 0.766, 208.0, n_inputs=84000),
    ]}
    coloring = {"datetime": "2026-01-03T00:00:00", "benchmarks": [
        col(B, 32768, "rows", 10, 0.45, lower_bound=6),
        col(B, 524288, "rows", 10, 1.84, lower_bound=6),
        col(BA, 100000, "columns", 12, 4.95, lower_bound=12),
    ]}
    engine = {"datetime": "2026-01-04T00:00:00", "benchmarks": [
        ev("trackjac.jacobian (from scratch)", B, 4608, 0.0352),
        ev("trackjac.jacobian_plan (build)", B, 4608, 0.261, colors=9, mode="rev"),
        ev("trackjac plan(x) (warm, eager)", B, 4608, 0.00141),
        ev("torch.func.jacrev", B, 4608, 2.05),
        ev("torch.func.jacfwd", B, 4608, 1.95),
        ev("trackjac plan(x) (warm, eager)", B, 32768, 0.00742),
        ev("trackjac plan(x) (warm, eager)", BA, 400, 0.0058),
        ev("trackjac.jacobian_plan (build)", BA, 40000, 1.12, colors=12, mode="fwd"),
        ev("trackjac plan(x) (warm, eager)", BA, 40000, 0.137),
    ]}
    compiled = {"datetime": "2026-01-05T00:00:00", "benchmarks": [
        ev("trackjac plan(x) (warm, eager)", B, 4608, 0.00206, threads=1, compiled=True),
        ev("trackjac plan(x) (warm, compiled)", B, 4608, 0.00049, threads=1, compiled=True),
        ev("trackjac plan(x) (warm, eager)", B, 32768, 0.00878, threads=1, compiled=True),
        ev("trackjac plan(x) (warm, compiled)", B, 32768, 0.00121, threads=1, compiled=True),
        ev("trackjac plan(x) (warm, eager)", BA, 40000, 0.0996, threads=1, compiled=True),  # other threads
        ev("trackjac plan(x) (warm, compiled)", BA, 40000, 0.0642, threads=1, compiled=True),
    ]}
    return dict(detection=detection, coloring=coloring, engine=engine, engine_compiled=compiled)


def merged(*parts):
    data = {"datetime": "", "benchmarks": []}
    for part in parts:
        data = report.merge(data, part)
    return data


SUMMARY_ROWS = [
    ("Brusselator, n = 32,768", "detection", "23.1 ms, 15 MiB", "asdex (JAX) 1.19 s"),
    ("Brusselator, n = 524,288", "detection", "291 ms, 224 MiB", "dense Jacobian: 2.2 TB"),
    ("Brusselator, n = 524,288", "row coloring", "1.84 s, 10 colors", "asdex 10-12 colors; lower bound 6"),
    ("Brusselator, n = 4,608", "`jacobian` from scratch", "35.2 ms", "`torch.func.jacrev` 2.05 s"),
    ("Brusselator, n = 4,608", "warm `plan(x)`", "1.41 ms", "`jacrev` 2.05 s"),
    ("Brusselator, n = 32,768", "warm `plan(x)`", "7.42 ms eager; 1 thread: 8.78 ms eager, 1.21 ms `compile=True`",
     "asdex (jit) 0.42 ms; dense 8.6 GB"),
    ("bundle adjustment, 100,000 observations", "detection", "766 ms, 208 MiB", ""),
    ("bundle adjustment, 40,000 observations (80,000 x 31,152)", "warm `plan(x)`", "137 ms (12 colors, forward)",
     "dense Jacobian: 20 GB"),
]


def test_summary_rows_from_all_suites():
    parts = summary_json()
    assert report.summary_rows(merged(*parts.values())) == SUMMARY_ROWS
    rows = table_rows(report.summary_table(merged(*parts.values())), "problem")
    assert [tuple(r.values()) for r in rows] == SUMMARY_ROWS
    assert list(rows[0]) == ["problem", "step", "trackjac", "for comparison"]


def test_summary_drops_the_rows_of_a_missing_suite():
    parts = summary_json()
    steps = lambda data: [(p, s) for p, s, _, _ in report.summary_rows(data)]   # noqa: E731
    # no coloring: its row only
    assert steps(merged(parts["detection"], parts["engine"], parts["engine_compiled"])) == [
        (p, s) for p, s, _, _ in SUMMARY_ROWS if s != "row coloring"]
    # no engine suites: no evaluation rows
    assert steps(merged(parts["detection"], parts["coloring"])) == [
        (p, s) for p, s, _, _ in SUMMARY_ROWS[:3]] + [(SUMMARY_ROWS[6][0], "detection")]
    # no compiled run: the warm plan at 32,768 is eager only
    rows = report.summary_rows(merged(parts["engine"]))
    assert [r[1] for r in rows] == ["`jacobian` from scratch", "warm `plan(x)`", "warm `plan(x)`", "warm `plan(x)`"]
    assert rows[2][2] == "7.42 ms eager" and rows[3][2] == "137 ms (12 colors, forward)"
    # no coloring lower bound recorded: the comparison has asdex only
    for b in parts["coloring"]["benchmarks"]:
        del b["extra_info"]["lower_bound"]
    assert report.summary_rows(parts["coloring"]) == [
        ("Brusselator, n = 524,288", "row coloring", "1.84 s, 10 colors", "asdex 10-12 colors")]
    # none of its records (other sizes, no warm eager plan): no table, and the README's block is left as it is
    assert report.summary_table(evaluation_json()) == ""
    doc = "# R\n\n<!-- readme-summary:start -->\nold\n<!-- readme-summary:end -->\n"
    assert report.update_readme(doc, evaluation_json()) == doc


def test_bytes():
    assert [report._bytes(x) for x in (524288 ** 2 * 8, 32768 ** 2 * 8, 80000 * 31152 * 8, 123e9, 999.6e9, 512)] == [
        "2.2 TB", "8.6 GB", "20 GB", "123 GB", "1 TB", "512 B"]


def test_update_readme_replaces_its_block_only():
    doc = ("# trackjac\n\n## Performance\n\nprose\n\n<!-- readme-summary:start -->\n| problem | step |\n"
           "| old | row |\n<!-- readme-summary:end -->\n\n## Examples\n")
    data = merged(*summary_json().values())
    new = report.update_readme(doc, data)
    assert new.startswith("# trackjac\n\n## Performance\n\nprose\n\n<!-- readme-summary:start -->\n| problem |")
    assert new.endswith("| dense Jacobian: 20 GB |\n<!-- readme-summary:end -->\n\n## Examples\n")
    assert "| old | row |" not in new and report.update_readme(new, data) == new
    assert "detection-results" not in new   # the docs' blocks stay out of the README
    with pytest.raises(ValueError, match="readme-summary:start"):
        report.update_readme("# no markers\n", data)


def test_command_line_readme(tmp_path, capsys):
    files = []
    for name, part in summary_json().items():
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(part))
    readme = tmp_path / "README.md"
    readme.write_text("# R\n\n<!-- readme-summary:start -->\n<!-- readme-summary:end -->\n")
    perf = tmp_path / "perf.md"
    perf.write_text("# Perf\n")
    report.main([str(f) for f in files] + ["--update", str(perf), "--readme", str(readme)])
    assert [tuple(r.values()) for r in table_rows(readme.read_text(), "problem")] == SUMMARY_ROWS
    assert "readme-summary" not in perf.read_text() and "detection-results:start" in perf.read_text()
    # --readme alone leaves the docs alone; without either, the summary is printed with the rest
    report.main([str(files[1]), "--readme", str(readme)])
    assert [r["step"] for r in table_rows(readme.read_text(), "problem")] == ["row coloring"]
    capsys.readouterr()
    report.main([str(f) for f in files])
    assert "| Brusselator, n = 4,608 | warm `plan(x)` | 1.41 ms | `jacrev` 2.05 s |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.main([str(files[0]), "--readme", str(perf)])   # no markers: an error, the file untouched
    assert perf.read_text().count("readme-summary") == 0


def test_symmetric_table():
    def sym(suite, family, method, colors, median, **kw):
        return bench(f"test_{suite}[{family}-{method}]", median, median, suite=suite, problem=family,
                     method=method, size=100, nnz=298, colors=colors, **kw)
    data = {"datetime": "2026-01-05T00:00:00", "benchmarks": [
        sym("symmetric_coloring", "tridiagonal", "star", 3, 0.49, lower_bound=2, column_colors=4),
        sym("symmetric_coloring", "tridiagonal", "acyclic", 2, 0.37, lower_bound=2, column_colors=4),
        sym("symmetric_decompression", "tridiagonal", "star", 3, 0.0004),
    ]}
    table = report.symmetric_table(data)
    assert "| tridiagonal | 100 | 298 | 3 | 2 | 4 | 2 | 490 ms / 0.40 ms | 370 ms / - |" in table
    assert "symmetric-coloring-results" in report.blocks(data)
    assert report.symmetric_table({"benchmarks": []}) == ""
