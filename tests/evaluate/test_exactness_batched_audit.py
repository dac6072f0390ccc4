"""Plans compare a few colors of the batched (torch.func.vmap) product with plain autograd."""
import warnings

import pytest
import torch

import trackjac

DT = torch.float64


def _cdist_case():
    # torch.func.jacrev(torch.cdist) is off by ~1 at these sizes (torch 2.13), autograd is right
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, dtype=DT, generator=g)
    y = torch.randn(4, 2, dtype=DT, generator=g)
    return x, y


def _dense(f, *args):
    J = torch.autograd.functional.jacobian(f, args)
    out = f(*args)
    return [j.reshape(out.numel(), a.numel()) for j, a in zip(J, args)]


def test_the_case_reproduces_the_torch_bug():
    x, y = _cdist_case()
    want = _dense(lambda x: torch.cdist(x, y), x)[0]
    got = torch.func.jacrev(lambda x: torch.cdist(x, y))(x).reshape(want.shape)
    if torch.allclose(got, want):
        pytest.skip("this torch's vmap over the cdist vjp is right: nothing to catch")


@pytest.mark.parametrize("chunk_size", [None, 2, 3])  # one color per batch is right
def test_plan_falls_back_where_vmap_is_wrong(chunk_size):
    x, y = _cdist_case()

    def dist(x):
        return torch.cdist(x, y)

    plan = trackjac.jacobian_plan(dist, x, mode="rev", chunk_size=chunk_size)
    with pytest.warns(RuntimeWarning, match="torch.cdist"):
        J = plan(x)
    torch.testing.assert_close(J.to_dense(), _dense(dist, x)[0])
    x2 = torch.randn(3, 2, dtype=DT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # the decision is made once per plan
        J2 = plan(x2)
    torch.testing.assert_close(J2.to_dense(), _dense(dist, x2)[0])


def test_jacobian_is_right_for_cdist_of_two_arguments():
    x, y = _cdist_case()
    with pytest.warns(RuntimeWarning, match="cdist"):
        Jx, Jy = trackjac.jacobian(torch.cdist, x, y, mode="rev")
    want = _dense(torch.cdist, x, y)
    torch.testing.assert_close(Jx.to_dense(), want[0])
    torch.testing.assert_close(Jy.to_dense(), want[1])


def test_audit_is_silent_where_vmap_is_right():
    x = torch.randn(20, dtype=DT)

    def f(x):
        return x.sin() * x.roll(1)

    for mode in ("rev", "fwd"):
        plan = trackjac.jacobian_plan(f, x, mode=mode)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            J = plan(x)
        assert plan._audited and not plan._fallback
        torch.testing.assert_close(J.to_dense(), _dense(f, x)[0])


def test_compiled_product_is_audited_too(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # "compiled" = the same batched product
    x, y = _cdist_case()

    def dist(x):
        return torch.cdist(x, y)

    plan = trackjac.jacobian_plan(dist, x, mode="rev", compile=True)
    assert plan._compiled is not None
    with pytest.warns(RuntimeWarning, match="torch.cdist"):
        J = plan(x)
    assert plan._compiled is None and plan._fallback
    torch.testing.assert_close(J.to_dense(), _dense(dist, x)[0])
