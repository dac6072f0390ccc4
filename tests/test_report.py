"""benches/report.py: tables and plots from synthetic pytest-benchmark JSON."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
import report  # noqa: E402

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
    assert "| 2-D Brusselator | rows | 512 x 512 |" in report.coloring_table(coloring_json())


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
    assert "| 2-D Brusselator | rows | 524,288 x 524,288 | 3,145,728 | 10 | 6 | 2.47 s / 3.71 s |" in text
    assert "| 512 (N = 16) | 35.5 ms |" in text and "| 32,768 | 1.19 s | 23.1 ms | 52x |" in text
    # no --update: the tables are printed; --plots: one PNG per suite present, here coloring only
    report.main([str(files[1]), "--plots", str(tmp_path / "img")])
    assert "| Bundle adjustment | columns | 2,000 x 840 |" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "img").iterdir()] == ["coloring.png"]
    check_png(tmp_path / "img" / "coloring.png")
