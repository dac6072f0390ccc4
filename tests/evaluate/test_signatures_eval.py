"""jacobian / jacobian_plan / check_jacobian and the Hessian functions take torch.func's argnums,
has_aux, keyword arguments and pytrees; every value is compared with torch.func.jacrev /
jacfwd(jacrev) (dense) at the same point, every nesting with theirs and jacobian_sparsity's."""
import pathlib
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import jacfwd, jacrev
from torch.utils._pytree import tree_flatten, tree_structure

import trackjac

DT = torch.float64


def _r(*shape):
    return torch.randn(*shape, dtype=DT)


def assert_like(got, want):
    """Same nesting as the dense torch.func result, and the same values in every block."""
    g, gs = tree_flatten(got)
    w, ws = tree_flatten(want)
    assert gs == ws, (gs, ws)
    for a, b in zip(g, w):
        assert a.dim() == 2 and a.layout != torch.strided
        torch.testing.assert_close(a.to_dense().reshape(b.shape), b)


def assert_same_nesting(a, b):
    assert tree_structure(a) == tree_structure(b)


def fd(d, w, *, scale=1.0, power=2):
    y = torch.sin(d["a"]) * scale + d["b"][:3] ** power * w
    return {"y": y, "z": (d["a"] * w).sum(0, keepdim=True)}


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("argnums", [None, 0, 1, -1, (0, 1), (1, -2)])
def test_dict_input_dict_output_argnums_kwargs(mode, argnums):
    d, w = {"a": _r(3), "b": _r(4)}, _r(3)
    kw = dict(scale=torch.tensor(2.0, dtype=DT), power=3)
    ref = jacrev(lambda d, w: fd(d, w, **kw), argnums=0 if argnums is None else argnums)(d, w)
    if argnums is None:   # default: every argument, a tuple over them
        ref = jacrev(lambda d, w: fd(d, w, **kw), argnums=(0, 1))(d, w)
    plan = trackjac.jacobian_plan(fd, d, w, argnums=argnums, mode=mode, **kw)
    assert_like(plan(d, w, **kw), ref)
    assert_like(trackjac.jacobian(fd, d, w, argnums=argnums, mode=mode, verify=True, **kw), ref)
    pattern = trackjac.jacobian_sparsity(fd, d, w, argnums=argnums, **kw)
    assert_same_nesting(plan.pattern, pattern)
    assert_same_nesting(plan.pattern, ref)
    trackjac.check_jacobian(fd, d, w, argnums=argnums, **kw)
    value, jac = plan.value_and_jacobian(d, w, **kw)
    assert_like(jac, ref)
    for k in ("y", "z"):
        torch.testing.assert_close(value[k], fd(d, w, **kw)[k])


def test_plan_at_a_second_point_with_new_kwargs():
    d, w = {"a": _r(3), "b": _r(4)}, _r(3)
    plan = trackjac.jacobian_plan(fd, d, w, argnums=0, scale=2.0, power=2)
    d2, w2 = {"a": _r(3), "b": _r(4)}, _r(3)
    ref = jacrev(lambda d, w: fd(d, w, scale=-0.5, power=2), argnums=0)(d2, w2)
    assert_like(plan(d2, w2, scale=-0.5, power=2), ref)
    # a tensor keyword argument is not differentiated, and its new value is used
    s = torch.tensor(3.0, dtype=DT)
    plan = trackjac.jacobian_plan(fd, d, w, scale=s)
    s2 = torch.tensor(-7.0, dtype=DT)
    assert_like(plan(d2, w2, scale=s2), jacrev(lambda d, w: fd(d, w, scale=s2), argnums=(0, 1))(d2, w2))


def test_list_and_nested_tuple_inputs():
    def f(xs, pair):
        (u, (v, t)) = pair
        return [xs[0] * u.sum(), xs[1].cumsum(0) * v[0] + t.exp()]

    xs, pair = [_r(2), _r(2)], (_r(3), (_r(2), _r(2)))
    for argnums in (0, 1, (0, 1)):
        ref = jacrev(f, argnums=argnums)(xs, pair)
        assert_like(trackjac.jacobian(f, xs, pair, argnums=argnums), ref)
        plan = trackjac.jacobian_plan(f, xs, pair, argnums=argnums)
        xs2, pair2 = [_r(2), _r(2)], (_r(3), (_r(2), _r(2)))
        assert_like(plan(xs2, pair2), jacrev(f, argnums=argnums)(xs2, pair2))


def test_argnums_excluding_a_floating_tensor_uses_its_new_value():
    def f(x, c):
        return x * c.sum() + x.roll(1) * c[0]

    x, c = _r(4), _r(3)
    plan = trackjac.jacobian_plan(f, x, c, argnums=0)
    x2, c2 = _r(4), _r(3) * 5
    ref = jacrev(f, argnums=0)(x2, c2)
    assert_like(plan(x2, c2), ref)
    assert plan(x2, c2).shape == (4, 4)   # c is not differentiated: no block for it
    reuse = trackjac.jacobian_plan(f, x, c, argnums=0, constant_entries="reuse")
    assert_like(reuse(x2, c), jacrev(f, argnums=0)(x2, c))
    with pytest.raises(ValueError, match="not differentiated"):   # constants computed with the old c
        reuse(x2, c2)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_has_aux_returns_detached_aux_of_the_same_evaluation(mode):
    def f(x, w):
        y = torch.tanh(x) * w
        return {"y": y}, {"mean": y.mean(), "x2": x * 2, "tag": "label"}

    x = _r(4)
    w = _r(4).requires_grad_()
    plan = trackjac.jacobian_plan(f, x, w, argnums=0, has_aux=True, mode=mode)
    x2 = _r(4)
    jac, aux = plan(x2, w)
    ref, raux = jacrev(lambda x, w: (f(x, w)[0], {k: v for k, v in f(x, w)[1].items() if k != "tag"}),
                       argnums=0, has_aux=True)(x2, w)
    assert_like(jac, ref)
    assert aux["tag"] == "label"
    for k in ("mean", "x2"):
        torch.testing.assert_close(aux[k], raux[k])
        assert type(aux[k]) is torch.Tensor and not aux[k].requires_grad and aux[k].grad_fn is None
    value, jac2, aux2 = plan.value_and_jacobian(x2, w)
    assert_like(jac2, ref)
    torch.testing.assert_close(aux2["mean"], value["y"].mean())
    one, one_aux = trackjac.jacobian(f, x, w, argnums=0, has_aux=True, verify=True)
    torch.testing.assert_close(one_aux["x2"], x * 2)
    trackjac.check_jacobian(f, x, w, argnums=0, has_aux=True)
    with pytest.raises(TypeError, match="pair"):
        trackjac.jacobian(lambda x: x * 2, x, has_aux=True)


def test_wrong_structure_at_call_is_a_value_error():
    d, w = {"a": _r(3), "b": _r(4)}, _r(3)
    plan = trackjac.jacobian_plan(fd, d, w, scale=2.0)
    with pytest.raises(ValueError, match="structured"):
        plan({"a": d["a"]}, w, scale=2.0)
    with pytest.raises(ValueError, match="structured"):
        plan(d, w)                          # the keyword argument is missing
    with pytest.raises(ValueError, match="structured"):
        plan([d["a"], d["b"]], w, scale=2.0)
    with pytest.raises(ValueError, match=r"args\[0\]\['b'\]"):
        plan({"a": d["a"], "b": _r(5)}, w, scale=2.0)
    with pytest.raises(ValueError, match=r"args\[1\]"):
        plan(d, w.float(), scale=2.0)
    legacy = trackjac.jacobian_plan(torch.sin, w)
    with pytest.raises(TypeError, match="keyword"):
        legacy(w, scale=2.0)


def test_plain_positional_calls_keep_the_autograd_functional_nesting():
    x, y = _r(3), _r(3)
    jac = trackjac.jacobian(lambda a, b: (a * b, a.sin()), x, y)
    ref = torch.autograd.functional.jacobian(lambda a, b: (a * b, a.sin()), (x, y))
    assert isinstance(jac, tuple) and len(jac) == 2 and all(len(r) == 2 for r in jac)
    for jr, rr in zip(jac, ref):
        for a, b in zip(jr, rr):
            torch.testing.assert_close(a.to_dense(), b)
    # keyword arguments alone do not change it (as in jacobian_sparsity)
    jac = trackjac.jacobian(lambda a, s=1.0: a * s, x, s=3.0)
    torch.testing.assert_close(jac.to_dense(), 3.0 * torch.eye(3, dtype=DT))


def test_pattern_argument_nested_like_the_jacobian():
    d, w = {"a": _r(3), "b": _r(4)}, _r(3)
    pattern = trackjac.jacobian_sparsity(fd, d, w, argnums=0)
    ref = jacrev(fd, argnums=0)(d, w)
    assert_like(trackjac.jacobian(fd, d, w, argnums=0, pattern=pattern), ref)
    with pytest.raises(ValueError, match="nested"):
        trackjac.jacobian(fd, d, w, argnums=0, pattern=pattern["y"])


# -- Hessians ------------------------------------------------------------------


def fh(d, w, *, p=2.0):
    return (d["a"] ** 3).sum() + (d["a"][:2] * d["b"][1:]).sum() * p + (w ** 2 * d["a"]).sum() + (w * d["b"]).sum()


def _href(f, argnums, *args):
    # torch.func.hessian mishandles negative argnums (zeros in torch 2.13): the reference uses positive ones
    return torch.func.hessian(f, argnums=argnums)(*args)


@pytest.mark.parametrize("argnums,positive", [(0, 0), (1, 1), (-1, 1), ((0, 1), (0, 1)), ((1,), (1,))])
def test_hessian_pytrees_argnums_kwargs(argnums, positive):
    d, w = {"a": _r(3), "b": _r(3)}, _r(3)
    g = lambda d, w: fh(d, w, p=3.0)  # noqa: E731
    ref = _href(g, positive, d, w)
    assert_like(trackjac.hessian(fh, d, w, argnums=argnums, p=3.0, verify=True), ref)
    plan = trackjac.hessian_plan(fh, d, w, argnums=argnums, p=3.0)
    d2, w2 = {"a": _r(3), "b": _r(3)}, _r(3)
    assert_like(plan(d2, w2, p=-1.0), _href(lambda d, w: fh(d, w, p=-1.0), positive, d2, w2))
    assert_same_nesting(plan.pattern, ref)
    assert_same_nesting(trackjac.hessian_sparsity(fh, d, w, argnums=argnums, p=3.0), ref)
    value, grad, hess = plan.value_and_hessian(d2, w2, p=-1.0)
    gref = torch.func.grad(lambda d, w: fh(d, w, p=-1.0), argnums=positive)(d2, w2)
    assert tree_structure(grad) == tree_structure(gref)
    for a, b in zip(tree_flatten(grad)[0], tree_flatten(gref)[0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(value, fh(d2, w2, p=-1.0))
    plan.check(d2, w2, p=-1.0)
    trackjac.check_hessian(fh, d, w, argnums=argnums, p=3.0)
    with pytest.raises(ValueError, match="structured"):
        plan(d2, w2)


def test_hessian_has_aux_and_excluded_argument():
    def f(x, c):
        v = (x.sin() * c).sum() + (x[:-1] * x[1:]).sum()
        return v, {"v": v, "c": c}

    x, c = _r(5), _r(5)
    plan = trackjac.hessian_plan(f, x, c, argnums=0, has_aux=True)
    x2, c2 = _r(5), _r(5) * 3
    hess, aux = plan(x2, c2)
    ref, raux = jacfwd(jacrev(f, argnums=0, has_aux=True), argnums=0, has_aux=True)(x2, c2)
    assert_like(hess, ref)
    torch.testing.assert_close(aux["v"], raux["v"])
    assert type(aux["v"]) is torch.Tensor and not aux["v"].requires_grad
    pattern, paux = trackjac.hessian_sparsity(f, x, c, argnums=0, has_aux=True)
    torch.testing.assert_close(paux["c"], c)
    assert type(paux["v"]) is torch.Tensor
    assert not ((ref != 0) & ~pattern.to_dense()).any()
    value, grad, _, aux2 = plan.value_and_hessian(x2, c2)
    torch.testing.assert_close(aux2["v"], value)
    h1, a1 = trackjac.hessian(f, x, c, argnums=0, has_aux=True)
    torch.testing.assert_close(a1["v"], f(x, c)[0])


# -- generated pytrees ---------------------------------------------------------

_leaf = st.integers(1, 3).map(lambda n: ("leaf", n))
_tree = st.recursive(
    _leaf,
    lambda kids: st.one_of(st.lists(kids, min_size=1, max_size=3).map(lambda v: ("list", v)),
                           st.lists(kids, min_size=1, max_size=3).map(lambda v: ("tuple", v)),
                           st.dictionaries(st.sampled_from("abcd"), kids, min_size=1, max_size=3)
                           .map(lambda v: ("dict", v))),
    max_leaves=4)


def _build(spec, gen):
    kind, v = spec
    if kind == "leaf":
        return torch.randn(v, dtype=DT, generator=gen)
    if kind == "dict":
        return {k: _build(s, gen) for k, s in v.items()}
    items = [_build(s, gen) for s in v]
    return items if kind == "list" else tuple(items)


_OPS = [lambda a, b: a.sin() * b.sum(), lambda a, b: a * b[0], lambda a, b: (a * a).cumsum(0) + b.mean(),
        lambda a, b: a.roll(1) * b[-1].exp()]


@settings(max_examples=15, deadline=None)
@given(args=st.lists(_tree, min_size=1, max_size=2), ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9),
       st.integers(0, 9)), min_size=1, max_size=3), dict_out=st.booleans(), which=st.integers(0, 2),
       seed=st.integers(0, 2 ** 16))
def test_generated_pytrees_match_jacrev(args, ops, dict_out, which, seed):
    gen = torch.Generator().manual_seed(seed)
    values = [_build(s, gen) for s in args]
    n_leaves = len(tree_flatten(values)[0])

    def f(*a):
        leaves = tree_flatten(list(a))[0]
        outs = [_OPS[o](leaves[i % n_leaves], leaves[j % n_leaves]) for o, i, j in ops]
        return {f"o{k}": o for k, o in enumerate(outs)} if dict_out else outs

    argnums = [0, -1, tuple(range(len(values)))][which]
    ref = jacrev(f, argnums=argnums)(*values)
    assert_like(trackjac.jacobian(f, *values, argnums=argnums), ref)
    assert_same_nesting(trackjac.jacobian_sparsity(f, *values, argnums=argnums), ref)
    plan = trackjac.jacobian_plan(f, *values, argnums=argnums)
    new = [_build(s, gen) for s in args]
    assert_like(plan(*new), jacrev(f, argnums=argnums)(*new))


def test_docs_example_runs():
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = doc[doc.index("## torch.func-style signatures"):]
    section = section[:section.index("\n## ", 1)]
    code = re.findall(r"```python\n(.*?)```", section, re.S)
    assert code
    for block in code:
        exec(compile(block, "docs/api.md", "exec"), {})
