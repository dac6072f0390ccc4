"""``trackjac.testing``: the assertions pass on sound patterns and right Jacobians, fail with a readable
diff on wrong ones; the strategies draw what they say."""
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac
import trackjac.testing as tt
from trackjac.testing import assert_jacobian_close, assert_pattern_sound, perturbations, tensors


def residual(x, w):
    return (x * w).sum(1), x[:, :2] ** 2


def stencil(u):
    return u[2:] - 2 * u[1:-1] + u[:-2]


# -- the assertions pass where trackjac is right ---------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(tensors((3, 4), min_value=-2, max_value=2), tensors((3, 4), min_value=-2, max_value=2))
def test_sound_on_generated_inputs(x, w):
    assert_pattern_sound(residual, x, w)
    assert_jacobian_close(residual, x, w)


@settings(max_examples=10, deadline=None)
@given(tensors(st.tuples(st.integers(3, 12)), min_value=-5, max_value=5), st.sampled_from(["rev", "fwd"]))
def test_jacobian_close_both_modes(u, mode):
    assert_jacobian_close(stencil, u, mode=mode)
    assert_jacobian_close(stencil, u, mode=mode, layout=torch.sparse_csr)


def test_branching_function_is_checked_per_path():
    def f(x):
        return x * 2 if x.sum() > 0 else x.roll(1)

    # perturbations of scale 10 take the other branch: each point is checked against its own pattern
    with pytest.warns(trackjac.ControlFlowWarning):
        assert_pattern_sound(f, torch.ones(4, dtype=torch.double), points=6, scale=10.0)


def test_local_mode_and_user_points():
    f = torch.relu
    x = torch.tensor([-1.0, 2.0, -3.0], dtype=torch.double)
    assert_pattern_sound(f, x, local=True, points=[-x, x.abs()])
    assert_pattern_sound(f, x, points=[(x * 2,)])


def test_non_floating_arguments_pass_through():
    idx = torch.tensor([2, 0, 0])
    assert_pattern_sound(lambda x, i: x[i] * x[0], torch.rand(3, dtype=torch.double), idx)


# -- and fail with the expected message where the pattern or the values are wrong ---------------------------------
def test_missing_entries_are_listed_with_multi_dimensional_indices():
    x = torch.rand(2, 3, dtype=torch.double)

    def f(x):
        return x.sum(1)   # output i depends on x[i, :]

    wrong = torch.zeros(2, 6, dtype=torch.bool)
    wrong[0, 0] = wrong[1, 3] = True
    with pytest.raises(AssertionError) as info:
        assert_pattern_sound(f, x, points=1, pattern=wrong.to_sparse())
    assert str(info.value).splitlines() == [
        "unsound pattern: 8 nonzero(s) of the dense Jacobian (torch.autograd.functional.jacobian) are not in the "
        "pattern (output index -> input index: Jacobian value)",
        "  at args: 4 missing",
        "    output[0] -> x[0, 1]: 1",
        "    output[0] -> x[0, 2]: 1",
        "    output[1] -> x[1, 1]: 1",
        "    output[1] -> x[1, 2]: 1",
        "  at perturbation 1: 4 missing",
        "    output[0] -> x[0, 1]: 1",
        "    output[0] -> x[0, 2]: 1",
        "    output[1] -> x[1, 1]: 1",
        "    output[1] -> x[1, 2]: 1",
    ]


def test_missing_entries_name_outputs_and_arguments_and_truncate():
    a, b = torch.rand(4, dtype=torch.double), torch.rand(4, dtype=torch.double)

    def f(a, b):
        return a * b, a.sum().reshape(1)

    empty = lambda m, n: torch.zeros(m, n, dtype=torch.bool)   # noqa: E731
    pattern = ((torch.eye(4, dtype=torch.bool), empty(4, 4)), (torch.ones(1, 4, dtype=torch.bool), empty(1, 4)))
    with pytest.raises(AssertionError) as info:
        assert_pattern_sound(f, a, b, points=0, pattern=pattern, show=2)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("unsound pattern: 4 nonzero(s)")
    assert lines[1:] == ["  at args: 4 missing", f"    output 0[0] -> b[0]: {float(a[0]):.6g}",
                         f"    output 0[1] -> b[1]: {float(a[1]):.6g}", "    ..."]


def test_wrong_pattern_argument_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"block has shape \(3, 3\), expected \(2, 3\)"):
        assert_pattern_sound(lambda x: x[:2], torch.rand(3, dtype=torch.double), pattern=torch.eye(3))
    with pytest.raises(TypeError, match="no floating-point tensor"):
        assert_pattern_sound(lambda i: i * 2, torch.arange(3))


def test_jacobian_close_fails_on_a_pattern_missing_entries():
    u = torch.rand(5, dtype=torch.double)
    diag = torch.zeros(3, 5, dtype=torch.bool)
    diag[torch.arange(3), torch.arange(3) + 1] = True   # only the -2 u[i+1] entries
    with pytest.raises(AssertionError) as info:
        assert_jacobian_close(stencil, u, pattern=diag.to_sparse())
    assert str(info.value).splitlines() == [
        "trackjac.jacobian differs from the dense Jacobian (torch.autograd.functional.jacobian) in 9 entries "
        "(rtol=1e-07, atol=1e-09; output index -> input index)",
        "  output[0] -> u[0]: got 0, want 1 (not stored: outside the sparse result's pattern)",
        "  output[0] -> u[1]: got -1, want -2",   # the one color mixed u[0] and u[2] into the stored entry
        "  output[0] -> u[2]: got 0, want 1 (not stored: outside the sparse result's pattern)",
        "  output[1] -> u[1]: got 0, want 1 (not stored: outside the sparse result's pattern)",
        "  output[1] -> u[2]: got 0, want -2",
        "  output[1] -> u[3]: got 0, want 1 (not stored: outside the sparse result's pattern)",
        "  output[2] -> u[2]: got 0, want 1 (not stored: outside the sparse result's pattern)",
        "  output[2] -> u[3]: got -1, want -2",
        "  output[2] -> u[4]: got 0, want 1 (not stored: outside the sparse result's pattern)",
    ]


def test_jacobian_close_truncates_and_uses_the_plan_options():
    u = torch.rand(5, dtype=torch.double)
    diag = torch.zeros(3, 5, dtype=torch.bool)
    diag[torch.arange(3), torch.arange(3) + 1] = True
    with pytest.raises(AssertionError) as info:
        assert_jacobian_close(stencil, u, pattern=diag.to_sparse(), mode="fwd", layout=torch.sparse_csr, show=2)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("trackjac.jacobian differs") and "in 9 entries" in lines[0]
    assert lines[2:] == ["  output[0] -> u[1]: got -1, want -2", "  ..."]


def test_tolerances_scale_with_the_largest_entry():
    # the wrong Jacobian above differs by 1 (six entries, want 1 or -2) and by 2 (one entry); max|want| = 2
    u = torch.rand(5, dtype=torch.double)
    diag = torch.zeros(3, 5, dtype=torch.bool)
    diag[torch.arange(3), torch.arange(3) + 1] = True
    kw = dict(pattern=diag.to_sparse(), mode="fwd", rtol=0.0)
    assert_jacobian_close(stencil, u, atol=1.0, **kw)   # bound 1.0 * 2 covers both
    with pytest.raises(AssertionError, match=r"in 1 entry \(rtol=0, atol=0.6;.*\n  output\[1\] -> u\[2\]: got 0, want -2$"):
        assert_jacobian_close(stencil, u, atol=0.6, **kw)
    with pytest.raises(AssertionError, match=r"in 9 entries"):
        assert_jacobian_close(stencil, u, atol=0.4, **kw)


# -- strategies ----------------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.data(), st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]),
       st.lists(st.integers(0, 3), max_size=3))
def test_tensors_have_the_shape_dtype_and_bounds(data, dtype, shape):
    t = data.draw(tensors(shape, dtype, min_value=-3.0, max_value=2.5))
    assert t.shape == tuple(shape) and t.dtype == dtype
    assert bool(torch.isfinite(t).all()) and bool((t >= -3.0).all()) and bool((t <= 2.5).all())
    u = data.draw(tensors(shape, dtype))
    assert u.shape == tuple(shape) and bool(torch.isfinite(u).all())


@settings(max_examples=20, deadline=None)
@given(tensors(st.tuples(st.integers(1, 4), st.integers(1, 4)), elements=st.sampled_from([0.0, 1.5])))
def test_tensors_with_elements_and_shape_strategy(t):
    assert t.dim() == 2 and set(t.flatten().tolist()) <= {0.0, 1.5}


@settings(max_examples=30, deadline=None)
@given(st.data(), st.sampled_from([1e-3, 0.5]), st.booleans())
def test_perturbations_stay_within_scale(data, scale, relative):
    x = torch.tensor([[0.0, -2.0, 100.0]], dtype=torch.float64)
    p = data.draw(perturbations(x, scale=scale, relative=relative))
    assert p.shape == x.shape and p.dtype == x.dtype
    bound = scale * (x.abs().clamp_min(1.0) if relative else torch.ones_like(x))
    assert bool(((p - x).abs() <= bound * (1 + 1e-12)).all())
    pair = data.draw(perturbations((x, x.float()), scale=scale))
    assert isinstance(pair, tuple) and pair[1].dtype == torch.float32
    assert bool(((pair[1] - x.float()).abs() <= scale + 1e-5 * 100).all())   # float32 rounding of x + d


def test_strategy_argument_errors():
    with pytest.raises(ValueError, match="real floating dtype"):
        tensors((2,), torch.int64)
    with pytest.raises(ValueError, match="min_value 2 > max_value 1"):
        tensors((2,), min_value=2, max_value=1)
    with pytest.raises(TypeError, match="real floating tensor"):
        perturbations(torch.arange(3))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        perturbations(torch.zeros(2), scale=-1.0)
    with pytest.raises(AttributeError):
        tt.no_such_name


def test_import_does_not_need_hypothesis():
    code = ("import sys, trackjac, trackjac.testing; assert 'hypothesis' not in sys.modules; "
            "trackjac.testing.tensors; assert 'hypothesis' in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_docs_example_runs(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "docs", "testing.md"), encoding="utf-8").read()
    block = text.split("tests/test_testing.py::test_docs_example_runs -->\n```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "test_my_residual.py").write_text(block)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_residual.py"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 passed" in r.stdout
