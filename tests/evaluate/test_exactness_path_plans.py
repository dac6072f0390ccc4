"""Plans built where f branched on a tracked value refuse points that take another path."""
import warnings

import pytest
import torch

import trackjac
from trackjac.errors import ControlFlowWarning, StrictModeError
from trackjac.evaluate import PathChangedError

DT = torch.float64


def branchy(x):
    return x * 2 if x.sum() > 0 else x ** 2


def _dense(f, x):
    return torch.autograd.functional.jacobian(f, x).reshape(-1, x.numel())


def _build(f, x, **kw):
    with pytest.warns(ControlFlowWarning):
        return trackjac.jacobian_plan(f, x, **kw)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_other_branch_raises(mode):
    x = torch.rand(5, dtype=DT) + 0.1          # sum > 0: x * 2
    plan = _build(branchy, x, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fwd: vmap cannot branch, the loop runs
        torch.testing.assert_close(plan(x).to_dense(), _dense(branchy, x))
        x_same = torch.rand(5, dtype=DT) + 0.5
        torch.testing.assert_close(plan(x_same).to_dense(), _dense(branchy, x_same))
    x_other = -torch.rand(5, dtype=DT) - 0.1   # sum < 0: x ** 2, another Jacobian
    with pytest.raises(PathChangedError, match="another control-flow path"):
        plan(x_other)
    with pytest.raises(ValueError):
        plan.value_and_jacobian(x_other)


def test_integer_read_that_changes_raises():
    def pick(x):
        i = int(x.argmax())
        return x * x[i]

    x = torch.tensor([3.0, 1.0, 2.0], dtype=DT)
    plan = _build(pick, x, mode="rev")
    torch.testing.assert_close(plan(x).to_dense(), _dense(pick, x))
    y = torch.tensor([1.0, 3.0, 2.0], dtype=DT)
    with pytest.raises(PathChangedError, match="read 0 at build, 1 now"):
        plan(y)


def test_reads_of_untracked_values_do_not_make_a_plan_path_dependent():
    c = torch.ones(3, dtype=DT)

    def f(x):
        return x * 2 if c.sum() > 0 else x

    x = torch.randn(3, dtype=DT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ControlFlowWarning)
        plan = trackjac.jacobian_plan(f, x)
    assert plan.structure.path is None   # nothing recorded, nothing replayed per call
    torch.testing.assert_close(plan(-x).to_dense(), _dense(f, -x))


def test_strict_plans_refuse_at_build():
    with pytest.raises(StrictModeError):
        trackjac.jacobian_plan(branchy, torch.rand(4, dtype=DT), strict=True)


def test_plan_from_a_user_pattern_checks_the_path():
    """With pattern= nothing is traced; Python's reads of values still choose the path."""
    x = torch.rand(5, dtype=DT) + 0.1
    pattern = torch.eye(5, dtype=torch.bool).to_sparse()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plan = trackjac.jacobian_plan(branchy, x, pattern=pattern, mode="rev")
        torch.testing.assert_close(plan(x).to_dense(), _dense(branchy, x))
    with pytest.raises(PathChangedError):
        plan(-x)


def test_plan_from_a_user_pattern_without_reads_has_no_guard():
    x = torch.rand(5, dtype=DT)
    plan = trackjac.jacobian_plan(lambda x: x.sin(), x, pattern=torch.eye(5, dtype=torch.bool).to_sparse())
    torch.testing.assert_close(plan(-x).to_dense(), _dense(torch.sin, -x))
    assert plan.structure.path is None
