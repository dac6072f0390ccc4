"""Every op that hands Python a value computed from tracked tensors is a control-flow read."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac
from trackjac.tracer.dispatch import _SCALAR_READS

READS = {
    "allclose": lambda x: torch.allclose(x, 2 * x),
    "equal": lambda x: torch.equal(x, x + 1),
    "bool": lambda x: bool(x.sum() > 0),
    "item": lambda x: x.max().item(),
    "float": lambda x: float(x[0]),
    "int": lambda x: int(x[0] > 0),
    "tolist": lambda x: x.tolist(),
    "is_nonzero": lambda x: (x[:1] > 0).is_nonzero(),
    "isclose.all": lambda x: bool(torch.isclose(x, x).all()),
}


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(READS)), n=st.integers(1, 4))
def test_scalar_reads_are_noticed(name, n):
    read = READS[name]
    x = torch.rand(n, dtype=torch.float64)

    def f(x):
        read(x)
        return x * 2

    with pytest.warns(trackjac.ControlFlowWarning):
        trackjac.jacobian_sparsity(f, x)
    with pytest.raises(trackjac.StrictModeError):
        trackjac.jacobian_sparsity(f, x, strict=True)


def test_the_list_comes_from_the_schemas():
    names = {str(op) for op in _SCALAR_READS}
    for op in ("aten.allclose.default", "aten.equal.default", "aten.is_nonzero.default",
               "aten._local_scalar_dense.default", "aten.item.default"):
        assert op in names
    for op in _SCALAR_READS:   # each takes a tensor and returns no tensor
        schema = op._schema
        assert any("Tensor" in str(a.type) for a in schema.arguments)
        assert schema.returns and not any("Tensor" in str(r.type) for r in schema.returns)


def test_a_constant_read_is_not_a_control_flow_read():
    import warnings

    def f(x):
        if torch.allclose(torch.ones(2), torch.ones(2)):   # constants made inside f
            return x * 2
        return x

    with warnings.catch_warnings():
        warnings.simplefilter("error", trackjac.ControlFlowWarning)
        trackjac.jacobian_sparsity(f, torch.rand(3, dtype=torch.float64), strict=True)


def test_a_number_that_leaves_torch_is_named():
    """item() hands Python a number: the warning says a tensor built from it has no dependency."""
    import warnings as _w

    x = torch.randn(3, dtype=torch.float64)
    with _w.catch_warnings(record=True) as rec:
        _w.simplefilter("always")
        p = trackjac.jacobian_sparsity(lambda x: torch.tensor(x[0].item()) * x, x)
    msgs = [str(r.message) for r in rec if issubclass(r.category, trackjac.ControlFlowWarning)]
    assert msgs and "left torch as a Python number" in msgs[0] and "torch.tensor(t.item())" in msgs[0]
    assert torch.equal(p.to_dense(), torch.eye(3, dtype=torch.bool))   # as autograd: no d/dx[0] via the copy
    with _w.catch_warnings(record=True) as rec:
        _w.simplefilter("always")
        trackjac.jacobian_sparsity(lambda x: x * 2 if x.sum() > 0 else x, x)
    msgs = [str(r.message) for r in rec if issubclass(r.category, trackjac.ControlFlowWarning)]
    assert msgs and "left torch" not in msgs[0]   # a branch: the value stayed a bool
