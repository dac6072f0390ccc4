"""Plans choose their intra-op thread count by measuring, and always restore the caller's."""
import pytest
import torch

import trackjac
from dense_reference import dense_jacobian


def f(x):
    return torch.sin(x) * x.roll(1)


@pytest.fixture
def two_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def test_threads_measured_on_calls_two_and_three(two_threads):
    x = torch.randn(50, dtype=torch.float64)
    plan = trackjac.jacobian_plan(f, x)
    assert plan.threads is None
    for k in range(4):
        J = plan(x)
        assert torch.get_num_threads() == 2   # restored after every call
        torch.testing.assert_close(J.to_dense(), dense_jacobian(f, x))
        if k < 2:
            assert plan.threads is None
    assert plan.threads in (0, 1) and set(plan._timed) == {1, 2}


def test_threads_fixed(two_threads):
    x = torch.randn(20, dtype=torch.float64)
    seen = []

    def g(x):
        seen.append(torch.get_num_threads())
        return f(x)

    plan = trackjac.jacobian_plan(g, x, threads=1)
    seen.clear()
    plan(x)
    assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    assert plan.threads == 1


def test_threads_checked():
    with pytest.raises(ValueError, match="threads"):
        trackjac.jacobian_plan(f, torch.randn(5, dtype=torch.float64), threads=-1)
