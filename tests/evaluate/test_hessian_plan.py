"""Sparse Hessians and Hessian plans against ``torch.autograd.functional.hessian`` at the same point."""
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import trackjac
from trackjac import HessianPlan, JacobianCheckError, PathChangedError, hessian, hessian_plan

from dense_reference import as_dense, assert_equal, assert_sound
from problems import PerSampleMLP, arrowhead_cost, ba_cost, bundle_adjustment, rosenbrock, sparse_quadratic

D = torch.float64
SETTINGS = dict(max_examples=15, deadline=None)


def dense_hessian(f, *args):
    """``torch.autograd.functional.hessian`` as 2-D blocks, nested like :func:`trackjac.hessian`."""
    H = torch.autograd.functional.hessian(f, args if len(args) > 1 else args[0])
    if len(args) == 1:
        return H.reshape(args[0].numel(), args[0].numel())
    return tuple(tuple(H[a][b].reshape(args[a].numel(), args[b].numel()) for b in range(len(args)))
                 for a in range(len(args)))


def grid(h, k):
    return [list(r) for r in h] if k > 1 else [[h]]


def assert_values(got, f, *args, tol=1e-9):
    """Values equal to the dense Hessian, and the pattern sound at this point."""
    want = dense_hessian(f, *args)
    for g_row, w_row in zip(grid(got, len(args)), grid(want, len(args))):
        for g, w in zip(g_row, w_row):
            assert g.shape == w.shape
            dense = g.to_dense()
            scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
            assert torch.allclose(dense, w, rtol=1e-9, atol=tol * scale), float((dense - w).abs().max())
            coo = g.to_sparse_coo() if g.layout != torch.sparse_coo else g
            stored = torch.zeros(w.shape, dtype=torch.bool)
            idx = coo.coalesce().indices()
            stored[idx[0], idx[1]] = True
            assert_sound(stored, w != 0)


# ----------------------------------------------------------------------------
# Problems with known structure
# ----------------------------------------------------------------------------


@settings(**SETTINGS)
@given(n=st.integers(2, 40), seed=st.integers(0, 1000))
def test_rosenbrock_tridiagonal(n, seed):
    x = torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(seed))
    plan = hessian_plan(rosenbrock, x)
    assert_values(plan(x), rosenbrock, x)
    tri = (torch.arange(n).unsqueeze(0) - torch.arange(n).unsqueeze(1)).abs() <= 1
    assert_equal(plan.pattern, tri)
    assert plan.nnz == 3 * n - 2
    assert plan.num_colors <= 3   # tridiagonal: 3 colors suffice, even as a column coloring
    x2 = torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(seed + 1))
    assert_values(plan(x2), rosenbrock, x2)   # the plan is reused at another point


@settings(**SETTINGS)
@given(n=st.integers(1, 30), per_row=st.integers(1, 4), seed=st.integers(0, 1000))
def test_sparse_quadratic(n, per_row, seed):
    f, A = sparse_quadratic(n, per_row, seed=seed)
    A = A.to_dense()
    x = torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(seed))
    H = hessian(f, x)
    assert_values(H, f, x)
    # the pattern is that of A + A^T exactly (no value of x can add or remove an entry)
    assert_equal(trackjac.hessian_sparsity(f, x), (A != 0) | (A.T != 0))


@settings(**SETTINGS)
@given(n=st.integers(1, 25), per_row=st.integers(1, 4), extra=st.integers(0, 20), seed=st.integers(0, 1000),
       chunk=st.sampled_from([None, 1, 3]))
def test_given_symmetric_pattern_with_extra_entries(n, per_row, extra, seed, chunk):
    """Any symmetric superset of the true pattern gives the exact Hessian, zeros at the extra entries
    (the coloring and decompression of random symmetric patterns)."""
    f, A = sparse_quadratic(n, per_row, seed=seed)
    H_true = (A + A.T).to_dense()
    g = torch.Generator().manual_seed(seed)
    pat = H_true != 0
    r, c = torch.randint(0, n, (2, extra), generator=g)
    pat[r, c] = pat[c, r] = True
    x = torch.randn(n, dtype=D, generator=g)
    plan = hessian_plan(f, x, pattern=pat, chunk_size=chunk)
    H = plan(x).to_dense()
    assert torch.allclose(H, H_true, rtol=1e-12, atol=1e-12)
    assert plan.nnz == int(pat.sum())
    assert_equal(plan.pattern, pat)


def test_bundle_adjustment_blocks():
    ba = bundle_adjustment(4, 10, obs_per_pt=2)
    f = ba_cost(ba)
    plan = hessian_plan(f, *ba.args)
    H = plan(*ba.args)
    assert_values(H, f, *ba.args, tol=1e-10)
    (cc, cp), (pc, pp) = (tuple(as_dense(b) for b in r) for r in plan.pattern)
    # cameras and points only interact with themselves and through observations
    C, P = ba.cams.shape[0], ba.pts.shape[0]
    seen = torch.zeros(C, P, dtype=torch.bool)
    seen[ba.cam_idx, ba.pt_idx] = True
    assert_equal(cp, seen.repeat_interleave(9, 0).repeat_interleave(3, 1))
    assert torch.equal(pc, cp.T)
    assert_equal(cc, torch.block_diag(*[torch.ones(9, 9, dtype=torch.bool)] * C))
    assert_equal(pp, torch.block_diag(*[torch.ones(3, 3, dtype=torch.bool)] * P))


@settings(**SETTINGS)
@given(n=st.integers(2, 30), seed=st.integers(0, 1000))
def test_arrowhead(n, seed):
    x = torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(seed))
    plan = hessian_plan(arrowhead_cost, x)
    assert_values(plan(x), arrowhead_cost, x)
    arrow = torch.eye(n, dtype=torch.bool)
    arrow[0, :] = arrow[:, 0] = True
    assert_equal(plan.pattern, arrow)


@settings(**SETTINGS)
@given(B=st.integers(1, 6), d=st.integers(1, 5), seed=st.integers(0, 1000))
def test_per_sample_mlp_block_diagonal(B, d, seed):
    loss = PerSampleMLP(d, hidden=8, seed=seed)
    X = torch.randn(B, d, dtype=D, generator=torch.Generator().manual_seed(seed))
    plan = hessian_plan(loss, X)
    assert_values(plan(X), loss, X)
    assert_equal(plan.pattern, torch.block_diag(*[torch.ones(d, d, dtype=torch.bool)] * B))
    assert plan.num_colors == d


# ----------------------------------------------------------------------------
# Generated programs over several inputs
# ----------------------------------------------------------------------------

UNARY = [torch.sin, torch.exp, torch.tanh, lambda t: t * t, lambda t: t]


@st.composite
def programs(draw):
    """``f(x, y)`` = a sum of terms ``u(x[i]) * v(y[j])``, ``u(x[i] + x[k])``, ``u(y[j]) * y[j]``."""
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    terms = draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, len(UNARY) - 1),
                                    st.integers(0, len(UNARY) - 1), st.integers(0, n - 1),
                                    st.integers(0, m - 1), st.integers(0, n - 1)), min_size=1, max_size=6))

    def f(x, y):
        out = (x * 0).sum()
        for kind, u, v, i, j, k in terms:
            if kind == 0:
                out = out + UNARY[u](x[i]) * UNARY[v](y[j])
            elif kind == 1:
                out = out + UNARY[u](x[i] + x[k])
            else:
                out = out + UNARY[u](y[j]).sum() * y[j]
        return out

    return f, n, m


@settings(**SETTINGS)
@given(prog=programs(), seed=st.integers(0, 1000))
def test_generated_programs_several_inputs(prog, seed):
    f, n, m = prog
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, dtype=D, generator=g), torch.randn(m, dtype=D, generator=g)
    plan = hessian_plan(f, x, y)
    H = plan(x, y)
    assert isinstance(H, tuple) and len(H) == 2 and all(len(r) == 2 for r in H)
    assert H[0][1].shape == (n, m) and H[1][0].shape == (m, n)
    assert_values(H, f, x, y)
    value, grad, H2 = plan.value_and_hessian(x, y)
    gx, gy = torch.func.grad(f, argnums=(0, 1))(x, y)
    assert torch.allclose(value, f(x, y)) and value.dim() == 0
    assert torch.allclose(grad[0], gx) and torch.allclose(grad[1], gy)
    assert_values(H2, f, x, y)


def test_non_float_arguments_pass_through():
    def f(x, idx, scale):
        return scale * (x[idx] ** 3).sum()

    x = torch.randn(6, dtype=D)
    idx = torch.tensor([0, 2, 2, 5])
    H = hessian(f, x, idx, 2.0)
    assert_values(H, lambda t: f(t, idx, 2.0), x)


# ----------------------------------------------------------------------------
# Layouts, chunks, value and gradient
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout,blocksize", [(torch.sparse_coo, None), (torch.sparse_csr, None),
                                              (torch.sparse_bsr, (2, 2)), (torch.sparse_bsr, (4, 1))])
def test_layouts(layout, blocksize):
    x = torch.randn(12, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # torch: sparse CSR/BSR support is in beta
        plan = hessian_plan(rosenbrock, x, layout=layout, blocksize=blocksize)
        H = plan(x)
    assert H.layout == layout and plan.layout == layout
    assert_values(H, rosenbrock, x)


def test_layouts_several_inputs():
    ba = bundle_adjustment(3, 6, obs_per_pt=2)
    f = ba_cost(ba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        H = hessian(f, *ba.args, layout=torch.sparse_bsr, blocksize=(3, 3))
        assert all(b.layout == torch.sparse_bsr for r in H for b in r)
        assert_values(H, f, *ba.args, tol=1e-10)
        assert_values(hessian(f, *ba.args, layout=torch.sparse_csr), f, *ba.args, tol=1e-10)


@pytest.mark.parametrize("opts", [dict(chunk_size=1), dict(chunk_size=2), dict(memory_budget=1)])
def test_chunks_give_the_same_hessian(opts):
    X = torch.randn(5, 3, dtype=D)
    loss = PerSampleMLP(3, hidden=8)
    plan = hessian_plan(loss, X, **opts)
    assert plan.chunk_size == opts.get("chunk_size", 1)
    assert_values(plan(X), loss, X)
    v, g, H = plan.value_and_hessian(X)
    assert torch.allclose(v, loss(X)) and torch.allclose(g, torch.func.grad(loss)(X))


def test_value_and_hessian_one_input():
    x = torch.randn(10, dtype=D)
    plan = hessian_plan(rosenbrock, x)
    value, grad, H = plan.value_and_hessian(x)
    assert torch.equal(value, rosenbrock(x))
    assert grad.shape == x.shape and torch.allclose(grad, torch.func.grad(rosenbrock)(x))
    assert_values(H, rosenbrock, x)
    assert isinstance(plan, HessianPlan) and "num_colors" in repr(plan)


def test_one_element_output_and_constant_function():
    x = torch.randn(4, dtype=D)
    assert_values(hessian(lambda t: (t ** 3).sum().reshape(1, 1), x), lambda t: (t ** 3).sum(), x)
    H = hessian(lambda t: t.sum() * 2, x)   # linear: an empty Hessian
    assert H._nnz() == 0 and H.shape == (4, 4)
    plan = hessian_plan(lambda t: t.sum() * 2, x)
    assert plan.num_colors == 0
    v, g, _ = plan.value_and_hessian(x)
    assert torch.allclose(v, x.sum() * 2) and torch.allclose(g, torch.full_like(x, 2.0))


def test_local_and_verify():
    def f(x):
        return (x * torch.where(x > 0, x, torch.zeros_like(x))).sum()

    x = torch.tensor([1.0, -1.0, 2.0], dtype=D)
    H = hessian(f, x, local=True, verify=True)
    assert_values(H, f, x)


def test_pattern_argument_skips_detection():
    x = torch.randn(8, dtype=D)
    n = x.numel()
    tri = ((torch.arange(n).unsqueeze(0) - torch.arange(n).unsqueeze(1)).abs() <= 1).to_sparse()
    plan = hessian_plan(rosenbrock, x, pattern=tri, coloring="columns")
    assert_values(plan(x), rosenbrock, x)


# ----------------------------------------------------------------------------
# Errors and checks
# ----------------------------------------------------------------------------


def test_non_scalar_f_is_an_error():
    with pytest.raises(TypeError, match="scalar"):
        hessian_plan(lambda x: x ** 2, torch.randn(3, dtype=D))
    with pytest.raises(TypeError, match="scalar"):
        hessian(lambda x: (x ** 2, x), torch.randn(3, dtype=D))


def test_wrong_arguments_at_call_time():
    plan = hessian_plan(rosenbrock, torch.randn(5, dtype=D))
    with pytest.raises(ValueError, match="shape"):
        plan(torch.randn(6, dtype=D))
    with pytest.raises(ValueError, match="float32"):
        plan(torch.randn(5, dtype=torch.float32))
    with pytest.raises(ValueError, match="arguments"):
        plan(torch.randn(5, dtype=D), torch.randn(5, dtype=D))


def test_bad_options():
    x = torch.randn(4, dtype=D)
    with pytest.raises(ValueError, match="blocksize"):
        hessian_plan(rosenbrock, x, layout=torch.sparse_bsr)
    with pytest.raises(ValueError, match="layout"):
        hessian(rosenbrock, x, layout=torch.strided)
    with pytest.raises(ValueError, match="coloring"):
        hessian(rosenbrock, x, coloring="rainbow")
    with pytest.raises(ValueError, match="chunk_size"):
        hessian_plan(rosenbrock, x, chunk_size=0)
    with pytest.raises(ValueError, match="symmetric"):
        hessian(rosenbrock, x, pattern=torch.ones(4, 4, dtype=torch.bool).triu())
    with pytest.raises(ValueError, match="shape"):
        hessian(rosenbrock, x, pattern=torch.ones(3, 3, dtype=torch.bool))


def test_check_catches_a_missing_entry():
    x = torch.randn(6, dtype=D)
    plan = hessian_plan(rosenbrock, x)
    plan.check(x, rows=6)   # the detected pattern is right
    wrong = as_dense(plan.pattern).clone()
    wrong[2, 3] = wrong[3, 2] = False
    bad = hessian_plan(rosenbrock, x, pattern=wrong)
    assert bad.nnz == plan.nnz - 2
    # the missing entry is reported, or first a value it contaminated (colorings that share it)
    with pytest.raises(JacobianCheckError, match="no entry|differs"):
        bad.check(x, rows=6)


def test_check_catches_wrong_values():
    x = torch.randn(6, dtype=D)
    H = hessian(rosenbrock, x)
    H = torch.sparse_coo_tensor(H.indices(), H.values() * 1.5, H.shape, check_invariants=True).coalesce()
    with pytest.raises(JacobianCheckError, match="differs"):
        trackjac.check_hessian(rosenbrock, x, hess=H, rows=6)


def test_path_dependent_plan_raises_on_another_path():
    def f(x):
        if x.sum() > 0:
            return (x[:-1] * x[1:]).sum()
        return (x ** 4).sum()

    x = torch.ones(5, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the ControlFlowWarning of detection
        plan = hessian_plan(f, x)
    assert_values(plan(2 * x), f, 2 * x)
    with pytest.raises(PathChangedError):
        plan(-x)


class _Cube(torch.autograd.Function):
    """Old-style autograd.Function (no setup_context): torch.func cannot transform it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x ** 2


def test_fallback_double_backward():
    def f(x):
        return (_Cube.apply(x) * x[0]).sum()

    x = torch.randn(5, dtype=D)
    pattern = torch.eye(5, dtype=torch.bool)
    pattern[0, :] = pattern[:, 0] = True
    plan = hessian_plan(f, x, pattern=pattern, chunk_size=2)
    with pytest.warns(RuntimeWarning, match="double backward"):
        H = plan(x)
    assert_values(H, f, x)
    v, g, H2 = plan.value_and_hessian(2 * x)   # stays on the fallback, without a new warning
    assert torch.allclose(g, torch.autograd.functional.jacobian(f, 2 * x))
    assert_values(H2, f, 2 * x)


class _WrongJvpExp(torch.autograd.Function):
    """exp whose forward-mode rule is wrong (twice the tangent) but whose backward is right:
    forward-over-reverse reads the jvp (the backward uses the saved output), double backward not."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x.exp()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y

    @staticmethod
    def jvp(ctx, t):
        (y,) = ctx.saved_tensors
        return 2 * t * y


def test_audit_catches_wrong_batched_products():
    def f(x):
        return _WrongJvpExp.apply(x).sum()

    x = torch.randn(4, dtype=D)
    plan = hessian_plan(f, x, pattern=torch.eye(4, dtype=torch.bool))
    with pytest.warns(RuntimeWarning, match="disagree with plain double backward"):
        H = plan(x)
    assert torch.allclose(H.to_dense(), torch.diag(x.exp()))
    assert torch.allclose(plan(2 * x).to_dense(), torch.diag((2 * x).exp()))


def test_compile_unavailable_falls_back_with_a_warning(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    x = torch.randn(6, dtype=D)
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        plan = hessian_plan(rosenbrock, x, compile=True)
    assert_values(plan(x), rosenbrock, x)


def test_compiled_path_and_its_run_time_fallback(monkeypatch):
    x = torch.randn(6, dtype=D)
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)   # the compiled path, without compiling
    plan = hessian_plan(rosenbrock, x, compile=True)
    v, g, H = plan.value_and_hessian(x)
    assert torch.allclose(g, torch.func.grad(rosenbrock)(x)) and torch.allclose(v, rosenbrock(x))
    assert_values(H, rosenbrock, x)
    assert "compiled=True" in repr(plan)

    def compile_to_failure(fn, **kw):
        def run(*a):
            raise RuntimeError("backend exploded")
        return run

    monkeypatch.setattr(torch, "compile", compile_to_failure)
    plan = hessian_plan(rosenbrock, x, compile=True)
    with pytest.warns(RuntimeWarning, match="compiled Hessian plan failed"):
        H = plan(x)
    assert_values(H, rosenbrock, x)


def test_compiled_plan_matches_autograd():
    x = torch.randn(12, dtype=D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch.compile's own deprecations
        warnings.simplefilter("ignore", FutureWarning)
        plan = hessian_plan(rosenbrock, x, compile=True)
        assert_values(plan(x), rosenbrock, x)
        assert_values(plan(0.5 * x), rosenbrock, 0.5 * x)
    assert "compiled=True" in repr(plan)   # it stayed on the compiled products
