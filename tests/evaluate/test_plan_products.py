"""A plan times one autograd call per color against the batched product once and keeps the
faster; either way the values are autograd's."""
import pytest
import torch

import trackjac

from dense_reference import dense_jacobian


def f(x, y):
    return torch.sin(x) * y.roll(1), torch.cumsum(x[:4], 0) * y[:4]


def noisy(x):
    return torch.tanh(x) * (torch.rand_like(x) > 0.3) + x.roll(1) ** 2


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_trial_on_second_call_then_values_either_way(mode):
    x, y = torch.randn(12, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    plan = trackjac.jacobian_plan(f, x, y, mode=mode, threads=1)
    assert plan._looped is None
    plan(x, y)
    assert plan._looped is None      # the first call pays warm-up and the audit: no trial
    plan(x, y)
    assert plan._looped in (True, False)
    for looped in (True, False):
        plan._looped = looped
        x2, y2 = torch.randn_like(x), torch.randn_like(y)
        J, ref = plan(x2, y2), dense_jacobian(f, x2, y2)
        for got_row, want_row in zip(J, ref):
            for got, want in zip(got_row, want_row):
                torch.testing.assert_close(got.to_dense(), want)


def test_no_trial_with_many_colors():
    W = torch.randn(40, 40, dtype=torch.float64)

    def g(x):
        return W @ x

    x = torch.randn(40, dtype=torch.float64)
    plan = trackjac.jacobian_plan(g, x, threads=1)
    assert plan.num_colors > plan.LOOP_TRIAL_COLORS
    for _ in range(3):
        plan(x)
    assert plan._looped is None


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_per_color_product_sees_the_same_draw(mode):
    """A random f: looped and batched evaluations at the same RNG state agree."""
    x = torch.randn(30, dtype=torch.float64)
    plan = trackjac.jacobian_plan(noisy, x, mode=mode, threads=1)
    out = {}
    for looped in (False, True):
        plan._looped = looped
        torch.manual_seed(5)
        out[looped] = plan(x).to_dense()
    torch.testing.assert_close(out[True], out[False])
    torch.manual_seed(5)
    mask = torch.rand_like(x) > 0.3   # the draw both evaluations saw
    want = dense_jacobian(lambda z: torch.tanh(z) * mask + z.roll(1) ** 2, x)
    torch.testing.assert_close(out[True], want)
