"""Hostile inputs get correct behaviour or a clear error naming the fix, never an internal error."""
from __future__ import annotations

import warnings

import pytest
import torch

import trackjac
from dense_reference import assert_sound, dense_nonzeros


def _dense(f, x):
    return trackjac.jacobian_sparsity(f, x, layout=torch.strided)


def test_a_function_that_writes_into_its_argument_is_refused_and_the_caller_keeps_its_values():
    def f(x):
        x.mul_(2)
        return x * 3

    for api in (trackjac.jacobian_sparsity, trackjac.jacobian, trackjac.jacobian_plan):
        x = torch.ones(3, dtype=torch.float64)
        with pytest.raises(trackjac.TrackingError, match="writes into its argument 0 in place.*clone"):
            api(f, x)
        assert torch.equal(x, torch.ones(3, dtype=torch.float64))


def test_writes_into_a_view_of_an_argument_are_refused_too():
    def f(x):
        x[1:].zero_()
        return x

    with pytest.raises(trackjac.TrackingError, match="argument 0"):
        trackjac.jacobian_sparsity(f, torch.ones(3))


def test_an_argument_that_is_already_tracked_gets_a_clear_error():
    with pytest.raises(TypeError, match="already a Tracked tensor.*plain tensor"):
        trackjac.jacobian_sparsity(lambda x: x, trackjac.Tracked(torch.ones(2)))


def test_a_factory_made_tensor_becomes_a_source_inside_tracking():
    with trackjac.tracking():
        c = torch.zeros(3)
        s = trackjac.Tracked(c)
        y = s * 2
    assert torch.equal(y.depends_on(s, layout=torch.strided), torch.eye(3, dtype=torch.bool))


@pytest.mark.parametrize("case", ["out= resized", "out= resized then read", "resize_ shrink", "resize_ grow",
                                  "set_ tensor", "set_ storage"])
def test_storage_changing_ops(case):
    x = torch.rand(4, dtype=torch.float64)
    f = {
        "out= resized": lambda x: torch.mul(x, 2, out=torch.empty(0, dtype=torch.float64)),
        "out= resized then read": lambda x: (lambda b: (torch.mul(x, 2, out=b), b * 3)[1])(
            torch.empty(0, dtype=torch.float64)),
        "resize_ shrink": lambda x: (x * 1).resize_(2) * 2,
        "resize_ grow": lambda x: torch.zeros(2, dtype=torch.float64).resize_(4).copy_(x) * 2,
        "set_ tensor": lambda x: torch.empty(0, dtype=torch.float64).set_(x * 2) * 1,
        "set_ storage": lambda x: torch.empty(0, dtype=torch.float64).set_(
            torch.ones(3, dtype=torch.float64).untyped_storage()) + x.sum(),
    }[case]
    want = {
        "out= resized": torch.eye(4), "out= resized then read": torch.eye(4), "resize_ shrink": torch.eye(4)[:2],
        "resize_ grow": torch.eye(4), "set_ tensor": torch.eye(4), "set_ storage": torch.ones(3, 4),
    }[case].bool()
    assert torch.equal(_dense(f, x), want)


def test_tensor_of_tracked_elements_inside_a_traced_function():
    x = torch.rand(4, dtype=torch.float64)
    # inside tracking() as_tensor keeps the elements (a stack: more than autograd, which copies them
    # too); torch.tensor copies them (a new leaf, as autograd)
    assert torch.equal(_dense(lambda x: torch.as_tensor([x[0], x[2]]), x), torch.eye(4)[[0, 2]].bool())
    assert not _dense(lambda x: torch.tensor([[x[0]], [x[1]]]).reshape(-1) + 0 * x[:2], x)[:, 2:].any()


@pytest.mark.parametrize("make", [torch.tensor, torch.as_tensor])
def test_tensor_of_tracked_elements_outside_tracking_copies_the_values(make):
    """Outside tracking() torch cannot be intercepted: the values are copied with no provenance,
    as autograd copies them with no derivative (it used to fail inside torch: 'data is not allocated')."""
    v = torch.rand(4, dtype=torch.float64)
    t = trackjac.Tracked(v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: converting a tensor to a scalar
        y = make([t[0], t[2] * 2])
    assert type(y) is torch.Tensor
    assert torch.equal(y, torch.stack([v[0], v[2] * 2]))
    leaf = v.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert not make([leaf[0], leaf[2] * 2]).requires_grad  # autograd drops the derivative too


@pytest.mark.parametrize("inner", ["hessian", "jacfwd", "jacrev", "vmap"])
def test_torch_func_transforms_inside_f_are_sound(inner):
    x = torch.rand(4, dtype=torch.float64)
    f = {
        "hessian": lambda x: torch.func.hessian(lambda y: (y ** 3).sum() + y[0] * y[1])(x).sum(0),
        "jacfwd": lambda x: torch.func.jacfwd(torch.sin)(x).sum(0),
        "jacrev": lambda x: torch.func.jacrev(torch.sin)(x).sum(0),
        "vmap": lambda x: torch.func.vmap(torch.sin)(x.reshape(2, 2)).reshape(-1),
    }[inner]
    assert_sound(_dense(f, x), dense_nonzeros(f, (x,))[0])


@pytest.mark.parametrize("transform", [torch.func.vmap, torch.func.grad])
def test_trackjac_inside_a_torch_func_transform_is_a_clear_error(transform):
    g = lambda x: trackjac.jacobian(torch.sin, x).to_dense().sum()  # noqa: E731
    x = torch.rand(3, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="inside a torch.func transform"):
        transform(g)(x if transform is torch.func.vmap else x[0])


def test_a_foreign_subclass_wrapping_a_tracked_tensor_is_a_clear_error():
    class LieLike(torch.Tensor):
        pass

    with pytest.raises(trackjac.TrackingError, match="as_subclass.*functional ops on plain tensors"):
        trackjac.jacobian_sparsity(lambda x: x.as_subclass(LieLike) * 2, torch.rand(3))


def test_primitives_use_the_rule_of_their_aten_twin():
    from trackjac.tracer import resolve
    assert resolve.rule_kind(torch.ops.prims.mul.default) == resolve.rule_kind(torch.ops.aten.mul.Tensor)
