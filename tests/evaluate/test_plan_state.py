"""Saving and loading plans: state_dict -> torch.save -> torch.load(weights_only=True) -> from_state
gives the original plan's values and dense autograd's, without detection or coloring; bad states
and mismatched arguments raise clear errors."""
import contextlib
import copy
import itertools
import warnings
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import trackjac
from trackjac import HessianPlan, JacobianCheckError, PathChangedError, Plan, hessian_plan, jacobian_plan

from dense_reference import dense_jacobian

_FILES = itertools.count()


def _leaves(x):
    return [z for y in x for z in _leaves(y)] if isinstance(x, tuple) else [x]


def assert_same(J, K, layout=None):
    la, lb = _leaves(J), _leaves(K)
    assert len(la) == len(lb)   # zip(strict=True) is Python 3.10+
    for a, b in zip(la, lb):
        if layout is not None:
            assert a.layout == layout
        torch.testing.assert_close(a.to_dense(), b.to_dense() if b.is_sparse or b.layout != torch.strided else b,
                                   atol=1e-10, rtol=1e-8)


def roundtrip(plan, tmp_path):
    """The plan's state through a file, read back as torch.load's safe loader reads it."""
    path = tmp_path / f"plan{next(_FILES)}.pt"
    torch.save(plan.state_dict(), path)
    return torch.load(path, weights_only=True)


def _refuse(*args, **kwargs):
    raise AssertionError("detection or coloring ran while loading a plan state")


@contextlib.contextmanager
def no_detection():
    """Pattern detection and every coloring raise while active."""
    names = ["trackjac.jacobian_sparsity", "trackjac.tracer.jacobian_sparsity",
             "trackjac.evaluate.structure.jacobian_sparsity", "trackjac.evaluate.constant_part.jacobian_sparsity",
             "trackjac.hessian_sparsity", "trackjac.evaluate.hessian_plans.hessian_sparsity",
             "trackjac.evaluate.api.color_rows", "trackjac.evaluate.api.color_columns",
             "trackjac.evaluate.hessian_plans.color_columns", "trackjac.coloring.color_symmetric",
             "trackjac.evaluate.paths.scalar_reads"]
    with contextlib.ExitStack() as stack:
        for n in names:
            stack.enter_context(mock.patch(n, _refuse))
        yield


class Gathers:
    """``f(x, y) = (x[i1] * y[i2] + x[i3] ** 2, sin(y[i4]) + 2 x[i5])``: a known sparse pattern,
    the ``2 x`` term constant entries."""

    def __init__(self, m, n, seed):
        g = torch.Generator().manual_seed(seed)
        (m0, m1), (n0, n1) = m, n
        self.i = [torch.randint(k, (s,), generator=g) for k, s in ((n0, m0), (n1, m0), (n0, m0), (n1, m1), (n0, m1))]
        self.args = (torch.randn(n0, dtype=torch.float64, generator=g),
                     torch.randn(n1, dtype=torch.float64, generator=g))

    def __call__(self, x, y):
        i1, i2, i3, i4, i5 = self.i
        return x[i1] * y[i2] + x[i3] ** 2, torch.sin(y[i4]) + 2 * x[i5]

    def scalar(self, x, y):
        a, b = self(x, y)
        return (a.sin() * a).sum() + (b * b).sum()


@st.composite
def problems(draw):
    R, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    m = [R * draw(st.integers(1, 4)) for _ in range(2)]
    n = [C * draw(st.integers(1, 4)) for _ in range(2)]
    layout = draw(st.sampled_from([torch.sparse_coo, torch.sparse_csr, torch.sparse_csc,
                                   torch.sparse_bsr, torch.sparse_bsc]))
    blocked = layout in (torch.sparse_bsr, torch.sparse_bsc)
    bs = draw(st.sampled_from([(R, C), [(R, C), (R, 1)], {0: (1, C), 1: (R, C)}])) if blocked else None
    return Gathers(m, n, draw(st.integers(0, 2 ** 16))), layout, bs


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problems(), st.sampled_from(["auto", "rev", "fwd"]), st.sampled_from([None, 1]),
       st.sampled_from(["recompute", "reuse"]))
def test_jacobian_plan_roundtrip(tmp_path, case, mode, chunk, entries):
    f, layout, bs = case
    plan = jacobian_plan(f, *f.args, mode=mode, layout=layout, blocksize=bs, chunk_size=chunk,
                         constant_entries=entries)
    state = roundtrip(plan, tmp_path)
    with no_detection():
        loaded = Plan.from_state(f, state)
        x = tuple(a * 1.5 - 0.25 for a in f.args)
        got = loaded(*x)
    assert type(loaded) is type(plan)
    assert (loaded.mode, loaded.num_colors, loaded.nnz, loaded.layout, loaded.blocksize, loaded.chunk_size) == \
        (plan.mode, plan.num_colors, plan.nnz, plan.layout, plan.blocksize, plan.chunk_size)
    assert loaded.constant_nnz == plan.constant_nnz
    assert_same(got, plan(*x), layout)
    assert_same(got, dense_jacobian(f, *x))
    assert_same(loaded.pattern, plan.pattern)


def dense_hessian(f, *args):
    H = torch.autograd.functional.hessian(f, args)
    return tuple(tuple(H[a][b].reshape(args[a].numel(), args[b].numel()) for b in range(len(args)))
                 for a in range(len(args)))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problems(), st.sampled_from(["auto", "star", "acyclic", "columns"]), st.sampled_from([None, 2]))
def test_hessian_plan_roundtrip(tmp_path, case, coloring, chunk):
    f, layout, _ = case
    n0, n1 = (a.numel() for a in f.args)
    bs = [[(n0, n0), (n0, n1)], [(n1, n0), (n1, n1)]] if layout in (torch.sparse_bsr, torch.sparse_bsc) else None
    plan = hessian_plan(f.scalar, *f.args, layout=layout, blocksize=bs, coloring=coloring, chunk_size=chunk)
    state = roundtrip(plan, tmp_path)
    with no_detection():
        loaded = HessianPlan.from_state(f.scalar, state)
        x = tuple(a - 0.5 for a in f.args)
        got = loaded(*x)
    assert (loaded.num_colors, loaded.nnz, loaded.coloring.axis) == (plan.num_colors, plan.nnz, plan.coloring.axis)
    assert_same(got, plan(*x), layout)
    assert_same(got, dense_hessian(f.scalar, *x))


def branchy(x):
    return x.sin() * x.roll(1) if x.sum() > 0 else x.cos()


def test_path_guard_survives_saving(tmp_path):
    x = torch.rand(6, dtype=torch.float64) + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", trackjac.ControlFlowWarning)
        plan = jacobian_plan(branchy, x)
    state = roundtrip(plan, tmp_path)
    assert state["structure"]["path"] is not None
    loaded = Plan.from_state(branchy, state)
    assert_same(loaded(x + 1), dense_jacobian(branchy, x + 1))
    with pytest.raises(PathChangedError):
        loaded(-x)


def test_reuse_plan_keeps_its_argument_guard(tmp_path):
    def f(x, k):
        return x * x.roll(1) + k * x

    x = torch.randn(5, dtype=torch.float64)
    plan = jacobian_plan(f, x, 3.0, constant_entries="reuse")
    assert plan.constant_entries == "reuse"
    loaded = Plan.from_state(f, roundtrip(plan, tmp_path))
    assert loaded.constant_entries == "reuse" and loaded.constant_nnz == plan.constant_nnz
    assert_same(loaded(x + 1, 3.0), dense_jacobian(lambda v: f(v, 3.0), x + 1))
    with pytest.raises(ValueError, match="differs from the build point"):
        loaded(x, 4.0)


def test_spec_mismatch_at_first_call(tmp_path):
    x = torch.randn(6, dtype=torch.float64)
    loaded = Plan.from_state(torch.sin, roundtrip(jacobian_plan(torch.sin, x), tmp_path))
    with pytest.raises(ValueError, match="plan was built for shape"):
        loaded(torch.randn(7, dtype=torch.float64))
    with pytest.raises(ValueError, match="float64"):
        loaded(x.float())
    h = HessianPlan.from_state(lambda v: v.pow(3).sum(),
                               roundtrip(hessian_plan(lambda v: v.pow(3).sum(), x), tmp_path))
    with pytest.raises(ValueError, match="plan was built for"):
        h(x, x)


def test_other_format_version_or_kind_is_refused(tmp_path):
    x = torch.randn(4, dtype=torch.float64)
    state = roundtrip(jacobian_plan(torch.sin, x), tmp_path)
    for version in (0, 2, None):
        with pytest.raises(ValueError, match=f"format version {version!r}; this trackjac reads version 1"):
            Plan.from_state(torch.sin, {**state, "version": version})
    with pytest.raises(ValueError, match="load it with trackjac.Plan.from_state"):
        HessianPlan.from_state(torch.sin, state)
    with pytest.raises(ValueError, match="not a trackjac plan state"):
        Plan.from_state(torch.sin, {"weights": torch.zeros(2)})


def test_corrupted_states_raise():
    x = torch.randn(6, dtype=torch.float64)

    def f(v):
        return v * v.roll(1)

    state = jacobian_plan(f, x, mode="rev").state_dict()
    bad = copy.deepcopy(state)
    bad["coloring"]["colors"] = torch.zeros_like(bad["coloring"]["colors"])
    with pytest.raises(ValueError, match="not a valid coloring"):
        Plan.from_state(f, bad)
    bad = copy.deepcopy(state)
    r, c = bad["structure"]["blocks"][0][0]
    bad["structure"]["blocks"][0][0] = [r.flip(0), c.flip(0)]
    with pytest.raises(ValueError, match="not sorted row-major"):
        Plan.from_state(f, bad)
    bad = copy.deepcopy(state)
    bad["structure"]["blocks"][0][0][1] = bad["structure"]["blocks"][0][0][1] + 6
    with pytest.raises(ValueError, match="outside its shape"):
        Plan.from_state(f, bad)
    bad = copy.deepcopy(state)
    bad["layout"] = "strided"
    with pytest.raises(ValueError, match="unknown layout"):
        Plan.from_state(f, bad)
    g = lambda v: (v * v.roll(1)).sum()  # noqa: E731
    hs = hessian_plan(g, x, coloring="star").state_dict()
    hs["coloring"]["colors"] = torch.zeros_like(hs["coloring"]["colors"])
    with pytest.raises(ValueError, match="star coloring"):
        HessianPlan.from_state(g, hs)


def test_check_catches_another_function_after_loading(tmp_path):
    """The state cannot know f's code: plan.check is the cheap verification after loading."""
    x = torch.randn(6, dtype=torch.float64)
    loaded = Plan.from_state(lambda v: v * v.roll(1) * v.roll(2),
                             roundtrip(jacobian_plan(lambda v: v * v.roll(1), x), tmp_path))
    with pytest.raises(JacobianCheckError):
        loaded.check(x)


def test_auto_forward_plan_can_still_switch_to_reverse(tmp_path):
    """mode='auto' picked fwd; a loaded plan keeps the way to reverse mode for an f without jvp."""
    x = torch.randn(8, dtype=torch.float64)

    def f(v):
        return v * v[0]   # column 0 is dense: 2 column colors, 8 row colors

    plan = jacobian_plan(f, x)
    assert plan.mode == "fwd"
    state = roundtrip(plan, tmp_path)
    assert state["auto"]
    loaded = Plan.from_state(f, state)
    assert loaded._rev_coloring is not None and loaded._rev_coloring().mode == "rev"
    assert not Plan.from_state(f, jacobian_plan(f, x, mode="fwd").state_dict())._rev_coloring


def test_docs_example_runs():
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "docs", "engine.md"), encoding="utf-8").read()
    block = text.split("test_plan_state.py::test_docs_example_runs -->\n```python\n", 1)[1].split("```", 1)[0]
    exec(compile(block, "docs/engine.md", "exec"), {})


def test_pytree_plans_refuse_to_save_instead_of_losing_their_signature():
    x = {"a": torch.randn(4, dtype=torch.float64)}
    plan = trackjac.jacobian_plan(lambda d: d["a"][1:] * d["a"][:-1], x)
    with pytest.raises(NotImplementedError, match="positional"):
        plan.state_dict()
    hplan = trackjac.hessian_plan(lambda d: (d["a"] ** 4).sum(), x)
    with pytest.raises(NotImplementedError, match="positional"):
        hplan.state_dict()
