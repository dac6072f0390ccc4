"""``trackjac.SparsityPattern``: blocks, shapes, names and nesting of a real function's pattern,
checked against ``jacobian_sparsity``'s nested result, ``depends_on`` and the dense autograd
Jacobian; conversions; ``spy``, the CLI, ``to_scipy`` and the engine accepting it."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from dense_reference import assert_sound, dense_nonzeros
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import hessian as dense_hessian
from torch.utils._pytree import tree_flatten

import trackjac
from trackjac import SparsityPattern, Tracked, jacobian_sparsity
from trackjac.__main__ import main

D = torch.float64


def three_outputs(x, y):
    """Outputs of three sizes and shapes from two inputs."""
    return (x * y.sum(), (x[:2].sin().unsqueeze(1) * y[1:]).reshape(2, 3), (x.prod() + y[0]).reshape(()))


def with_dict(x, params):
    return {"u": x * params["w"][:4], "v": params["b"].exp() * x.sum()}


def xy():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, generator=g, dtype=D), torch.randn(4, generator=g, dtype=D)


def dict_args():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, generator=g, dtype=D), {"w": torch.randn(5, generator=g, dtype=D),
                                                   "b": torch.randn(2, 3, generator=g, dtype=D)}


def assert_same_nesting(a, b):
    la, sa = tree_flatten(a)
    lb, sb = tree_flatten(b)
    assert sa == sb
    for p, q in zip(la, lb):
        assert p.layout == q.layout == torch.sparse_coo and p.shape == q.shape
        assert torch.equal(p.to_dense(), q.to_dense())


def stacked_nonzeros(f, args):
    """The dense autograd Jacobian's nonzeros, outputs stacked as rows and inputs as columns."""
    return torch.cat(dense_nonzeros(f, args), dim=1)


# -- the object from real functions ------------------------------------------------------------


def test_several_outputs_of_different_sizes():
    x, y = xy()
    p = jacobian_sparsity(three_outputs, x, y, result="pattern")
    assert isinstance(p, SparsityPattern)
    assert p.out_shapes == (torch.Size([4]), torch.Size([2, 3]), torch.Size([]))
    assert p.in_shapes == (torch.Size([4]), torch.Size([4]))
    assert p.out_names == ("output 0", "output 1", "output 2") and p.in_names == ("x", "y")
    assert p.shape == (11, 8) and p.nesting.style == "autograd"
    assert_same_nesting(p.nested(), jacobian_sparsity(three_outputs, x, y))
    nz = stacked_nonzeros(three_outputs, (x, y))
    assert_sound(p.to_dense(), nz)
    assert p.nnz == int(p.to_dense().sum()) and p.density == p.nnz / 88
    assert p.block(1, "y").shape == (6, 4) and torch.equal(p.block(1, "y").to_dense(), p.block(-2, 1).to_dense())


def test_dict_input_and_output():
    x, params = dict_args()
    p = jacobian_sparsity(with_dict, x, params, result="pattern")
    assert p.in_names == ("x", "params['w']", "params['b']")   # the dict's order, as torch's pytrees flatten it
    assert p.out_names == ("u", "v") and p.nesting.style == "pytree"
    assert_same_nesting(p.nested(), jacobian_sparsity(with_dict, x, params))
    flat = lambda x, w, b: tuple(with_dict(x, {"w": w, "b": b}).values())  # noqa: E731
    assert_sound(p.to_dense(), stacked_nonzeros(flat, (x, params["w"], params["b"])))
    assert p.view("v", "params['b']").shape == (2, 3, 2, 3)


def test_view_is_depends_on():
    x, y = xy()
    p = jacobian_sparsity(three_outputs, x, y, result="pattern")
    with trackjac.tracking():
        tx, ty = Tracked(x), Tracked(y)
        outs = three_outputs(tx, ty)
        for j, o in enumerate(outs):
            for i, src in enumerate((tx, ty)):
                want = o.depends_on(src, layout=torch.strided)
                assert p.view(j, i).shape == o.shape + src.shape
                assert torch.equal(p.view(j, i), want)
                assert torch.equal(p.view(j, i, layout=torch.sparse_coo).to_dense(), want)


def test_conversions_round_trip():
    x, y = xy()
    p = jacobian_sparsity(three_outputs, x, y, result="pattern")
    dense = p.to_dense()
    coo = p.to_coo()
    assert coo.is_coalesced() and coo.dtype == torch.bool and coo.shape == p.shape
    assert torch.equal(coo.to_dense(), dense) and torch.equal(p.to_csr().to_dense(), dense)
    # the stacked matrix holds each block at its offsets
    ro, co = p.offsets()
    for j in range(3):
        for i in range(2):
            assert torch.equal(dense[ro[j]:ro[j + 1], co[i]:co[i + 1]], p.block(j, i).to_dense())
    # built again from its own blocks in another layout, it is the same pattern
    q = SparsityPattern([[b.to_dense() for b in row] for row in p.blocks], p.out_shapes, p.in_shapes)
    assert torch.equal(q.to_dense(), dense)


def test_to_scipy():
    pytest.importorskip("scipy")
    from trackjac.interop import to_scipy
    x, y = xy()
    p = jacobian_sparsity(three_outputs, x, y, result="pattern")
    dense = p.to_dense().numpy()
    assert (p.to_scipy("csr").toarray() == dense).all()
    assert (to_scipy(p, "csc").toarray() == dense).all() and to_scipy(p, "coo").format == "coo"


def test_hessian_pattern():
    def f(x, y):
        return (x[:3] * y).sin().sum() + (x ** 2).sum()
    x, y = torch.randn(5, dtype=D), torch.randn(3, dtype=D)
    h = trackjac.hessian_sparsity(f, x, y, result="pattern")
    assert h.out_names == h.in_names == ("x", "y") and h.shape == (8, 8)
    assert_same_nesting(h.nested(), trackjac.hessian_sparsity(f, x, y))
    H = dense_hessian(f, (x, y))
    nz = torch.cat([torch.cat([H[a][b].reshape(H[a][b].shape[0], -1) for b in range(2)], 1)
                    for a in range(2)]) != 0
    assert_sound(h.to_dense(), nz)
    assert torch.equal(h.to_dense(), h.to_dense().T)


def test_classify_and_aux():
    x, y = xy()
    c = jacobian_sparsity(three_outputs, x, y, classify=True, result="pattern")
    whole = jacobian_sparsity(three_outputs, x, y, result="pattern").to_dense()
    assert isinstance(c.constant, SparsityPattern) and isinstance(c.variable, SparsityPattern)
    assert torch.equal(c.constant.to_dense() | c.variable.to_dense(), whole)
    assert not (c.constant.to_dense() & c.variable.to_dense()).any()
    p, aux = jacobian_sparsity(lambda x: (x.cumsum(0), x.sum()), x, has_aux=True, result="pattern")
    assert p.shape == (4, 4) and torch.equal(aux, x.sum())


shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


@settings(max_examples=25, deadline=None)
@given(xs=shapes, ys=shapes, cut=st.integers(1, 27))
def test_any_shapes(xs, ys, cut):
    x, y = torch.randn(xs, dtype=D), torch.randn(ys, dtype=D)

    def f(x, y):
        flat = x.reshape(-1)
        return (x.sin() * y.sum(), flat[:cut].cumsum(0) * y.reshape(-1)[0])

    p = jacobian_sparsity(f, x, y, result="pattern")
    outs = f(x, y)
    assert p.out_shapes == tuple(o.shape for o in outs) and p.in_shapes == (x.shape, y.shape)
    assert p.shape == (sum(o.numel() for o in outs), x.numel() + y.numel())
    assert_same_nesting(p.nested(), jacobian_sparsity(f, x, y))
    dense = p.to_dense()
    assert torch.equal(p.to_coo().to_dense(), dense) and torch.equal(p.to_csr().to_dense(), dense)
    assert p.nnz == int(dense.sum())
    assert_sound(dense, stacked_nonzeros(f, (x, y)))
    with trackjac.tracking():
        tx, ty = Tracked(x), Tracked(y)
        for j, o in enumerate(f(tx, ty)):
            for i, s in enumerate((tx, ty)):
                assert torch.equal(p.view(j, i), o.depends_on(s, layout=torch.strided))


# -- consumers ----------------------------------------------------------------------------------


def test_spy_draws_the_block_grid():
    x = torch.randn(5, dtype=D)
    p = jacobian_sparsity(lambda x: (x * 2, x[:3].sin()), x, result="pattern")
    plot = trackjac.spy(p, ascii=True)   # two outputs of different sizes, one input: a column of blocks
    assert plot.shape == (8, 5) and plot.row_breaks == [5] and plot.col_breaks == []
    assert plot.legend() == "blocks: rows = outputs [output 0 (5), output 1 (3)], columns = inputs [x (5)]"
    same = jacobian_sparsity(lambda x: (x * 2, x.sin()), x, result="pattern")   # one block shape: no guess
    assert trackjac.spy(same).shape == (10, 5)
    assert torch.equal(torch.sparse_coo_tensor(torch.stack([plot.rows, plot.cols]), torch.ones(plot.nnz),
                                               plot.shape).to_dense().bool(), p.to_dense())


def test_cli_labels_outputs_and_inputs(tmp_path, capsys):
    mod = tmp_path / "patmod.py"
    mod.write_text(textwrap.dedent("""
        def two(x):
            return x * 2, x[:3].sin()
    """))
    assert main(["spy", f"{mod}:two", "--shapes", "5", "--ascii", "-q", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "8 x 5 pattern, 8 nonzeros" in out
    assert "blocks: rows = outputs [output 0 (5), output 1 (3)], columns = inputs [x (5)]" in out


def test_plans_accept_it():
    x, y = xy()
    p = jacobian_sparsity(three_outputs, x, y, result="pattern")
    a, b = torch.randn(4, dtype=D), torch.randn(4, dtype=D)
    with_obj = trackjac.jacobian_plan(three_outputs, x, y, pattern=p)
    with_nested = trackjac.jacobian_plan(three_outputs, x, y, pattern=p.nested())
    got, want = with_obj(a, b), with_nested(a, b)
    ref = torch.autograd.functional.jacobian(three_outputs, (a, b))
    for j in range(3):
        for i in range(2):
            assert torch.equal(got[j][i].to_dense(), want[j][i].to_dense())
            torch.testing.assert_close(got[j][i].to_dense(), ref[j][i].reshape(got[j][i].shape))
    s = with_obj.sparsity
    assert isinstance(s, SparsityPattern) and s.in_names == ("x", "y") and torch.equal(s.to_dense(), p.to_dense())
    plot = trackjac.spy(with_obj)   # a plan is drawn from its SparsityPattern: its grid and names
    assert plot.shape == (11, 8) and plot.row_breaks == [4, 10] and plot.col_labels == ["x", "y"]
    one = trackjac.jacobian(three_outputs, a, b, pattern=p)
    assert all(torch.equal(one[j][i].to_dense(), got[j][i].to_dense()) for j in range(3) for i in range(2))


def test_hessian_plans_accept_it():
    def f(x, y):
        return (x[:3] * y).sin().sum() + (x ** 2).sum()
    x, y = torch.randn(5, dtype=D), torch.randn(3, dtype=D)
    h = trackjac.hessian_sparsity(f, x, y, result="pattern")
    plan = trackjac.hessian_plan(f, x, y, pattern=h)
    a, b = torch.randn(5, dtype=D), torch.randn(3, dtype=D)
    got, want = plan(a, b), trackjac.hessian_plan(f, x, y, pattern=h.nested())(a, b)
    ref = dense_hessian(f, (a, b))
    for r in range(2):
        for c in range(2):
            assert torch.equal(got[r][c].to_dense(), want[r][c].to_dense())
            torch.testing.assert_close(got[r][c].to_dense(), ref[r][c])
    assert plan.sparsity.out_names == ("x", "y") and torch.equal(plan.sparsity.to_dense(), h.to_dense())


# -- bad input ------------------------------------------------------------------------------------


def test_errors():
    x, y = xy()
    p = jacobian_sparsity(three_outputs, x, y, result="pattern")
    flat = jacobian_sparsity(lambda x: x.sin(), x, result="pattern")
    with pytest.raises(ValueError, match="SparsityPattern is for outputs"):   # same numel, other shape
        trackjac.jacobian_plan(lambda x: x.sin(), x.reshape(2, 2), pattern=flat)
    with pytest.raises(ValueError, match="result must be"):
        jacobian_sparsity(three_outputs, x, y, result="dense")
    with pytest.raises(ValueError, match="layout= applies"):
        jacobian_sparsity(three_outputs, x, y, result="pattern", layout=torch.strided)
    with pytest.raises(ValueError, match="result must be"):
        trackjac.hessian_sparsity(lambda x: x.sum(), x, result="tuple")
    with pytest.raises(KeyError, match="no input named 'z'"):
        p.block(0, "z")
    with pytest.raises(IndexError, match="output 3 out of range"):
        p.view(3, 0)
    with pytest.raises(TypeError, match="must be an int or a name"):
        p.block(True, 0)
    with pytest.raises(ValueError, match=r"block \(0, 0\) has shape \(4, 3\)"):
        SparsityPattern([[torch.zeros(4, 3)]], [(4,)], [(4,)])
    with pytest.raises(ValueError, match="expected 1 x 2 blocks"):
        SparsityPattern([[torch.zeros(4, 4)]], [(4,)], [(4,), (2,)])
    with pytest.raises(ValueError, match="1 input names for 2 inputs"):
        SparsityPattern([[torch.zeros(4, 4), torch.zeros(4, 2)]], [(4,)], [(4,), (2,)], in_names=["a"])


def test_repr():
    x, y = xy()
    r = repr(jacobian_sparsity(three_outputs, x, y, result="pattern"))
    assert r.startswith("SparsityPattern(11 x 8, nnz=")
    assert "outputs=[output 0 (4,), output 1 (2, 3), output 2 ()], inputs=[x (4,), y (4,)]" in r


def test_docs_examples_run():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    marker = "tests/test_pattern.py::test_docs_examples_run -->\n```python\n"
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for page in ("api.md", "concepts.md"):
        text = open(os.path.join(root, "docs", page), encoding="utf-8").read()
        assert marker in text, page
        block = text.split(marker, 1)[1].split("```", 1)[0]
        r = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, f"docs/{page}: {r.stderr[-3000:]}"


def test_pytree_hessian_pattern_nests_like_the_nested_result():
    x = {"a": torch.randn(4, dtype=torch.float64), "b": torch.randn(3, dtype=torch.float64)}

    def f(d):
        return (d["a"] ** 3).sum() + (d["b"][1:] * d["b"][:-1]).sum() + d["a"][0] * d["b"][2]

    p = trackjac.hessian_sparsity(f, x, result="pattern")
    nested = trackjac.hessian_sparsity(f, x)
    dense = torch.func.hessian(f)(x)
    for u in "ab":
        for v in "ab":
            assert torch.equal(p.nested()[u][v].to_dense(), nested[u][v].to_dense())
            assert bool((p.nested()[u][v].to_dense() | (dense[u][v] == 0)).all())   # sound
