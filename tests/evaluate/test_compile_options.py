"""``compile=``: True/False or a torch.compile mode passed through; compiled plans break
symmetric ties for forward mode. ``torch.compile`` is replaced by a recorder (it returns
the function unchanged) except in the one opt-in test that really compiles."""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from trackjac import hessian_plan, jacobian_plan
from trackjac.evaluate import products
from trackjac.evaluate.products import INDUCTOR_OPTIONS, inductor_options

from dense_reference import dense_jacobian
from problems import brusselator, brusselator_point, kuramoto_sivashinsky, rosenbrock  # benches/problems.py


@pytest.fixture
def recorded(monkeypatch):
    """The keyword arguments of every torch.compile call; the function runs eagerly."""
    calls = []

    def record(fn, **kw):
        calls.append(kw)
        return fn

    monkeypatch.setattr(torch, "compile", record)
    return calls


def _dense(J):
    return J.to_dense()


@pytest.mark.parametrize("bad", ["fast", "reduce_overhead", 1, None])
def test_unknown_compile_option_is_rejected(bad):
    x = brusselator_point(3)
    with pytest.raises(ValueError, match="torch.compile mode"):
        jacobian_plan(brusselator, x, compile=bad)
    with pytest.raises(ValueError, match="torch.compile mode"):
        hessian_plan(rosenbrock, torch.randn(4, dtype=torch.float64), compile=bad)


def _expected(mode):
    """What try_compile passes torch.compile for ``mode``: the mode's inductor options plus
    trackjac's, or the bare mode on a torch that knows none of trackjac's options."""
    ours = inductor_options(None)
    if not ours:
        return {"dynamic": False, "mode": mode}
    base = {} if mode in (None, "default") else torch._inductor.list_mode_options(mode)
    return {"dynamic": False, "options": {**base, **INDUCTOR_OPTIONS}}


@pytest.mark.parametrize("option, mode", [(True, None), ("reduce-overhead", "reduce-overhead"),
                                          ("max-autotune", "max-autotune"), ("default", "default")])
def test_compile_mode_is_passed_through(recorded, option, mode):
    x = brusselator_point(4)
    plan = jacobian_plan(brusselator, x, compile=option)
    assert recorded == [_expected(mode)]
    if mode not in (None, "default") and "options" in recorded[0]:   # the mode's own options are kept
        assert torch._inductor.list_mode_options(mode).items() <= recorded[0]["options"].items()
    assert plan._compiled is not None
    y = brusselator_point(4, seed=1)
    torch.testing.assert_close(_dense(plan(y)), dense_jacobian(brusselator, y), rtol=1e-10, atol=1e-10)


def test_hessian_compile_mode_is_passed_through(recorded):
    x = torch.randn(6, dtype=torch.float64)
    plan = hessian_plan(rosenbrock, x, compile="reduce-overhead")
    assert recorded == [_expected("reduce-overhead")]
    H = torch.autograd.functional.hessian(rosenbrock, x)
    torch.testing.assert_close(_dense(plan(x)), H, rtol=1e-10, atol=1e-10)


def test_unknown_inductor_options_fall_back_to_the_mode(recorded, monkeypatch):
    """On a torch whose inductor lacks trackjac's options (older releases), the mode goes as is."""
    monkeypatch.setattr(products, "INDUCTOR_OPTIONS", {"cpp.no_such_option": False, "no_section.x": 1})
    jacobian_plan(brusselator, brusselator_point(3), compile="reduce-overhead")
    assert recorded == [{"dynamic": False, "mode": "reduce-overhead"}]


def test_inductor_option_is_one_inductor_has():
    """The option trackjac sets is the one inductor reads (a renamed option would silently do nothing)."""
    from torch._inductor import config
    if not inductor_options(None):
        pytest.skip("this torch's inductor has no cpp.enable_tiling_heuristics")
    assert config.cpp.enable_tiling_heuristics is True   # the default trackjac overrides
    assert inductor_options(None) == {"cpp.enable_tiling_heuristics": False}


def test_no_compile_means_no_torch_compile(recorded):
    jacobian_plan(brusselator, brusselator_point(3), compile=False)
    assert recorded == []


# the same patch for every example: sharing the fixture is what is meant
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(6, 40), seed=st.integers(0, 2**16))
def test_compiled_auto_plan_takes_forward_mode_on_symmetric_ties(monkeypatch, n, seed):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, dtype=torch.float64)
    eager = jacobian_plan(kuramoto_sivashinsky, x)
    plan = jacobian_plan(kuramoto_sivashinsky, x, compile=True)
    assert eager.mode == "rev" and plan.mode == "fwd"   # a symmetric pattern: rev would win the tie
    assert plan.num_colors == eager.num_colors
    assert plan._rev_coloring is not None and plan._rev_coloring().mode == "rev"
    torch.testing.assert_close(_dense(plan(x)), dense_jacobian(kuramoto_sivashinsky, x), rtol=1e-9, atol=1e-9)


def test_explicit_mode_and_unsymmetric_patterns_keep_their_side(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    x = torch.randn(8, dtype=torch.float64)
    assert jacobian_plan(kuramoto_sivashinsky, x, mode="rev", compile=True).mode == "rev"

    def f(x):  # 8 outputs from 8 inputs, lower bidiagonal plus a dense last row: not symmetric
        return torch.cat([x[:1], x[1:] * x[:-1]]) + torch.cat([torch.zeros(7, dtype=x.dtype), x.sum().reshape(1)])

    eager, plan = jacobian_plan(f, x), jacobian_plan(f, x, compile=True)
    assert plan.mode == eager.mode
    torch.testing.assert_close(_dense(plan(x)), dense_jacobian(f, x))


@pytest.mark.skipif(not os.environ.get("TRACKJAC_TEST_COMPILE"),
                    reason="compiling takes 5-30 s on CPU; set TRACKJAC_TEST_COMPILE=1")
def test_reduce_overhead_plan_compiles_and_matches_autograd_on_cpu():
    """On CPU "reduce-overhead" compiles without CUDA graphs; the values must not change."""
    x = torch.rand(64, dtype=torch.float64)
    plan = jacobian_plan(kuramoto_sivashinsky, x, compile="reduce-overhead")
    assert plan.mode == "fwd"
    for seed in (0, 1):
        y = torch.rand(64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(_dense(plan(y)), dense_jacobian(kuramoto_sivashinsky, y), rtol=1e-9, atol=1e-9)
    assert plan._compiled is not None
