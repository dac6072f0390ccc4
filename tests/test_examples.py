"""Each example runs as a user would run it (a subprocess) and checks its own result.

The examples assert against autograd or a known answer and exit non-zero on a
mismatch. Defaults are sized to run in under a minute on 2 cores; here the big
ones run with smaller arguments so this file stays well under two minutes. The
full-size runs are slow and skipped unless ``TRACKJAC_SLOW=1`` is set
(``TRACKJAC_SLOW=1 python -m pytest tests/test_examples.py``).
"""
import os
import subprocess
import sys

import pytest
import torch

import trackjac

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
HAVE_ENGINE = hasattr(trackjac, "jacobian") and hasattr(trackjac, "jacobian_plan")
needs_engine = pytest.mark.skipif(not HAVE_ENGINE, reason="the sparse Jacobian engine is not available")
slow = pytest.mark.skipif(not os.environ.get("TRACKJAC_SLOW"), reason="slow: set TRACKJAC_SLOW=1 to run")


def run_example(name, *args, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONIOENCODING"] = "utf-8"
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, f"{name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_every_example_is_tested():
    tested = {"seed_participation.py", "bundle_adjustment.py", "brusselator_newton.py",
              "gnn_message_passing.py", "newton_logistic.py", "distributed_rows.py",
              "least_squares_scipy.py"}
    assert set(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == tested


@needs_engine
def test_seed_participation():
    out = run_example("seed_participation.py")
    assert "multiplied by zero (participates): [[0, 0], [1, 1]]" in out
    assert out.rstrip().endswith("nothing else leaks in.")


def test_gnn_message_passing():
    out = run_example("gnn_message_passing.py")
    assert "OK: node pattern == 2-hop neighborhood" in out
    assert "Every node now reads all 24 nodes" in out


@needs_engine
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_distributed_rows():
    out = run_example("distributed_rows.py", "--sensors", "60")
    assert "matches autograd" in out and out.rstrip().endswith("OK")


@needs_engine
def test_brusselator_newton_small():
    out = run_example("brusselator_newton.py", "--N", "16", "--steps", "2")
    assert "step 2: Newton |G|" in out and out.rstrip().endswith("OK")


@needs_engine
def test_brusselator_newton_torch_solver():
    out = run_example("brusselator_newton.py", "--N", "12", "--steps", "1", "--solver", "torch", "--no-dense")
    assert "solver: torch" in out and out.rstrip().endswith("OK")


@needs_engine
def test_bundle_adjustment_small():
    out = run_example("bundle_adjustment.py", "--cams", "8", "--points", "120", "--iters", "10")
    assert "OK: final cost" in out and "same values" in out


@needs_engine
def test_least_squares_scipy_small():
    pytest.importorskip("scipy")
    out = run_example("least_squares_scipy.py", "--small")
    assert "same values" in out and "jac_sparsity=trackjac (2-point)" in out
    assert out.rstrip().endswith("OK: all three reach the same solution")


@needs_engine
def test_newton_logistic_small():
    out = run_example("newton_logistic.py", "--features", "2000", "--samples", "4000")
    assert "converged in" in out and out.rstrip().endswith("OK")


@slow
@needs_engine
@pytest.mark.parametrize("name", ["brusselator_newton.py", "bundle_adjustment.py", "newton_logistic.py"])
def test_example_full_size(name):
    run_example(name, timeout=600)
