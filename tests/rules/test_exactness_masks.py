"""``constant_zeros="drop"`` leaves out only zeros that are constants at every point: masks
computed from the tracked values (``x * (x > 0)``) and masks drawn at random (dropout,
``bernoulli``, ``rand_like(x) > p``) are zero elsewhere at another point or another call
(issue #11, class 3)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac

from dense_reference import as_dense, assert_sound, dense_nonzeros

N = 8

DERIVED = {
    "relu_mask": lambda x: x * (x > 0),
    "mask_times_shift": lambda x: x.roll(1) * (x > 0).to(x.dtype),
    "floor_factor": lambda x: x * torch.floor(x),
    "lerp_derived_weight": lambda x: torch.lerp(x, x.roll(1), (x > 0).to(x.dtype)),
    "where_then_mul": lambda x: x.sin() * torch.where(x > 0, 1.0, 0.0).to(x.dtype),
}

RANDOM = {
    "rand_like_mask": lambda x: x * (torch.rand_like(x) > 0.5),
    "rand_mask": lambda x: x * (torch.rand(N, dtype=x.dtype) > 0.5),
    "bernoulli": lambda x: x * torch.bernoulli(torch.full_like(x, 0.5)),
    "bernoulli_": lambda x: x * torch.empty_like(x).bernoulli_(0.5),
    "dropout": lambda x: F.dropout(x, 0.5, training=True),
    "dropout2d": lambda x: F.dropout2d(x.reshape(1, 4, 2, 1), 0.5, training=True).reshape(-1),
}


def _drop(f, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return as_dense(trackjac.jacobian_sparsity(f, x, constant_zeros="drop"))


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(sorted(DERIVED)), seed=st.integers(0, 2 ** 16))
def test_derived_masks_are_not_constant_zeros(name, seed):
    """The drop-mode pattern at one point contains the Jacobian at other points."""
    f = DERIVED[name]
    g = torch.Generator().manual_seed(seed)
    pts = [torch.randn(N, dtype=torch.float64, generator=g) * 2 for _ in range(4)]
    p = _drop(f, pts[0])
    for x in pts[1:]:
        assert_sound(p, dense_nonzeros(f, [x])[0], f" ({name})")


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_drop_mode_plan_at_a_second_point(name):
    f = DERIVED[name]
    x0 = torch.tensor([0.5, -1.0] * (N // 2), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = trackjac.jacobian_plan(f, x0, constant_zeros="drop")
    x1 = -x0 * 1.5
    torch.testing.assert_close(plan(x1).to_dense(), torch.autograd.functional.jacobian(f, x1))


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(sorted(RANDOM)), seed=st.integers(0, 2 ** 16))
def test_random_masks_are_not_constant_zeros(name, seed):
    """The drop-mode pattern of one draw contains the Jacobian of other draws."""
    f = RANDOM[name]
    x = torch.rand(N, dtype=torch.float64) + 0.5
    torch.manual_seed(seed)
    p = _drop(f, x)
    for s in range(4):
        torch.manual_seed(seed + 1 + s)
        assert_sound(p, dense_nonzeros(f, [x])[0], f" ({name}, draw {s})")
