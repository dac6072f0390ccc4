"""Plans of functions that draw random numbers: every color must see the same draw."""
import warnings

import pytest
import torch

import trackjac



@pytest.fixture(autouse=True)
def _float64():
    """float64 here, restored after each test (a module-level setting leaked into other files)."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def f(x):
    return torch.nn.functional.dropout(x, 0.5, training=True) * x + torch.rand_like(x) * x.roll(1)


def _dense(fn, x, seed):
    torch.manual_seed(seed)
    return torch.autograd.functional.jacobian(fn, x)


def _plan_jac(plan, x, seed):
    torch.manual_seed(seed)
    return plan.value_and_jacobian(x)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("chunk_size", [None, 2])
@pytest.mark.parametrize("fallback", [False, True])
def test_random_draws_are_shared_by_all_colors(mode, chunk_size, fallback):
    x = torch.randn(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = trackjac.jacobian_plan(f, x, mode=mode, chunk_size=chunk_size)
    if fallback:
        plan._fallback = True  # the per-color torch.autograd loop
    for seed in (0, 1, 2):
        value, J = _plan_jac(plan, x, seed)
        torch.manual_seed(seed)
        want_value = f(x)
        assert torch.equal(value, want_value)
        torch.testing.assert_close(J.to_dense(), _dense(f, x, seed))


def test_rng_advances_like_one_call():
    """After an evaluation the generator is where one call of f leaves it."""
    x = torch.randn(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = trackjac.jacobian_plan(f, x, mode="fwd", chunk_size=3)
        plan._fallback = True
    torch.manual_seed(5)
    plan(x)
    after_plan = torch.rand(3)
    torch.manual_seed(5)
    f(x)
    assert torch.equal(after_plan, torch.rand(3))


class _Old(torch.autograd.Function):  # old-style: torch.func cannot transform it
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.cos()


def test_old_style_function_forces_loop_with_one_draw():
    def h(x):
        return torch.nn.functional.dropout(_Old.apply(x), 0.3, training=True) * x.roll(-1)

    x = torch.randn(9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = trackjac.jacobian_plan(h, x, mode="rev")
        _, J = _plan_jac(plan, x, 3)
    assert plan._fallback
    torch.testing.assert_close(J.to_dense(), _dense(h, x, 3))


def _dropout_square(x):
    return torch.nn.functional.dropout(x, 0.5, training=True) * x + x.roll(1) ** 2


def _from_value(v, x):
    """The Jacobian of _dropout_square for the mask that produced the value ``v``."""
    mask = ((v - x.roll(1) ** 2).abs() > 1e-12).to(x.dtype)
    want = torch.diag(4 * mask * x)
    idx = torch.arange(x.numel())
    want[idx, (idx - 1) % x.numel()] += 2 * x.roll(1)
    return want


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_check_compares_the_same_draw(mode):
    """plan.check, check_jacobian and verify=True compare with autograd on the draw they evaluated."""
    x = torch.randn(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(3):
            torch.manual_seed(seed)
            plan = trackjac.jacobian_plan(f, x, mode=mode)
            plan.check(x, rows=30, cols=30)
            trackjac.check_jacobian(_dropout_square, x, rows=30, cols=30)
            trackjac.jacobian(_dropout_square, x, mode=mode, verify=True)
            trackjac.jacobian_plan(_dropout_square, x, mode=mode, verify=True)


def test_check_still_catches_a_wrong_jacobian_of_a_random_f():
    x = torch.randn(20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrong = trackjac.jacobian(lambda x: _dropout_square(x) * 1.5, x)
        with pytest.raises(trackjac.JacobianCheckError):
            trackjac.check_jacobian(_dropout_square, x, jac=wrong, rows=20, cols=20)


def test_compiled_forward_chunks_share_one_draw():
    """compile=True with several forward chunks: each chunk is compiled apart and rewinds the RNG."""
    x = torch.randn(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = trackjac.jacobian_plan(_dropout_square, x, mode="fwd", chunk_size=1, compile=True)
        for seed in (0, 1):
            torch.manual_seed(seed)
            v, J = plan.value_and_jacobian(x)
            torch.testing.assert_close(J.to_dense(), _from_value(v, x))
