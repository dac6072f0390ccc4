"""Gradients flow through a sparse Jacobian's (and Hessian's) values, as with ``create_graph=True``."""
import pytest
import torch

import trackjac


def f(x):
    return torch.sin(x[1:] * x[:-1]) + x[1:] ** 2 + 0.5 * x[:-1]


def scalar(x):
    return (torch.cos(x[1:] - x[:-1]) * x[1:] ** 2).sum()


def _values(j):
    return (j.coalesce().values() if j.layout == torch.sparse_coo else j.values())


def _reference_grad(fn, x, weight_of):
    x = x.detach().requires_grad_()
    dense = fn(x)
    return torch.autograd.grad((dense * weight_of(dense)).sum(), x)[0]


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
@pytest.mark.parametrize("constant_entries", ["recompute", "reuse"])
def test_jacobian_values_are_differentiable(mode, layout, constant_entries):
    x0 = torch.randn(9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plan = trackjac.jacobian_plan(f, x0, mode=mode, layout=layout, constant_entries=constant_entries)
    x = x0.clone().requires_grad_()
    jac = plan(x)
    assert jac.requires_grad
    # a weight per entry makes the test see every value's gradient, not only their sum's
    dense_w = torch.arange(1.0, 1.0 + 8 * 9, dtype=torch.float64).reshape(8, 9)
    got = torch.autograd.grad((jac.to_dense() * dense_w).sum(), x)[0]
    want = _reference_grad(
        lambda z: torch.autograd.functional.jacobian(f, z, create_graph=True), x0, lambda d: dense_w)
    torch.testing.assert_close(got, want)


def test_hessian_values_are_differentiable():
    x0 = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    plan = trackjac.hessian_plan(scalar, x0)
    x = x0.clone().requires_grad_()
    hess = plan(x)
    assert hess.requires_grad
    w = torch.arange(1.0, 50.0, dtype=torch.float64).reshape(7, 7)
    got = torch.autograd.grad((hess.to_dense() * w).sum(), x)[0]
    want = _reference_grad(
        lambda z: torch.autograd.functional.hessian(scalar, z, create_graph=True), x0, lambda d: w)
    torch.testing.assert_close(got, want)


def test_detached_inputs_give_detached_values():
    x0 = torch.randn(5, dtype=torch.float64)
    assert not trackjac.jacobian_plan(f, x0)(x0).requires_grad
    assert _values(trackjac.jacobian(f, x0)).grad_fn is None
