"""Dense patterns: identity seeds, values read straight off the compressed product, and
detection's index grid for full bit ranges; all compared with dense autograd."""
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import trackjac
from trackjac.coloring import IDENTITY, Coloring
from trackjac.evaluate.plan import Plan, _Slab
from trackjac.evaluate.structure import build_structure

from dense_reference import dense_jacobian

LAYOUTS = [torch.sparse_coo, torch.sparse_csr, torch.sparse_bsr]


def _blocks(J):
    """Nested Jacobian -> flat list of dense blocks."""
    if isinstance(J, (tuple, list)):
        return [b for x in J for b in _blocks(x)]
    return [J.to_dense()]


def _close(J, ref):
    got_blocks, want_blocks = _blocks(J), _blocks(ref)
    assert len(got_blocks) == len(want_blocks)   # zip(strict=True) is Python 3.10+
    for got, want in zip(got_blocks, want_blocks):
        torch.testing.assert_close(got, want)


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 70), st.integers(1, 40),
       st.sampled_from(["auto", "rev", "fwd"]), st.sampled_from(LAYOUTS), st.integers(0, 3))
def test_full_pattern_values(m1, m2, n1, n2, mode, layout, seed):
    """Two outputs x two inputs, every block full: identity seeds, every block a slab."""
    m1, m2, n1, n2 = 2 * m1, 2 * m2, 2 * n1, 2 * n2   # BSR blocks of (2, 2)
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m1, n1 + n2, generator=g, dtype=torch.float64)
    B = torch.randn(m2, n1 + n2, generator=g, dtype=torch.float64)

    def f(x, y):
        xy = torch.cat([x, y])
        return torch.tanh(A @ xy), (B @ xy) * xy.sum()

    x = torch.randn(n1, generator=g, dtype=torch.float64)
    y = torch.randn(n2, generator=g, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", trackjac.DenseColoringWarning)
        plan = trackjac.jacobian_plan(f, x, y, mode=mode, layout=layout,
                                      blocksize=(2, 2) if layout == torch.sparse_bsr else None)
    assert plan.coloring.order == IDENTITY
    assert all(isinstance(src, _Slab) for row in plan._gather for _, chunks in row for _, src in chunks)
    _close(plan(x, y), dense_jacobian(f, x, y))
    x2, y2 = torch.randn_like(x), torch.randn_like(y)   # a new point: the same plan
    _close(plan(x2, y2), dense_jacobian(f, x2, y2))


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_identity_with_full_and_partial_blocks(mode, layout):
    """Identity seeds on a pattern with full and partial blocks: slabs and gathers side by side."""
    A = torch.randn(6, 10, dtype=torch.float64)

    def f(x, y):
        return torch.sin(A @ x) * y[:6].sum(), x * y   # (6, full | full), (10, diagonal | diagonal)

    x, y = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    st_ = build_structure(f, (x, y), None, False, False)
    n = 16 if mode == "rev" else 20
    col = Coloring(torch.arange(n), n, "rows" if mode == "rev" else "columns", IDENTITY, 1)
    plan = Plan(f, st_, mode, col, layout=layout, blocksize=(2, 2) if layout == torch.sparse_bsr else None)
    kinds = [type(src) for row in plan._gather for _, chunks in row for _, src in chunks]
    assert _Slab in kinds and torch.Tensor in kinds
    _close(plan(x, y), dense_jacobian(f, x, y))


def test_dense_mlp_one_shot_warns_and_matches():
    W = torch.randn(40, 48, dtype=torch.float32)
    x = torch.randn(48, dtype=torch.float32)

    def f(x):
        return torch.tanh(W @ x)

    with pytest.warns(trackjac.DenseColoringWarning):
        J = trackjac.jacobian(f, x)
    assert J._nnz() == 40 * 48
    torch.testing.assert_close(J.to_dense(), dense_jacobian(f, x))


def test_chunked_identity_uses_gathers():
    """Several chunks of identity colors: the general per-chunk gathers, same values."""
    W = torch.randn(20, 12, dtype=torch.float64)

    def f(x):
        return torch.tanh(W @ x)

    x = torch.randn(12, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", trackjac.DenseColoringWarning)
        plan = trackjac.jacobian_plan(f, x, mode="rev", chunk_size=7)
    assert len(plan._chunks) == 3
    assert not any(isinstance(src, _Slab) for row in plan._gather for _, chunks in row for _, src in chunks)
    _close(plan(x), dense_jacobian(f, x))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 150), min_size=1, max_size=3), st.integers(1, 5), st.booleans())
def test_detection_grid_of_full_ranges(sizes, m, hole):
    """Full bit ranges starting and ending inside words; ``hole`` leaves one entry out, so the
    grid shortcut must not fire."""
    args = [torch.randn(s, dtype=torch.float64) for s in sizes]
    W = torch.randn(m, sum(sizes), dtype=torch.float64)
    if hole:
        W[m - 1, sum(sizes) - 1] = 0.0

    def f(*xs):
        xy = torch.cat(xs)
        if hole:   # the last input element does not reach the last output
            return torch.cat([W[:-1] @ xy, W[-1:, :-1] @ xy[:-1]])
        return W @ xy

    pat = trackjac.jacobian_sparsity(f, *args)
    pats = pat if isinstance(pat, tuple) else (pat,)
    ref = dense_jacobian(f, *args)
    refs = ref if isinstance(ref, tuple) else (ref,)
    assert len(pats) == len(refs)
    for p, r in zip(pats, refs):
        assert p.is_coalesced()
        want = torch.ones(r.shape, dtype=torch.bool)
        if hole and r is refs[-1]:
            want[-1, -1] = False
        assert torch.equal(p.to_dense(), want)
