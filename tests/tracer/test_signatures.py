"""jacobian_sparsity takes torch.func's argnums, has_aux, keyword arguments and pytrees; every
block is compared with torch.func.jacrev's dense Jacobian at the same point."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac

DT = torch.float64


def _nz(jac_block, out, inp):
    return jac_block.reshape(out.numel(), inp.numel()) != 0


def _assert_sound(p, nz):
    p = p.to_dense()
    assert not (nz & ~p).any()


def f(x, y, scale=1.0):
    return x.roll(1) * y[:3] * scale + x.sin()


@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0), -1, (1,)])
def test_argnums_like_jacrev(argnums):
    x, y = torch.randn(3, dtype=DT), torch.randn(5, dtype=DT)
    p = trackjac.jacobian_sparsity(f, x, y, argnums=argnums)
    ref = torch.func.jacrev(f, argnums=argnums)(x, y)
    nums = (argnums,) if isinstance(argnums, int) else argnums
    args = (x, y)
    if isinstance(argnums, int):
        p, ref = (p,), (ref,)
    assert len(p) == len(nums)
    for pb, rb, k in zip(p, ref, nums):
        _assert_sound(pb, _nz(rb, f(x, y), args[k]))
        assert pb.shape == (3, args[k].numel())


def test_kwargs_reach_f_and_are_not_tracked():
    x, y = torch.randn(3, dtype=DT), torch.randn(5, dtype=DT)
    s = torch.tensor(2.0, dtype=DT)
    p = trackjac.jacobian_sparsity(f, x, y, scale=s)
    assert len(p) == 2   # the keyword tensor is passed, not differentiated
    ref = torch.func.jacrev(lambda x, y: f(x, y, scale=s))(x, y)
    assert torch.equal(p[0].to_dense(), ref != 0)


def test_dict_input_and_output():
    def g(d):
        return {"a": d["u"] * d["v"].sum(), "b": d["u"].cumsum(0)}

    d = {"u": torch.randn(4, dtype=DT), "v": torch.randn(2, dtype=DT)}
    p = trackjac.jacobian_sparsity(g, d)
    ref = torch.func.jacrev(g)(d)
    assert set(p) == {"a", "b"} and set(p["a"]) == {"u", "v"}
    out = g(d)
    for ko in ("a", "b"):
        for ki in ("u", "v"):
            nz = _nz(ref[ko][ki], out[ko], d[ki])
            assert torch.equal(p[ko][ki].to_dense(), nz)   # tight here: no zero constants


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), m=st.integers(1, 5), nested=st.booleans())
def test_list_pytrees(n, m, nested):
    xs = [torch.randn(n, dtype=DT), torch.randn(m, dtype=DT)]
    arg = [xs[0], (xs[1],)] if nested else xs

    def g(a):
        first = a[0]
        second = a[1][0] if nested else a[1]
        return (first * second.sum(), second.exp())

    p = trackjac.jacobian_sparsity(g, arg)
    ref = torch.func.jacrev(g)(arg)
    outs = g(arg)
    for po, ro, o in zip(p, ref, outs):
        blocks_p = [po[0], po[1][0]] if nested else list(po)
        blocks_r = [ro[0], ro[1][0]] if nested else list(ro)
        for pb, rb, x in zip(blocks_p, blocks_r, xs):
            _assert_sound(pb, _nz(rb, o, x))


def test_has_aux():
    def g(x):
        y = x * 2
        return y.cumsum(0), {"norm": y.norm(), "n": 3}

    x = torch.randn(4, dtype=DT)
    p, aux = trackjac.jacobian_sparsity(g, x, has_aux=True)
    assert torch.equal(p.to_dense(), torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    assert type(aux["norm"]) is torch.Tensor and aux["n"] == 3
    torch.testing.assert_close(aux["norm"], (x * 2).norm())


def test_signature_errors():
    x = torch.randn(3, dtype=DT)
    with pytest.raises(ValueError, match="out of range"):
        trackjac.jacobian_sparsity(f, x, x, argnums=2)
    with pytest.raises(TypeError, match="holds no floating-point tensor"):
        trackjac.jacobian_sparsity(lambda x, k: x * k, x, 3, argnums=1)
    with pytest.raises(TypeError, match="pair"):
        trackjac.jacobian_sparsity(lambda x: x * 2, x, has_aux=True)
    with pytest.raises(TypeError, match="pytree of tensors"):
        trackjac.jacobian_sparsity(lambda x: None, x)
    with pytest.raises(ValueError, match="twice"):
        trackjac.jacobian_sparsity(f, x, x, argnums=(0, 0))
