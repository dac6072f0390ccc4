"""CSC / BSC layouts and a blocksize per input (or per block): values vs dense autograd, valid
compressed invariants, and clear errors for blocksizes that do not fit."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import trackjac
from trackjac import hessian, hessian_plan, jacobian, jacobian_plan

from dense_reference import dense_jacobian

BLOCKED = (torch.sparse_bsr, torch.sparse_bsc)


def _leaves(x):
    return [z for y in x for z in _leaves(y)] if isinstance(x, tuple) else [x]


def revalidate(J):
    """Rebuild ``J`` from its parts with torch's invariant checks on (sorted, in range, counts)."""
    if J.layout == torch.sparse_csc:
        torch.sparse_csc_tensor(J.ccol_indices(), J.row_indices(), J.values(), J.shape, check_invariants=True)
    elif J.layout == torch.sparse_bsc:
        torch.sparse_bsc_tensor(J.ccol_indices(), J.row_indices(), J.values(), J.shape, check_invariants=True)
    elif J.layout == torch.sparse_bsr:
        torch.sparse_bsr_tensor(J.crow_indices(), J.col_indices(), J.values(), J.shape, check_invariants=True)
    elif J.layout == torch.sparse_csr:
        torch.sparse_csr_tensor(J.crow_indices(), J.col_indices(), J.values(), J.shape, check_invariants=True)


def assert_layout_matches(J, D, layout, sizes=None):
    """Every leaf has ``layout``, valid invariants, the dense values; ``sizes[k]`` its block shape."""
    Jl, Dl = _leaves(J), _leaves(D)
    assert len(Jl) == len(Dl)
    for k, (a, b) in enumerate(zip(Jl, Dl)):
        assert a.layout == layout
        revalidate(a)
        if sizes is not None:
            assert tuple(a.values().shape[1:]) == sizes[k]
        torch.testing.assert_close(a.to_dense(), b, atol=1e-10, rtol=1e-8)


class Gathers:
    """``f(x, y) = (x[i1] * y[i2] + x[i3] ** 2, sin(y[i4]))``: an exactly known sparse pattern
    with output sizes ``R0 * k0``, ``R1 * k1`` and input sizes ``C0 * a``, ``C1 * b``."""

    def __init__(self, sizes, seed):
        (self.m0, self.m1), (self.n0, self.n1) = sizes
        g = torch.Generator().manual_seed(seed)
        self.i1 = torch.randint(self.n0, (self.m0,), generator=g)
        self.i2 = torch.randint(self.n1, (self.m0,), generator=g)
        self.i3 = torch.randint(self.n0, (self.m0,), generator=g)
        self.i4 = torch.randint(self.n1, (self.m1,), generator=g)
        self.args = (torch.randn(self.n0, dtype=torch.float64, generator=g),
                     torch.randn(self.n1, dtype=torch.float64, generator=g))

    def __call__(self, x, y):
        return x[self.i1] * y[self.i2] + x[self.i3] ** 2, torch.sin(y[self.i4])

    def scalar(self, x, y):
        a, b = self(x, y)
        return (a.sin() * a).sum() + (b * x[: self.m1 % self.n0 + 1].sum()).sum()


@st.composite
def blocked(draw):
    """Block shapes per output and input, and sizes they divide."""
    R = [draw(st.integers(1, 3)) for _ in range(2)]
    C = [draw(st.integers(1, 4)) for _ in range(2)]
    m = [r * draw(st.integers(1, 4)) for r in R]
    n = [c * draw(st.integers(1, 4)) for c in C]
    return R, C, (m, n), draw(st.integers(0, 2 ** 16))


@settings(max_examples=30, deadline=None)
@given(blocked(), st.sampled_from(BLOCKED), st.sampled_from(["uniform", "per_input", "dict", "grid"]),
       st.sampled_from(["rev", "fwd"]))
def test_blocked_jacobian_per_input_and_grid(case, layout, form, mode):
    R, C, sizes, seed = case
    f = Gathers(sizes, seed)
    if form == "uniform":  # one blocksize must divide every block
        R, C = [R[0]] * 2, [C[0]] * 2
        bs = (R[0], C[0])
        m, n = sizes
        if any(x % R[0] for x in m) or any(x % C[0] for x in n):
            with pytest.raises(ValueError, match="not a multiple"):
                jacobian(f, *f.args, layout=layout, blocksize=bs, mode=mode)
            return
    elif form == "per_input":  # rows of every output block by the output's R[0]; columns per input
        R = [R[0]] * 2
        if any(x % R[0] for x in sizes[0]):
            R = [1, 1]
        bs = [(R[0], C[0]), (R[0], C[1])]
    elif form == "dict":
        R = [1, 1]
        bs = {0: (1, C[0]), 1: (1, C[1])}
    else:
        bs = [[(R[0], C[0]), (R[0], C[1])], [(R[1], C[0]), (R[1], C[1])]]
    want = [(R[j], C[i]) for j in range(2) for i in range(2)]
    D = dense_jacobian(f, *f.args)
    J = jacobian(f, *f.args, layout=layout, blocksize=bs, mode=mode)
    assert_layout_matches(J, D, layout, want)
    plan = jacobian_plan(f, *f.args, layout=layout, blocksize=bs, mode=mode)
    x2 = tuple(a + 0.5 for a in f.args)
    assert_layout_matches(plan(*x2), dense_jacobian(f, *x2), layout, want)


@settings(max_examples=25, deadline=None)
@given(blocked(), st.sampled_from([torch.sparse_csc, torch.sparse_csr, torch.sparse_coo]),
       st.sampled_from(["rev", "fwd"]), st.sampled_from([None, 1, 2]))
def test_compressed_layouts_any_chunking(case, layout, mode, chunk):
    _, _, sizes, seed = case
    f = Gathers(sizes, seed)
    plan = jacobian_plan(f, *f.args, layout=layout, mode=mode, chunk_size=chunk)
    for shift in (0.0, 1.25):
        x = tuple(a + shift for a in f.args)
        assert_layout_matches(plan(*x), dense_jacobian(f, *x), layout)


def dense_hessian(f, *args):
    H = torch.autograd.functional.hessian(f, args)
    return tuple(tuple(H[a][b].reshape(args[a].numel(), args[b].numel()) for b in range(len(args)))
                 for a in range(len(args)))


@settings(max_examples=20, deadline=None)
@given(blocked(), st.sampled_from(list(BLOCKED) + [torch.sparse_csc]))
def test_hessian_layouts_and_grid(case, layout):
    _, C, sizes, seed = case
    f = Gathers(sizes, seed)
    # H[a][b] is (n_a, n_b): block (C[a], C[b]) always divides it
    bs = None if layout == torch.sparse_csc else [[(C[0], C[0]), (C[0], C[1])], [(C[1], C[0]), (C[1], C[1])]]
    want = None if bs is None else [(C[a], C[b]) for a in range(2) for b in range(2)]
    H = hessian(f.scalar, *f.args, layout=layout, blocksize=bs)
    assert_layout_matches(H, dense_hessian(f.scalar, *f.args), layout, want)
    plan = hessian_plan(f.scalar, *f.args, layout=layout, blocksize=bs)
    x2 = tuple(a - 0.75 for a in f.args)
    assert_layout_matches(plan(*x2), dense_hessian(f.scalar, *x2), layout, want)


def test_hessian_per_input_blocksize_applies_to_the_input_column():
    x, y = torch.randn(6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)

    def f(x, y):
        return (x.reshape(3, 2).sum(1).repeat(2)[:4] * y).pow(2).sum() + x.pow(3).sum()

    H = hessian(f, x, y, layout=torch.sparse_bsc, blocksize=[(2, 3), (2, 2)])
    assert [tuple(b.values().shape[1:]) for r in H for b in r] == [(2, 3), (2, 2), (2, 3), (2, 2)]
    assert_layout_matches(H, dense_hessian(f, x, y), torch.sparse_bsc)


def test_bundle_adjustment_camera_and_point_blocks():
    """The issue's case: 2 x 9 camera blocks and 2 x 3 point blocks from one plan."""
    from problems import bundle_adjustment  # benches/problems.py
    ba = bundle_adjustment(6, 25, seed=1)
    plan = jacobian_plan(ba.residual, *ba.args, layout=torch.sparse_bsr, blocksize=[(2, 9), (2, 3)])
    Jc, Jp = plan(*ba.args)
    assert tuple(Jc.values().shape[1:]) == (2, 9) and tuple(Jp.values().shape[1:]) == (2, 3)
    assert_layout_matches((Jc, Jp), dense_jacobian(ba.residual, *ba.args), torch.sparse_bsr)
    # one camera block and one point block per observation (block row)
    n_obs = Jc.shape[0] // 2
    assert torch.equal(Jc.crow_indices(), torch.arange(n_obs + 1))
    assert torch.equal(Jp.crow_indices(), torch.arange(n_obs + 1))


def test_csc_of_a_diagonal_needs_no_permutation_and_of_a_transpose_does():
    x = torch.randn(5, dtype=torch.float64)
    J = jacobian(torch.sin, x, layout=torch.sparse_csc)
    assert_layout_matches(J, dense_jacobian(torch.sin, x), torch.sparse_csc)
    rev = jacobian(lambda v: v.flip(0) * v, x, layout=torch.sparse_csc)
    assert_layout_matches(rev, dense_jacobian(lambda v: v.flip(0) * v, x), torch.sparse_csc)


def test_empty_pattern_blocked_layouts():
    x = torch.randn(4, dtype=torch.float64)
    for layout in BLOCKED + (torch.sparse_csc,):
        bs = (2, 2) if layout in BLOCKED else None
        J = jacobian(lambda v: torch.zeros(4, dtype=v.dtype), x, layout=layout, blocksize=bs)
        assert J.layout == layout and J.values().numel() == 0 and J.shape == (4, 4)


def test_blocksize_errors():
    x, y = torch.randn(6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)

    def f(x, y):
        return x[:4] * y

    bsc = dict(layout=torch.sparse_bsc)
    with pytest.raises(ValueError, match="needs blocksize"):
        jacobian(f, x, y, **bsc)
    with pytest.raises(ValueError, match=r"block \[0\]\[1\].*input has 4 elements, not a multiple of 3"):
        jacobian(f, x, y, blocksize=[(2, 3), (2, 3)], **bsc)
    with pytest.raises(ValueError, match="one .* per differentiated argument needs 2; got 3"):
        jacobian(f, x, y, blocksize=[(1, 1)] * 3, **bsc)
    with pytest.raises(ValueError, match=r"argument position \[0, 1\]"):
        jacobian(f, x, y, blocksize={0: (1, 1)}, **bsc)
    with pytest.raises(ValueError, match="grid must be 1 output"):
        jacobian(f, x, y, blocksize=[[(1, 1), (1, 1)], [(1, 1), (1, 1)]], **bsc)
    with pytest.raises(ValueError, match="must be positive"):
        jacobian(f, x, y, blocksize=(0, 1), **bsc)
    for bad in ("2x2", (2.0, 2), (True, 1), [(1, 1), 2]):
        with pytest.raises(ValueError, match="blocksize must be"):
            jacobian(f, x, y, blocksize=bad, **bsc)
    with pytest.raises(ValueError, match="only applies"):
        jacobian(f, x, y, layout=torch.sparse_csc, blocksize=(2, 2))
    with pytest.raises(ValueError, match="not a multiple"):
        hessian_plan(lambda x: x.pow(3).sum(), x, layout=torch.sparse_bsc, blocksize=(4, 4))


def test_dict_blocksize_keys_are_argument_positions():
    """A non-differentiated argument shifts the positions: the dict names the argument."""
    x, y = torch.randn(6, dtype=torch.float64), torch.randn(4, dtype=torch.float64)

    def f(k, x, y):
        return x[:4] * y * k

    J = jacobian(f, 3, x, y, layout=torch.sparse_bsr, blocksize={1: (2, 3), 2: (2, 2)})
    assert [tuple(b.values().shape[1:]) for b in J] == [(2, 3), (2, 2)]
    assert_layout_matches(J, dense_jacobian(lambda x, y: f(3, x, y), x, y), torch.sparse_bsr)


def test_plan_reports_normalized_blocksize():
    x = torch.randn(6, dtype=torch.float64)
    assert jacobian_plan(torch.sin, x, layout=torch.sparse_bsc, blocksize=[3, 2]).blocksize == (3, 2)
    two = jacobian_plan(lambda a, b: a * b, x, x, layout=torch.sparse_bsc, blocksize={0: [3, 2], 1: (1, 6)})
    assert two.blocksize == ((3, 2), (1, 6))
    assert trackjac.jacobian_plan(torch.sin, x, layout=torch.sparse_csc).blocksize is None
