"""Sparse Jacobian engine: values vs torch.autograd.functional.jacobian, layouts, plans, checks, errors."""
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import trackjac
from trackjac import JacobianCheckError, check_jacobian, jacobian, jacobian_plan
from trackjac import Plan

from dense_reference import dense_jacobian
from problems import brusselator, brusselator_pattern, brusselator_point, bundle_adjustment  # benches/problems.py

LAYOUTS = [(torch.sparse_coo, None), (torch.sparse_csr, None), (torch.sparse_bsr, (1, 1))]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def value_pattern(f, *args):
    """A pattern read off the dense Jacobian's nonzeros (valid at this point)."""
    D = dense_jacobian(f, *args)
    return _map(lambda b: (b != 0).to_sparse().coalesce(), D)


def _map(fn, x):
    return tuple(_map(fn, y) for y in x) if isinstance(x, tuple) else fn(x)


def _leaves(x):
    return [z for y in x for z in _leaves(y)] if isinstance(x, tuple) else [x]


def assert_matches(J, D, layout=torch.sparse_coo, atol=1e-10):
    Jl, Dl = _leaves(J), _leaves(D)
    assert len(Jl) == len(Dl)
    assert type(J) is type(D)
    for a, b in zip(Jl, Dl):
        assert a.layout == layout
        assert a.shape == b.shape
        torch.testing.assert_close(a.to_dense(), b, atol=atol, rtol=1e-8)


# ----------------------------------------------------------------------------
# Random sparse-structured programs
# ----------------------------------------------------------------------------

UNARY = {
    "sin": torch.sin,
    "exp": lambda a: torch.exp(0.3 * a),
    "square": lambda a: a * a,
    "tanh": torch.tanh,
    "flip": lambda a: torch.flip(a, (0,)),
    "roll1": lambda a: torch.roll(a, 1, 0),
    "rollm2": lambda a: torch.roll(a, -2, 0),
    "cumsum": lambda a: torch.cumsum(a, 0),
    "stencil": lambda a: torch.roll(a, 1, 0) - 2 * a + torch.roll(a, -1, 0),
    "every2": lambda a: a[::2],
    "tail": lambda a: a[1:],
    "pairsum": lambda a: a[: a.numel() // 2 * 2].reshape(-1, 2).sum(1),
    "blockmix": lambda a: (a[: a.numel() // 3 * 3].reshape(-1, 3) @ _W3).reshape(-1),
}
_W3 = torch.tensor([[1.0, 0.5, 0.0], [0.0, 2.0, -1.0], [0.3, 0.0, 1.0]], dtype=torch.float64)
BINARY = {
    "mul": lambda a, b: a * b,
    "add": lambda a, b: a + 2 * b,
    "cat": lambda a, b: torch.cat([a, b]),
    "outer_sum": lambda a, b: (a[:3].unsqueeze(1) * b[:2].unsqueeze(0)).reshape(-1),
}


@st.composite
def programs(draw):
    n_in = draw(st.integers(1, 3))
    sizes = [draw(st.integers(3, 9)) for _ in range(n_in)]
    steps = []
    n_vals = n_in
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            steps.append(("u", draw(st.sampled_from(sorted(UNARY))), draw(st.integers(0, n_vals - 1))))
        else:
            a, b = draw(st.integers(0, n_vals - 1)), draw(st.integers(0, n_vals - 1))
            steps.append(("b", draw(st.sampled_from(sorted(BINARY))), a, b))
        n_vals += 1
    n_out = draw(st.integers(1, 2))
    outs = [n_vals - 1 - k for k in range(n_out)]
    as_tuple = n_out > 1 or draw(st.booleans())
    seed = draw(st.integers(0, 10_000))
    return sizes, steps, outs, as_tuple, seed


def build(program):
    sizes, steps, outs, as_tuple, seed = program

    def f(*xs):
        vals = list(xs)
        for s in steps:
            if s[0] == "u":
                a = vals[s[2]]
                vals.append(UNARY[s[1] if a.numel() >= 4 else "sin"](a))  # never an empty output
            else:
                a, b = vals[s[2]], vals[s[3]]
                if s[1] in ("mul", "add"):  # align lengths by truncation
                    k = min(a.numel(), b.numel())
                    a, b = a[:k], b[:k]
                elif s[1] == "outer_sum" and (a.numel() < 3 or b.numel() < 2):
                    a, b = torch.cat([a, a, a]), torch.cat([b, b])
                vals.append(BINARY[s[1]](a, b))
        res = [vals[i] for i in outs]
        return tuple(res) if as_tuple else res[0]

    g = torch.Generator().manual_seed(seed)
    args = [torch.randn(n, generator=g, dtype=torch.float64) for n in sizes]
    return f, args


@settings(max_examples=30, deadline=None)
@given(programs(), st.sampled_from(["rev", "fwd", "auto"]), st.sampled_from([None, 1, 2]))
def test_random_programs_with_explicit_pattern(program, mode, chunk):
    f, args = build(program)
    D = dense_jacobian(f, *args)
    J = jacobian(f, *args, pattern=value_pattern(f, *args), mode=mode, chunk_size=chunk)
    assert_matches(J, D)


@settings(max_examples=15, deadline=None)
@given(programs(), st.sampled_from(["rev", "fwd", "auto"]))
def test_random_programs_end_to_end(program, mode):
    f, args = build(program)
    D = dense_jacobian(f, *args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        J = jacobian(f, *args, mode=mode)
    assert_matches(J, D)


@settings(max_examples=10, deadline=None)
@given(programs(), st.sampled_from(LAYOUTS[:2]))
def test_random_programs_plans_at_new_points(program, layout):
    f, args = build(program)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = jacobian_plan(f, *args, layout=layout[0])
    new = [a + 0.5 * torch.randn_like(a) for a in args]
    assert_matches(plan(*new), dense_jacobian(f, *new), layout[0])


# ----------------------------------------------------------------------------
# Layouts, modes, chunks on the benchmark problems
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rev", "fwd", "auto"])
@pytest.mark.parametrize("layout,blocksize", [(torch.sparse_coo, None), (torch.sparse_csr, None),
                                              (torch.sparse_bsr, (2, 2)), (torch.sparse_bsr, (8, 4))])
def test_brusselator_layouts(mode, layout, blocksize):
    x = brusselator_point(8)
    J = jacobian(brusselator, x, mode=mode, layout=layout, blocksize=blocksize, pattern=brusselator_pattern(8))
    assert_matches(J, dense_jacobian(brusselator, x), layout)
    if layout == torch.sparse_bsr:
        R, C = blocksize
        blocks = (dense_jacobian(brusselator, x) != 0).reshape(128 // R, R, 128 // C, C).any(3).any(1)
        assert J.values().shape == (int(blocks.sum()), R, C)  # exactly the blocks holding a nonzero


def test_bundle_adjustment_bsr_and_chunks():
    ba = bundle_adjustment(6, 25, seed=1)
    D = dense_jacobian(ba.residual, *ba.args)
    for mode in ("rev", "fwd"):
        for chunk in (None, 1, 5):
            J = jacobian(ba.residual, *ba.args, mode=mode, chunk_size=chunk, pattern=ba.pattern())
            assert_matches(J, D)
    # 2 residuals x 9 camera parameters and 2 x 3 point coordinates per observation
    Jc, Jp = jacobian(ba.residual, *ba.args, layout=torch.sparse_bsr, pattern=ba.pattern(),
                      blocksize=(2, 3))
    assert_matches((Jc, Jp), D, torch.sparse_bsr)
    assert Jp.values().shape[0] == ba.cam_idx.numel()  # one 2x3 block per observation


def test_detected_pattern_is_used_end_to_end():
    ba = bundle_adjustment(4, 12, seed=2)
    J = jacobian(ba.residual, *ba.args)
    assert_matches(J, dense_jacobian(ba.residual, *ba.args))
    plan = jacobian_plan(ba.residual, *ba.args)
    for p, q in zip(plan.pattern, ba.pattern()):
        assert torch.equal(p.indices(), q.indices())


def test_nesting_matches_torch():
    x, y = torch.randn(4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)

    def one_out(x, y):
        return torch.cat([x.sin(), y * 2])

    def two_out(x, y):
        return x * 3, torch.cat([y, x[:1]])

    def tuple_of_one(x):
        return (x.exp(),)

    for f, args in ((one_out, (x, y)), (two_out, (x, y)), (tuple_of_one, (x,)), (torch.sin, (x,))):
        J = jacobian(f, *args, pattern=value_pattern(f, *args))
        assert_matches(J, dense_jacobian(f, *args))


def test_non_floating_arguments_pass_through():
    idx = torch.tensor([2, 0, 1])

    def f(x, index, scale):
        return x[index] * scale

    x = torch.randn(3, dtype=torch.float64)
    J = jacobian(f, x, idx, 2.0)
    torch.testing.assert_close(J.to_dense(), 2.0 * torch.eye(3, dtype=torch.float64)[idx])
    plan = jacobian_plan(f, x, idx, 2.0)
    torch.testing.assert_close(plan(x, idx, 3.0).to_dense(), 3.0 * torch.eye(3, dtype=torch.float64)[idx])


def test_scalars_and_empty_jacobian():
    x = torch.tensor(0.7, dtype=torch.float64)
    J = jacobian(lambda x: x.sin(), x)
    assert J.shape == (1, 1) and torch.allclose(J.to_dense(), torch.cos(x).reshape(1, 1))
    v = torch.randn(5, dtype=torch.float64)
    for mode in ("rev", "fwd"):
        Z = jacobian(lambda v: torch.ones(3, dtype=v.dtype), v, mode=mode)
        assert Z.shape == (3, 5) and Z._nnz() == 0
        plan = jacobian_plan(lambda v: torch.ones(3, dtype=v.dtype), v, mode=mode, layout=torch.sparse_csr)
        assert plan.num_colors == 0
        value, Z = plan.value_and_jacobian(v)
        assert torch.equal(value, torch.ones(3, dtype=v.dtype)) and Z.to_dense().abs().sum() == 0


def test_float32():
    x = brusselator_point(6, dtype=torch.float32)
    J = jacobian(brusselator, x)
    assert J.dtype == torch.float32
    torch.testing.assert_close(J.to_dense(), dense_jacobian(brusselator, x), atol=1e-4, rtol=1e-5)


# ----------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------


def test_plan_reuse_and_attributes():
    x0 = brusselator_point(10, seed=0)
    plan = jacobian_plan(brusselator, x0, layout=torch.sparse_csr)
    assert isinstance(plan, Plan)
    assert plan.mode in ("rev", "fwd") and 6 <= plan.num_colors <= 10
    assert plan.nnz == 6 * 200
    assert torch.equal(plan.pattern.indices(), brusselator_pattern(10).indices())
    for seed in (1, 2):
        x = brusselator_point(10, seed=seed)
        assert_matches(plan(x), dense_jacobian(brusselator, x), torch.sparse_csr)
        value, J = plan.value_and_jacobian(x)
        torch.testing.assert_close(value, brusselator(x))
        assert_matches(J, dense_jacobian(brusselator, x), torch.sparse_csr)
    assert "Plan(" in repr(plan)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_plan_value_and_jacobian_several_outputs(mode):
    ba = bundle_adjustment(3, 8, seed=3)

    def f(cams, pts):
        r = ba.residual(cams, pts)
        return r, (pts * pts).sum(1)

    plan = jacobian_plan(f, *ba.args, mode=mode, chunk_size=4)
    assert plan.mode == mode
    value, J = plan.value_and_jacobian(*ba.args)
    torch.testing.assert_close(value[0], f(*ba.args)[0])
    torch.testing.assert_close(value[1], f(*ba.args)[1])
    assert_matches(J, dense_jacobian(f, *ba.args))


def test_plan_rejects_other_specs():
    x = brusselator_point(6)
    plan = jacobian_plan(brusselator, x)
    with pytest.raises(ValueError, match="shape"):
        plan(brusselator_point(7))
    with pytest.raises(ValueError, match="float32"):
        plan(x.float())
    with pytest.raises(ValueError, match="arguments"):
        plan(x, x)
    with pytest.raises(ValueError, match="tensor"):
        plan(3.0)


def test_plan_detects_changed_control_flow():
    def f(x):
        return x * 2 if x.sum() > 0 else x[:2] * 3

    x = torch.ones(4, dtype=torch.float64)
    plan = jacobian_plan(f, x, pattern=torch.eye(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="control-flow path"):
        plan(-x)


def test_chunks_bound_the_batch():
    calls = []

    def f(x):
        calls.append(1)
        return torch.roll(x, 1) * x

    x = torch.randn(12, dtype=torch.float64)
    plan = jacobian_plan(f, x, mode="fwd", chunk_size=1, pattern=value_pattern(f, x))
    assert plan.num_colors == 2 and plan.chunk_size == 1
    assert all(s[0].shape[0] == 1 for s in plan._seeds)
    D = dense_jacobian(f, x)
    plan(x)  # the first call also compares two colors with plain autograd
    calls.clear()
    J = plan(x)
    assert len(calls) == plan.num_colors  # one traced jvp per chunk of one color
    assert_matches(J, D)


def test_compile_falls_back_with_a_warning(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    x = brusselator_point(5)
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        plan = jacobian_plan(brusselator, x, compile=True)
    assert_matches(plan(x), dense_jacobian(brusselator, x))


def test_compiled_plan_failing_at_run_time_falls_back(monkeypatch):
    def compile_to_failure(fn, **kw):
        def run(*a):
            raise RuntimeError("backend exploded")
        return run

    monkeypatch.setattr(torch, "compile", compile_to_failure)
    x = brusselator_point(5)
    plan = jacobian_plan(brusselator, x, compile=True)
    with pytest.warns(RuntimeWarning, match="compiled plan failed"):
        J = plan(x)
    assert_matches(J, dense_jacobian(brusselator, x))


# ----------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------


def test_check_passes_on_correct_jacobians():
    ba = bundle_adjustment(4, 10, seed=4)
    check_jacobian(ba.residual, *ba.args, rows=20, cols=20)
    jacobian(ba.residual, *ba.args, verify=True, layout=torch.sparse_bsr, blocksize=(2, 3))
    plan = jacobian_plan(brusselator, brusselator_point(6), verify=True)
    plan.check(brusselator_point(6, seed=5), rows=30, cols=30)


def test_check_catches_a_missing_dependency():
    x = torch.randn(10, dtype=torch.float64)
    wrong = torch.eye(10, dtype=torch.bool)  # misses the roll
    J = jacobian(lambda x: x * torch.roll(x, 1), x, pattern=wrong)
    with pytest.raises(JacobianCheckError, match="no entry there"):
        check_jacobian(lambda x: x * torch.roll(x, 1), x, jac=J, rows=10)
    with pytest.raises(JacobianCheckError):
        jacobian(lambda x: x * torch.roll(x, 1), x, pattern=wrong, verify=True)


def test_check_catches_wrong_values():
    x = torch.randn(6, dtype=torch.float64)
    J = jacobian(torch.sin, x)
    bad = torch.sparse_coo_tensor(J.indices(), J.values() + 1, J.shape)
    with pytest.raises(JacobianCheckError, match="differs from autograd"):
        check_jacobian(torch.sin, x, jac=bad, rows=6)


class _RolledBackward(torch.autograd.Function):
    """Forward is the identity but backward claims a shifted derivative (like a straight-through hack)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return torch.roll(g, 1)

    @staticmethod
    def jvp(ctx, t):
        return torch.roll(t, -1)


def test_custom_function_disagreeing_with_its_pattern_is_caught():
    x = torch.randn(8, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(JacobianCheckError):
            jacobian(_RolledBackward.apply, x, verify=True, pattern=torch.eye(8, dtype=torch.bool))


class _OldStyle(torch.autograd.Function):
    """An autograd.Function torch.func cannot transform (no setup_context)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def test_functions_torch_func_cannot_transform_fall_back_to_a_loop():
    x = torch.randn(7, dtype=torch.float64)
    pattern = torch.eye(7, dtype=torch.bool)
    with pytest.warns(RuntimeWarning, match="one color at a time"):
        J = jacobian(_OldStyle.apply, x, pattern=pattern, mode="rev")
    torch.testing.assert_close(J.to_dense(), torch.diag(2 * x))
    check_jacobian(_OldStyle.apply, x, jac=J)


def _old_style_wide(x):
    """9 outputs from 3 inputs (of 4): mode="auto" prefers forward mode (1 color vs 3)."""
    return _OldStyle.apply(x[:3]).repeat(3)


def test_detected_pattern_of_a_function_through_views_is_plain():
    x = torch.randn(4, dtype=torch.float64)
    P = trackjac.jacobian_sparsity(_old_style_wide, x)   # the view x[:3] is gathered inside tracking()
    assert type(P) is torch.Tensor and P.layout == torch.sparse_coo
    assert torch.equal(P.to_dense(), torch.eye(3, 4, dtype=torch.bool).repeat(3, 1))


def test_auto_mode_switches_to_rev_when_f_has_no_forward_derivative():
    x = torch.randn(4, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = jacobian_plan(_old_style_wide, x)
        J = plan(x)
    assert plan.mode == "rev" and plan.num_colors == 3
    assert any("switches this plan to reverse mode" in str(w.message) for w in caught)
    torch.testing.assert_close(J.to_dense(), dense_jacobian(_old_style_wide, x))
    torch.testing.assert_close(plan(2 * x).to_dense(), dense_jacobian(_old_style_wide, 2 * x))
    with pytest.warns(RuntimeWarning):
        torch.testing.assert_close(jacobian(_old_style_wide, x).to_dense(), dense_jacobian(_old_style_wide, x))
    with pytest.raises(RuntimeError, match="mode='rev'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jacobian(_old_style_wide, x, mode="fwd")


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


def test_errors():
    x = torch.randn(4, dtype=torch.float64)
    eye = torch.eye(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="layout"):
        jacobian(torch.sin, x, layout=torch.strided, pattern=eye)
    with pytest.raises(ValueError, match="mode"):
        jacobian(torch.sin, x, mode="sideways", pattern=eye)
    with pytest.raises(ValueError, match="needs blocksize"):
        jacobian(torch.sin, x, layout=torch.sparse_bsr, pattern=eye)
    with pytest.raises(ValueError, match="not a multiple"):
        jacobian(torch.sin, x, layout=torch.sparse_bsr, blocksize=(3, 1), pattern=eye)
    with pytest.raises(ValueError, match="only applies"):
        jacobian(torch.sin, x, blocksize=(2, 2), pattern=eye)
    with pytest.raises(ValueError, match="chunk_size"):
        jacobian(torch.sin, x, chunk_size=0, pattern=eye)
    with pytest.raises(ValueError, match="does not match"):
        jacobian(torch.sin, x, pattern=torch.eye(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="nested"):
        jacobian(lambda a, b: a * b, x, x, pattern=eye)
    with pytest.raises(TypeError, match="floating-point"):
        jacobian(lambda i: i * 2, torch.arange(3))
    with pytest.raises(TypeError, match="complex"):
        jacobian(torch.sin, torch.randn(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="tensor or a tuple"):
        jacobian(lambda v: [v, "label"], x, pattern=(eye, eye))
    with pytest.raises(TypeError, match="Jacobian"):
        jacobian(lambda v: (v > 0).long(), x, pattern=eye)
    with pytest.raises(ValueError, match="coloring"):
        jacobian(torch.sin, x, pattern=eye, coloring="perfect")


# ----------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ----------------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("layout,blocksize", [(torch.sparse_coo, None), (torch.sparse_csr, None),
                                              (torch.sparse_bsr, (2, 2))])
def test_cuda_results_stay_on_the_device(layout, blocksize):
    x = brusselator_point(8, device="cuda")
    for mode in ("rev", "fwd"):
        J = jacobian(brusselator, x, mode=mode, layout=layout, blocksize=blocksize)
        assert J.device.type == "cuda"
        torch.testing.assert_close(J.to_dense().cpu(), dense_jacobian(brusselator, x.cpu()))


@CUDA
def test_cuda_plan():
    ba = bundle_adjustment(5, 20, device="cuda")
    plan = jacobian_plan(ba.residual, *ba.args, layout=torch.sparse_bsr, blocksize=(2, 3))
    assert all(s.device.type == "cuda" for chunk in plan._seeds for s in chunk)
    J = plan(*ba.args)
    D = dense_jacobian(ba.residual, *(a.cpu() for a in ba.args))
    for a, b in zip(J, D):
        assert a.device.type == "cuda"
        torch.testing.assert_close(a.to_dense().cpu(), b)
    with pytest.raises(ValueError, match="cuda"):
        plan(*(a.cpu() for a in ba.args))


def test_local_pattern_drops_only_zeros_here():
    x = torch.tensor([1.0, -2.0, 3.0, -0.5], dtype=torch.float64)

    def f(x):
        return torch.relu(x) * torch.roll(x, 1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        J_local = jacobian(f, x, local=True)
        J_global = jacobian(f, x)
    assert J_local._nnz() <= J_global._nnz()
    assert_matches(J_local, dense_jacobian(f, x))
    assert_matches(J_global, dense_jacobian(f, x))


@pytest.mark.skipif(not __import__("os").environ.get("TRACKJAC_TEST_COMPILE"),
                    reason="compiling takes 5-30 s on CPU; set TRACKJAC_TEST_COMPILE=1")
def test_compiled_plan_matches_eager():
    x = brusselator_point(6)
    plan = jacobian_plan(brusselator, x, compile=True)
    for seed in (0, 1):
        y = brusselator_point(6, seed=seed)
        assert_matches(plan(y), dense_jacobian(brusselator, y))
    assert plan._compiled is not None


def test_constant_zeros_drop_is_exact():
    x = torch.randn(5, dtype=torch.float64)
    mask = torch.eye(5, dtype=torch.float64)

    def f(x):
        return mask @ torch.sin(x)  # an eye mask: participation keeps 25 entries, value-aware 5

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep = jacobian(f, x)
        drop = jacobian(f, x, constant_zeros="drop")
        plan = jacobian_plan(f, x, constant_zeros="drop")
    assert drop._nnz() <= keep._nnz()
    for J in (keep, drop, plan(x)):
        assert_matches(J, dense_jacobian(f, x))


def test_memory_budget_sets_the_chunk():
    x = brusselator_point(6)                      # n = 72 outputs and inputs, float64
    per_color = (72 + 72) * 8
    plan = jacobian_plan(brusselator, x, memory_budget=3 * per_color + 5)
    assert plan.chunk_size == 3 and plan.num_colors > 3
    J = dense_jacobian(brusselator, x)
    torch.testing.assert_close(plan(x).to_dense(), J)
    assert jacobian_plan(brusselator, x, memory_budget=1).chunk_size == 1
    torch.testing.assert_close(jacobian(brusselator, x, memory_budget=2 * per_color, mode="fwd").to_dense(), J)
    with pytest.raises(ValueError, match="not both"):
        jacobian_plan(brusselator, x, memory_budget=10**6, chunk_size=2)
    with pytest.raises(ValueError, match="memory_budget"):
        jacobian_plan(brusselator, x, memory_budget=0)
