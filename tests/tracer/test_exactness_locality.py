"""Locality belongs to the source: a local source's choices resolve at this point, a global
source's keep every candidate, also where the two meet in one op."""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac

OPS = {
    "relu": torch.relu,
    "clamp": lambda t: t.clamp(-0.5, 0.5),
    "abs": torch.abs,
    "max over dim": lambda t: t.max(-1, keepdim=True).values.expand_as(t),
    "where(t > 0)": lambda t: torch.where(t > 0, t, 2 * t),
    "sort": lambda t: t.sort(-1).values,
}


def _global_pattern(op, l0, g0):
    """The pattern w.r.t. ``g`` when both sources are global: what g's part must equal."""
    l, g = trackjac.Tracked(l0), trackjac.Tracked(g0)
    return op(l * g).depends_on(g, layout=torch.strided)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(OPS)), n=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_global_part_of_a_mixed_op_is_the_global_pattern(name, n, seed):
    gen = torch.Generator().manual_seed(seed)
    l0 = torch.randn(2, n, dtype=torch.float64, generator=gen)
    g0 = torch.randn(2, n, dtype=torch.float64, generator=gen)
    op = OPS[name]
    l, g = trackjac.Tracked(l0, local=True), trackjac.Tracked(g0)
    y = op(l * g)
    assert torch.equal(y.depends_on(g, layout=torch.strided), _global_pattern(op, l0, g0))
    # the local source's part is the pattern at this point: inside the global one
    pl = y.depends_on(l, layout=torch.strided)
    la, ga = trackjac.Tracked(l0), trackjac.Tracked(g0)
    assert bool((~pl | op(la * ga).depends_on(la, layout=torch.strided)).all())


def test_relu_of_a_mixed_product_keeps_the_global_dependencies():
    l0 = torch.tensor([-1.0, 2.0, -3.0], dtype=torch.float64)
    l, g = trackjac.Tracked(l0, local=True), trackjac.Tracked(torch.ones(3, dtype=torch.float64))
    y = torch.relu(l * g)
    assert torch.equal(y.depends_on(g, layout=torch.strided), torch.eye(3, dtype=torch.bool))
    assert torch.equal(y.depends_on(l, layout=torch.strided),
                       torch.diag(torch.tensor([False, True, False])))   # the branch taken here


def test_reading_a_value_that_depends_on_a_global_source_warns():
    l = trackjac.Tracked(torch.tensor([1.0, -2.0]), local=True)
    g = trackjac.Tracked(torch.tensor([1.0, 1.0]))
    with pytest.warns(trackjac.ControlFlowWarning):
        with trackjac.tracking():
            bool((l * g).sum() > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with trackjac.tracking():
            bool((l * 2).sum() > 0)   # local sources only: the pattern is the one at this point
