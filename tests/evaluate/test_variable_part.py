"""``jacobian_plan(..., constant_entries="reuse")``: constant entries computed once, only the
variable entries colored; values compared with ``torch.autograd.functional.jacobian`` at new points."""
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import trackjac
from trackjac import JacobianCheckError, jacobian_plan

from dense_reference import dense_jacobian
from problems import brusselator, brusselator_point  # benches/problems.py
from random_programs import program_args, programs, run_program, shapes

LAYOUTS = [(torch.sparse_coo, None), (torch.sparse_csr, None), (torch.sparse_bsr, (2, 2))]


def _leaves(x):
    return [z for y in x for z in _leaves(y)] if isinstance(x, tuple) else [x]


def assert_matches(J, D, layout=torch.sparse_coo, atol=1e-10):
    Jl, Dl = _leaves(J), _leaves(D)
    assert type(J) is type(D) and len(Jl) == len(Dl)
    for a, b in zip(Jl, Dl):
        assert a.layout == layout and a.shape == b.shape
        torch.testing.assert_close(a.to_dense(), b, atol=atol, rtol=1e-8)


def same_layout(J, K):
    """Reuse and recompute plans give the same sparse structure, entry for entry."""
    for a, b in zip(_leaves(J), _leaves(K)):
        assert a.layout == b.layout
        if a.layout == torch.sparse_coo:
            assert torch.equal(a.indices(), b.indices())
        else:
            assert torch.equal(a.crow_indices(), b.crow_indices()) and torch.equal(a.col_indices(), b.col_indices())


def reuse(f, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback where these tests expect reuse
        return jacobian_plan(f, *args, constant_entries="reuse", **kw)


# ----------------------------------------------------------------------------
# The Brusselator: stencil constant, reaction variable
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("N", [8, 11, 16])
def test_brusselator_values_and_colors(N):
    x = brusselator_point(N)
    full = jacobian_plan(brusselator, x)
    plan = reuse(brusselator, x)
    assert plan.constant_entries == "reuse" and full.constant_entries == "recompute"
    assert plan.num_colors == 2 < full.num_colors
    assert plan.variable_nnz == 2 * 2 * N * N  # u^2 v: d/du and d/dv of both species at the same cell
    assert plan.constant_nnz + plan.variable_nnz == plan.nnz == full.nnz
    for seed in (1, 2, 3):
        y = brusselator_point(N, seed=seed) * 3 - 1
        J = plan(y)
        assert_matches(J, dense_jacobian(brusselator, y))
        same_layout(J, full(y))


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("chunk", [None, 1])
@pytest.mark.parametrize("layout,blocksize", LAYOUTS)
def test_brusselator_modes_chunks_layouts(mode, chunk, layout, blocksize):
    x = brusselator_point(8)
    plan = reuse(brusselator, x, mode=mode, chunk_size=chunk, layout=layout, blocksize=blocksize)
    full = jacobian_plan(brusselator, x, mode=mode, layout=layout, blocksize=blocksize)
    assert plan.mode == mode and plan.num_colors == 2
    y = brusselator_point(8, seed=5)
    J = plan(y)
    assert_matches(J, dense_jacobian(brusselator, y), layout)
    same_layout(J, full(y))


# ----------------------------------------------------------------------------
# Other shapes of problem
# ----------------------------------------------------------------------------

_g = torch.Generator().manual_seed(0)
_A = torch.randn(12, 12, generator=_g, dtype=torch.float64) * (torch.rand(12, 12, generator=_g) < 0.3)
_P = torch.randperm(12, generator=_g)


def linear_pointwise(x):
    """A sparse linear map plus pointwise and permuted nonlinear terms, some on the same entries."""
    return _A @ x + torch.sin(x) * x[_P] + 2.0 * x.roll(1)


def several(x, y):
    """Two inputs, two outputs, constant and variable entries in every block."""
    return (x * y[:5] + 3.0 * x.roll(2) - y[5:].sum(), torch.cat([x.exp(), 0.5 * y[5:]]) + y.cumsum(0))


@pytest.mark.parametrize("mode", ["rev", "fwd", "auto"])
@pytest.mark.parametrize("layout,blocksize", LAYOUTS[:2])
def test_linear_pointwise(mode, layout, blocksize):
    x = torch.randn(12, dtype=torch.float64, generator=_g)
    plan = reuse(linear_pointwise, x, mode=mode, layout=layout)
    full = jacobian_plan(linear_pointwise, x, mode=mode, layout=layout)
    assert plan.constant_nnz > 0 and plan.variable_nnz > 0
    assert plan.num_colors <= full.num_colors
    for _ in range(2):
        y = torch.randn(12, dtype=torch.float64, generator=_g)
        J = plan(y)
        assert_matches(J, dense_jacobian(linear_pointwise, y), layout)
        same_layout(J, full(y))


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_several_inputs_and_outputs(mode, chunk):
    args = (torch.rand(5, dtype=torch.float64), torch.rand(10, dtype=torch.float64))
    plan = reuse(several, *args, mode=mode, chunk_size=chunk)
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        new = tuple(torch.rand(a.shape, generator=g, dtype=torch.float64) for a in args)
        value, J = plan.value_and_jacobian(*new)
        assert_matches(J, dense_jacobian(several, *new))
        for v, w in zip(value, several(*new)):
            torch.testing.assert_close(v, w)


@settings(max_examples=25, deadline=None)
@given(programs, shapes, st.integers(0, 1000), st.sampled_from(["rev", "fwd"]))
def test_random_programs(steps, shape, seed, mode):
    def f(x, r, c):
        return run_program(steps, x, r, c)

    args = program_args(shape, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fallback to the full coloring is still exact
        plan = jacobian_plan(f, *args, mode=mode, constant_entries="reuse")
    full = jacobian_plan(f, *args, mode=mode)
    assert plan.constant_nnz + plan.variable_nnz == plan.nnz == full.nnz
    for k in (1, 2):
        new = program_args(shape, seed + 7919 * k)
        J = plan(*new)
        assert_matches(J, dense_jacobian(f, *new), atol=1e-9)
        same_layout(J, full(*new))


def test_all_constant():
    A = torch.randn(6, 4, dtype=torch.float64, generator=_g)
    calls = []

    def f(x):
        calls.append(1)
        return A @ x

    x = torch.randn(4, dtype=torch.float64)
    plan = reuse(f, x)
    assert plan.num_colors == 0 and plan.variable_nnz == 0 and plan.constant_nnz == 24
    y = torch.randn(4, dtype=torch.float64)
    value, J = plan.value_and_jacobian(y)
    torch.testing.assert_close(J.to_dense(), A, rtol=0, atol=0)
    torch.testing.assert_close(value, A @ y)
    J.values().zero_()  # the caller owns the result: the next call is unaffected
    torch.testing.assert_close(plan(y).to_dense(), A, rtol=0, atol=0)


def test_all_variable():
    f = lambda x: torch.sin(x) * x.roll(1)  # noqa: E731
    x = torch.randn(9, dtype=torch.float64)
    plan, full = reuse(f, x), jacobian_plan(f, x)
    assert plan.constant_nnz == 0 and plan.variable_nnz == plan.nnz
    assert plan.num_colors == full.num_colors
    y = torch.randn(9, dtype=torch.float64)
    assert_matches(plan(y), dense_jacobian(f, y))


# ----------------------------------------------------------------------------
# Cancellation: fall back to the full coloring where the subtraction loses digits
# ----------------------------------------------------------------------------


def stiff(x):
    """Constant neighbours of size 1e4 share compressed slots with O(1) variable diagonals."""
    return x * x + 1e4 * (x.roll(1) + x.roll(-1))


def test_float32_large_constants_fall_back():
    x = torch.rand(16, dtype=torch.float32) + 0.5
    with pytest.warns(RuntimeWarning, match="digits of torch.float32"):
        plan = jacobian_plan(stiff, x, constant_entries="reuse")
    assert plan.constant_entries == "recompute"
    assert plan.num_colors == jacobian_plan(stiff, x).num_colors > 1
    assert plan.constant_nnz == 32 and plan.variable_nnz == 16
    y = torch.rand(16, dtype=torch.float32) + 0.5
    torch.testing.assert_close(plan(y).to_dense(), dense_jacobian(stiff, y))


def test_float64_large_constants_reuse():
    x = torch.rand(16, dtype=torch.float64) + 0.5
    plan = reuse(stiff, x)
    assert plan.constant_entries == "reuse" and plan.num_colors == 1
    assert plan.worst_cancellation > 1e3  # would have failed in float32
    y = torch.rand(16, dtype=torch.float64) + 0.5
    assert_matches(plan(y), dense_jacobian(stiff, y), atol=1e-8)


# ----------------------------------------------------------------------------
# Guards: what the constants were computed from
# ----------------------------------------------------------------------------


def test_non_differentiated_arguments_are_guarded():
    def f(x, idx, scale):
        return x * x + scale * x[idx]

    x, idx = torch.rand(6, dtype=torch.float64), torch.tensor([5, 4, 3, 2, 1, 0])
    plan = reuse(f, x, idx, 2.0)
    y = torch.rand(6, dtype=torch.float64)
    assert_matches(plan(y, idx.clone(), 2.0), dense_jacobian(lambda z: f(z, idx, 2.0), y))
    with pytest.raises(ValueError, match="argument 1 is not differentiated"):
        plan(y, idx.flip(0), 2.0)
    with pytest.raises(ValueError, match="argument 2 is not differentiated"):
        plan(y, idx, 3.0)
    idx[0] = 1  # written in place after build: the copy the plan kept tells
    with pytest.raises(ValueError, match="argument 1"):
        plan(y, idx, 2.0)


def test_check_catches_a_changed_closure():
    W = torch.tensor([1.0, -2.0, 3.0, 0.5, 1.5, -1.0], dtype=torch.float64)

    def f(x):
        return W * x + x.roll(1) ** 2

    x = torch.rand(6, dtype=torch.float64)
    plan = reuse(f, x)
    plan.check(torch.rand(6, dtype=torch.float64))  # consistent while W is unchanged
    W.mul_(3.0)  # the closure changes in place: the plan's constants are stale
    with pytest.raises(JacobianCheckError):
        plan.check(torch.rand(6, dtype=torch.float64))


def test_bad_options():
    x = torch.rand(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="constant_entries"):
        jacobian_plan(torch.sin, x, constant_entries="yes")
    with pytest.raises(ValueError, match="pattern="):
        jacobian_plan(torch.sin, x, constant_entries="reuse", pattern=trackjac.jacobian_sparsity(torch.sin, x))


class _Cube(torch.autograd.Function):
    """No forward-mode derivative: mode="auto" must switch a column-colored plan to rows."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


def test_switch_to_reverse_mode_recomputes_the_contamination():
    def f(x):  # a dense variable column 0: the column coloring wins, but f has no jvp
        return _Cube.apply(x) * x[0] + 3.0 * x.roll(1)

    x = torch.rand(10, dtype=torch.float64)
    plan = jacobian_plan(f, x, constant_entries="reuse")
    assert plan.mode == "fwd" and plan.constant_nnz > 0
    y = torch.rand(10, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="switches this plan to reverse mode"):
        J = plan(y)
    assert plan.mode == "rev" and plan.constant_entries == "reuse"
    assert_matches(J, dense_jacobian(f, y))
    z = torch.rand(10, dtype=torch.float64)
    assert_matches(plan(z), dense_jacobian(f, z))
