"""Decomposed ops on non-contiguous tracked tensors keep each element's provenance.

Inside a decomposition (run from ``__torch_dispatch__``, below autograd) composite ops such as
``contiguous`` and ``reshape`` reach the tracker as ATen calls whose schema says the result
aliases its input.  On a non-contiguous input they return a copy instead; sharing the input's
provenance store with that copy read its rows in the copy's memory order, permuting the
pattern (``_softmax_backward_data`` with a transposed ``grad_output``, and through it the
Hessian of ``softmax(x).t()``).  Every pattern here is checked against the dense autograd
Jacobian (or Hessian).
"""
from __future__ import annotations

import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._decomp import decomposition_table
from torch.autograd.functional import hessian

import trackjac
from dense_reference import assert_sound, dense_nonzeros, random_points, union_nonzeros

aten = torch.ops.aten


def _jacobian_nonzeros(f, x):
    return dense_nonzeros(f, (x,))[0]


def test_softmax_backward_with_a_transposed_grad_output():
    x = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def h(x):
        out = torch.softmax(x, 0)
        go = (x * x).t()   # stride (1, 2)
        return aten._softmax_backward_data(go, out, 0, x.dtype)

    assert_sound(trackjac.jacobian_sparsity(h, x), _jacobian_nonzeros(h, x))


def test_hessian_through_softmax_then_transpose():
    f = lambda x: torch.sin(torch.softmax(x, 0).t().contiguous()).sum()  # noqa: E731
    x = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        H = hessian(f, x).reshape(4, 4)
    pat = trackjac.hessian_sparsity(f, x)
    pat = (pat.to_dense() if pat.layout != torch.strided else pat).reshape(4, 4)
    missing = (H != 0) & ~pat
    assert not missing.any(), f"{int(missing.sum())} Hessian nonzeros missing"


# -- the root cause, without a decomposition around it ---------------------------------------------
COPIES = {   # composite "may alias" ops that copy a non-contiguous input
    "contiguous": lambda y: y.contiguous(),
    "reshape": lambda y: y.reshape(-1),
    "flatten": lambda y: y.flatten(),
    "reshape_as": lambda y: y.reshape_as(torch.empty(y.numel())),
}


@settings(max_examples=30, deadline=None)
@given(op=st.sampled_from(sorted(COPIES)), m=st.integers(2, 4), n=st.integers(2, 4),
       layout=st.sampled_from(["t", "step", "contiguous"]))
def test_copying_alias_ops_below_autograd(op, m, n, layout):
    """Below autograd (as inside a decomposition) these ops are ATen calls of their own."""
    x = torch.randn(m, n, dtype=torch.float64)

    def f(x, below=False):
        y = x * torch.arange(1.0, x.numel() + 1, dtype=x.dtype).reshape(x.shape)
        y = {"t": y.t(), "step": y[:, ::2], "contiguous": y}[layout]
        if below:
            with torch._C._AutoDispatchBelowAutograd():
                return COPIES[op](y) * 1
        return COPIES[op](y) * 1

    pat = trackjac.jacobian_sparsity(lambda x: f(x, below=True), x)
    nonzero = _jacobian_nonzeros(f, x)
    assert_sound(pat, nonzero)
    assert not (pat.to_dense() & ~nonzero).any(), "not tight"


# -- decomposed backward ops with strided gradients ------------------------------------------------
def _softmax_bw(go, x, dim):
    return aten._softmax_backward_data(go, torch.softmax(x, dim), dim, x.dtype)


def _log_softmax_bw(go, x, dim):
    return aten._log_softmax_backward_data(go, torch.log_softmax(x, dim), dim, x.dtype)


BACKWARDS = {   # (grad_output, x, dim) -> grad_input; decompositions or rules, see resolve.rule_kind
    "_softmax_backward_data": _softmax_bw,
    "_log_softmax_backward_data": _log_softmax_bw,
    "tanh_backward": lambda go, x, dim: aten.tanh_backward(go, torch.tanh(x)),
    "sigmoid_backward": lambda go, x, dim: aten.sigmoid_backward(go, torch.sigmoid(x)),
    "gelu_backward": lambda go, x, dim: aten.gelu_backward(go, x),
    "gelu_backward_tanh": lambda go, x, dim: aten.gelu_backward(go, x, approximate="tanh"),
    "threshold_backward": lambda go, x, dim: aten.threshold_backward(go, x, 0.1),
    "hardtanh_backward": lambda go, x, dim: aten.hardtanh_backward(go, x, -0.5, 0.5),
    "elu_backward": lambda go, x, dim: aten.elu_backward(go, 1.0, 1.0, 1.0, False, x),
    "softplus_backward": lambda go, x, dim: aten.softplus_backward(go, x, 1.0, 20.0),
    "leaky_relu_backward": lambda go, x, dim: aten.leaky_relu_backward(go, x, 0.1, False),
    "hardsigmoid_backward": lambda go, x, dim: aten.hardsigmoid_backward(go, x),
    "hardswish_backward": lambda go, x, dim: aten.hardswish_backward(go, x),
    "mish_backward": lambda go, x, dim: aten.mish_backward(go, x),
    "mse_loss_backward": lambda go, x, dim: aten.mse_loss_backward(go, x, x.flip(0), 0),
    "smooth_l1_loss_backward": lambda go, x, dim: aten.smooth_l1_loss_backward(go, x, x.flip(0), 0, 1.0),
    "huber_loss_backward": lambda go, x, dim: aten.huber_loss_backward(go, x, x.flip(0), 0, 1.0),
}

# autograd has no derivative of these: the dense reference differentiates torch's decomposition
NO_DERIVATIVE = {"hardsigmoid_backward": aten.hardsigmoid_backward.default,
                 "mish_backward": aten.mish_backward.default}


def _reference(op):
    if op not in NO_DERIVATIVE:
        return BACKWARDS[op]
    d = decomposition_table[NO_DERIVATIVE[op]]
    return lambda go, x, dim: d(go, x)


# grad_output made from a tracked value of x's shape (3-D), laid out in memory four ways
LAYOUTS = {
    "contiguous": lambda g: g,
    "transposed": lambda g: g.transpose(0, 2).contiguous().transpose(0, 2),
    "permuted": lambda g: g.permute(2, 0, 1).contiguous().permute(1, 2, 0),
    "strided": lambda g: torch.cat([g, g * 2], -1)[..., ::2],
    "expanded": lambda g: g.sum(1, keepdim=True).expand_as(g),
}


@settings(max_examples=120, deadline=None)
@given(op=st.sampled_from(sorted(BACKWARDS)), layout=st.sampled_from(sorted(LAYOUTS)),
       shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       dim=st.integers(0, 2), transposed_x=st.booleans())
def test_decomposed_backward_with_strided_inputs(op, layout, shape, dim, transposed_x):
    """Sound against the dense Jacobian, with ``grad_output`` (and optionally ``x``) non-contiguous,
    and so with non-contiguous real outputs where the kernel follows its inputs' layout."""
    def f(x, backward=BACKWARDS[op]):
        g = LAYOUTS[layout](torch.cos(x) * x)
        xs = x.transpose(0, 2).contiguous().transpose(0, 2) * 1.5 if transposed_x else x
        return backward(g, xs, dim)

    make = random_points([shape], seed=len(op) + dim)
    (x,) = make(0)
    nonzero = union_nonzeros(lambda x: f(x, _reference(op)), make, points=2)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", trackjac.UnsupportedOpWarning)   # no conservative fallback
        assert_sound(trackjac.jacobian_sparsity(f, x), nonzero, f" for {op}, {layout}")
