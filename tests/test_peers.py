"""The peer benchmarks: the new PDE residuals, their JAX twins (benches/peers.py), asdex on them,
bench_peers.py's records and report.py's rendering of them. JAX and asdex parts skip without them."""
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bench_peers   # benches/ is on sys.path (pyproject's pytest options); needs no jax
import problems
import report
import trackjac
from dense_reference import assert_equal, union_nonzeros

# small cases: (problem, size) -> the torch function and point
SMALL = [("brusselator", 2 * 4 * 4), ("laplacian3d_cubic", 3 ** 3), ("laplacian3d_cubic", 4 ** 3),
         ("kuramoto_sivashinsky", 5), ("kuramoto_sivashinsky", 17), ("bundle_adjustment", 400)]

sizes = st.one_of(
    st.integers(2, 6).map(lambda N: ("brusselator", 2 * N * N)),
    st.integers(2, 5).map(lambda N: ("laplacian3d_cubic", N ** 3)),
    st.integers(5, 40).map(lambda n: ("kuramoto_sivashinsky", n)),
)


def _pattern(f, args):
    p = trackjac.jacobian_sparsity(f, *args)
    return p if isinstance(p, tuple) else (p,)


@settings(max_examples=12, deadline=None)
@given(case=sizes, seed=st.integers(0, 2 ** 16))
def test_pde_patterns_are_exact(case, seed):
    """trackjac's patterns of the PDE residuals equal the dense Jacobians' nonzeros (union over points)."""
    problem, size = case
    c = bench_peers.make_case(problem, size)
    shape = c.args[0].shape
    make = {"laplacian3d_cubic": problems.laplacian3d_point, "kuramoto_sivashinsky": problems.kuramoto_sivashinsky_point,
            "brusselator": problems.brusselator_point}[problem]
    dim = shape[0] if problem != "brusselator" else shape[1]
    expected = union_nonzeros(c.f, lambda s: (make(dim, seed=seed + s),), points=3)
    (pattern,) = _pattern(c.f, c.args)
    assert_equal(pattern, expected[0], f" ({problem}, n = {size})")


def test_pde_rows_have_their_stencil_width():
    # at sizes where the stencil's neighbours are distinct: 7 per row in 3-D, 5 for KS
    for problem, size, per_row in (("laplacian3d_cubic", 4 ** 3, 7), ("kuramoto_sivashinsky", 12, 5)):
        c = bench_peers.make_case(problem, size)
        (p,) = _pattern(c.f, c.args)
        assert p._nnz() == per_row * size


def test_make_case_rejects_bad_sizes():
    for problem, size, match in (("brusselator", 31, "2 N\\^2"), ("laplacian3d_cubic", 30, "N\\^3"),
                                 ("kuramoto_sivashinsky", 4, "at least 5"), ("bundle_adjustment", 401, "one of"),
                                 ("heat", 8, "unknown problem")):
        with pytest.raises(ValueError, match=match):
            bench_peers.make_case(problem, size)


def _twin(problem, size):
    peers = pytest.importorskip("peers")   # benches/peers.py imports jax
    c = bench_peers.make_case(problem, size)
    return c, peers.twin(problem, c.args, c.ba)


@pytest.mark.parametrize("problem,size", SMALL)
def test_jax_twins_agree_with_the_torch_residuals(problem, size):
    pytest.importorskip("jax")
    import numpy as np   # numpy comes with jax; the torch-only tests never need it
    c, (jf, jargs) = _twin(problem, size)
    expected = c.f(*c.args)
    got = np.asarray(jf(*jargs))
    assert got.dtype == np.float64 and got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=1e-12 * float(expected.abs().max()))


@settings(max_examples=8, deadline=None)
@given(case=sizes)
def test_jax_twins_agree_generated_sizes(case):
    pytest.importorskip("jax")
    import numpy as np   # as above
    c, (jf, jargs) = _twin(*case)
    np.testing.assert_allclose(np.asarray(jf(*jargs)), c.f(*c.args).numpy(), rtol=1e-12, atol=1e-9)


def test_twin_rejects_unknown_problems():
    peers = pytest.importorskip("peers")
    with pytest.raises(ValueError, match="no JAX twin"):
        peers.twin("heat", (torch.zeros(3),))
    with pytest.raises(ValueError, match="ba="):
        peers.twin("bundle_adjustment", (torch.zeros(3, 9), torch.zeros(2, 3)))


@pytest.mark.parametrize("problem,size", SMALL)
def test_asdex_finds_the_same_pattern(problem, size):
    """asdex on the twin and trackjac on the original detect the same pattern: the suite compares like with like."""
    asdex = pytest.importorskip("asdex")
    c, (jf, jargs) = _twin(problem, size)
    argnums = tuple(range(len(jargs))) if len(jargs) > 1 else 0
    sp = asdex.jacobian_sparsity(jf, *jargs, argnums=argnums)
    theirs = torch.zeros(sp.shape, dtype=torch.bool)
    theirs[torch.as_tensor(sp.rows, dtype=torch.long), torch.as_tensor(sp.cols, dtype=torch.long)] = True
    ours = torch.cat([p.to_dense() for p in _pattern(c.f, c.args)], dim=1)
    assert_equal(theirs, ours, f" ({problem}, n = {size})")


def test_run_cases_records_both_libraries():
    pytest.importorskip("asdex")
    data = bench_peers.run_cases([("brusselator", 512)], ["asdex", "trackjac"], rounds=1, eval_rounds=1,
                                 compile_too=False, timeout=600)
    (case,) = data["cases"]
    assert case["nnz"] == 6 * 512 and case["n_inputs"] == case["n_outputs"] == 512
    for tool in ("asdex", "trackjac"):
        res = case[tool]
        assert "error" not in res and "mismatch" not in res, res
        assert res["colors"] >= 6   # the pattern's lower bound (6 nonzeros a row)
    assert {"eval_jit_s", "compressed_jit_s"} <= set(case["asdex"]) and "plan_eager_s" in case["trackjac"]
    assert data["machine"]["threads"] == 1 and "asdex" in data["machine"]
    json.dumps(data)   # what bench_peers.py writes


def test_spawn_reports_a_failing_worker():
    res = bench_peers.spawn("nobody", "brusselator", 512, 1, 1, False, timeout=120)
    assert res["error"].startswith("exit 1") and "unknown tool" in res["error"]


# -- report.py with and without peers.json ------------------------------------------------

def peers_json():
    def timing(t):
        return {"min": 0.8 * t, "median": t, "rounds": 3}
    return {"suite": "peers", "datetime": "2026-01-06T00:00:00+00:00", "suite_wall_s": 600.0,
            "machine": {"cpu": "Test CPU (2 cores)", "asdex": "0.5.1", "jax": "0.10.2", "torch": "2.13.0+cpu",
                        "threads": 1},
            "cases": [
                {"problem": "kuramoto_sivashinsky", "size": 4096, "nnz": 20480,
                 "asdex": {"error": "timed out after 300 s"},
                 "trackjac": {"detection_s": timing(0.01), "colors": 6, "mode": "rev", "plan_eager_s": timing(0.007)}},
                {"problem": "laplacian3d_cubic", "size": 262144, "nnz": 1835008,
                 "asdex": {"detection_s": timing(0.05), "colors": 16, "mode": "fwd", "compressed_jit_s": timing(0.02),
                           "errors": {"eval_jit_s": "ValueError: int32 not large enough"}},
                 "trackjac": {"detection_s": timing(0.2), "colors": 13, "mode": "rev"}},
                {"problem": "brusselator", "size": 32768, "nnz": 196608,
                 "asdex": {"detection_s": timing(2.0), "colors": 12, "mode": "fwd", "eval_jit_s": timing(0.005),
                           "compressed_jit_s": timing(0.0007)},
                 "trackjac": {"detection_s": timing(0.025), "colors": 10, "mode": "rev",
                              "plan_eager_s": timing(0.009), "plan_compiled_s": timing(0.0015)}},
            ]}


def test_asdex_block_says_quoted_without_peers():
    from test_report import detection_json   # the synthetic detection records of test_report.py
    text = report.asdex_table(detection_json())
    assert "not measured by this repository" in text and "measured here" not in text


def test_asdex_block_from_peers():
    from test_report import detection_json   # as above
    data = report.merge(detection_json(), peers_json())
    text = report.blocks(data)["detection-asdex"]
    assert "not measured by this repository" not in text and "bench_peers.py" in text
    assert "Test CPU (2 cores), asdex 0.5.1, jax 0.10.2, torch 2.13.0+cpu, 1 thread" in text
    from test_report import table_rows   # the markdown table parser of test_report.py
    rows = table_rows(text, "problem")
    assert [r["problem"] for r in rows] == ["2-D Brusselator", "3-D Laplacian + cubic reaction",
                                            "1-D Kuramoto-Sivashinsky"]   # PEER_PROBLEMS order
    b, lap, ks = rows
    assert lap["asdex jit `jacobian`"] == "fails (below)" and lap["asdex jit compressed"] == "20.0 ms"
    assert lap["speed-up"] == "0.2x" and lap["trackjac compiled `plan(x)`"] == "-"
    assert ("- asdex jit `jacobian`, 3-D Laplacian + cubic reaction n = 262,144: "
            "`ValueError: int32 not large enough`") in text
    assert b["asdex detection"] == "2.00 s" and b["trackjac detection"] == "25.0 ms" and b["speed-up"] == "80x"
    assert b["asdex colors"] == "12 (fwd)" and b["asdex jit `jacobian`"] == "5.00 ms"
    assert b["trackjac compiled `plan(x)`"] == "1.50 ms" and b["asdex jit compressed"] == "0.70 ms"
    assert ks["asdex detection"] == "timed out after 300 s" and ks["speed-up"] == "-" and ks["asdex colors"] == "-"
    # the peers file alone renders the block too
    assert report.blocks(report.merge({"datetime": "", "benchmarks": []}, peers_json()))["detection-asdex"] == text


def test_summary_takes_asdex_from_peers():
    from test_report import merged, summary_json   # the README summary's synthetic records
    rows = report.summary_rows(merged(*summary_json().values(), peers_json()))
    by_step = {(p, s): c for p, s, _, c in rows}
    assert by_step[("Brusselator, n = 32,768", "detection")] == "asdex (JAX) 1.60 s"   # best of the rounds
    assert by_step[("Brusselator, n = 524,288", "row coloring")] == \
        "asdex 12 colors (forward, at n = 32,768); lower bound 6"
    assert by_step[("Brusselator, n = 32,768", "warm `plan(x)`")] == "asdex (jit) 4.00 ms; dense 8.6 GB"


def test_load_reads_peers_json(tmp_path):
    path = tmp_path / "peers.json"
    path.write_text(json.dumps(peers_json()))
    data = report.load([str(path)])
    assert data["benchmarks"] == [] and data["peers"]["cases"] == peers_json()["cases"]


def test_merge_runs_keeps_the_cases_not_rerun():
    old, new = peers_json(), peers_json()
    new["cases"] = [dict(new["cases"][2], nnz=1)]   # brusselator 32768 again
    new["datetime"] = "2026-01-07T00:00:00+00:00"
    merged = bench_peers.merge_runs(old, new)
    assert [(c["problem"], c["nnz"]) for c in merged["cases"]] == [
        ("kuramoto_sivashinsky", 20480), ("laplacian3d_cubic", 1835008), ("brusselator", 1)]
    assert merged["suite_wall_s"] == 1200.0 and merged["datetime"] == new["datetime"]
    with pytest.raises(ValueError, match="another machine"):
        bench_peers.merge_runs(old, dict(new, machine={"cpu": "Other CPU"}))
    with pytest.raises(ValueError, match="not a bench_peers.py result"):
        bench_peers.merge_runs({"benchmarks": []}, new)


def test_detection_plot_takes_asdex_from_peers(tmp_path):
    pytest.importorskip("matplotlib")
    from test_report import check_png, detection_json   # the PNG checks and records of test_report.py
    legend = report.plot_detection(report.merge(detection_json(), peers_json()), tmp_path / "detection.png")
    assert "asdex (JAX), bench_peers" in legend and "asdex (JAX), reference" not in legend
    check_png(tmp_path / "detection.png")
