"""Coloring bounded by what it can save: identity seeds for (nearly) dense patterns, with a
DenseColoringWarning; the clique bound reached on bundle adjustment in any observation order;
the arrowhead at its 3 colors. Timing is in benches/bench_coloring.py, not here."""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

import trackjac
from trackjac.coloring import DENSE, IDENTITY, color_columns, color_rows, is_structurally_orthogonal

from dense_reference import dense_jacobian
from problems import BA_ORDERS as ORDERS, arrowhead, arrowhead_pattern  # benches/problems.py
from problems import bundle_adjustment_coo as ba_coo

@given(st.integers(4, 40), st.integers(4, 40), st.floats(0.0, 1.0 - DENSE - 1e-9), st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_nearly_dense_pattern_gets_identity_seeds(m, n, hole, seed):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(m, n, generator=g) >= hole   # at most a fraction 1 - DENSE of holes
    dense[:, 0] = True
    dense[0, :] = True   # a full row and column: each side's clique bound is its vertex count
    P = dense.to_sparse()
    for color, axis, k in ((color_columns, "columns", n), (color_rows, "rows", m)):
        c = color(P)
        assert c.order == IDENTITY and c.num_colors == k
        assert torch.equal(c.colors, torch.arange(k))
        assert is_structurally_orthogonal(P, c.colors, axis)


@pytest.mark.parametrize("mode", ["auto", "rev", "fwd"])
def test_dense_mlp_warns_and_matches_autograd(mode):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(96, 80, generator=g, dtype=torch.float64) / 10
    x = torch.randn(80, generator=g, dtype=torch.float64)

    def f(x):
        return torch.tanh(W @ x)

    with pytest.warns(trackjac.DenseColoringWarning, match=r"96 x 80.*jac(rev|fwd) does the same work"):
        J = trackjac.jacobian(f, x, mode=mode)
    torch.testing.assert_close(J.to_dense(), dense_jacobian(f, x))
    with pytest.warns(trackjac.DenseColoringWarning):
        plan = trackjac.jacobian_plan(f, x, mode=mode)
    assert plan.num_colors == {"auto": 80, "rev": 96, "fwd": 80}[mode]


def test_sparse_side_is_chosen_without_a_warning():
    # one dense row over a diagonal: columns are dense (every pair shares row 0), rows are not
    def f(x):
        return torch.cat([x.sum(0, keepdim=True), x * x])

    x = torch.randn(50, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", trackjac.DenseColoringWarning)
        J = trackjac.jacobian(f, x)
        plan = trackjac.jacobian_plan(f, x)
    assert plan.mode == "rev" and plan.num_colors == 2
    torch.testing.assert_close(J.to_dense(), dense_jacobian(f, x))


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("effort", [dict(orders=("largest_first",), polish=1, local_search=False), dict()],
                         ids=["fast", "best"])
def test_bundle_adjustment_colors_at_the_clique_bound_in_any_order(order, effort):
    pattern = ba_coo(8_000, order)
    for color, axis in ((color_columns, "columns"), (color_rows, "rows")):
        c = color(pattern, **effort)
        assert is_structurally_orthogonal(pattern, c.colors, axis)
        assert c.num_colors == c.lower_bound


@pytest.mark.parametrize("order", ORDERS)
def test_bundle_adjustment_no_more_colors_than_scipy(order):
    sp = pytest.importorskip("scipy.sparse")
    numdiff = pytest.importorskip("scipy.optimize._numdiff")
    rows, cols, (m, n) = ba_coo(4_000, order, seed=1)
    A = sp.csr_matrix((torch.ones(rows.numel()).numpy(), (rows.numpy(), cols.numpy())), shape=(m, n))
    assert color_columns((rows, cols, (m, n))).num_colors <= int(numdiff.group_columns(A).max()) + 1
    assert color_rows((rows, cols, (m, n))).num_colors <= int(numdiff.group_columns(A.T.tocsr()).max()) + 1


@pytest.mark.parametrize("n", [16, 200, 3000])
@pytest.mark.parametrize("coloring", ["fast", "best"])
def test_arrowhead_at_three_colors(n, coloring):
    x = torch.randn(n, dtype=torch.float64)
    pattern = trackjac.jacobian_sparsity(arrowhead, x)
    assert torch.equal(pattern.to_dense(), arrowhead_pattern(n).to_dense())
    plan = trackjac.jacobian_plan(arrowhead, x, coloring=coloring, pattern=pattern)
    assert plan.num_colors == 3
    torch.testing.assert_close(plan(x).to_dense(), dense_jacobian(arrowhead, x))


@given(st.integers(2, 30), st.integers(2, 30), st.integers(0, 3), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_dense_rows_over_sparse_ones_stay_valid(m, n, dense_rows, seed):
    g = torch.Generator().manual_seed(seed)
    P = torch.rand(m, n, generator=g) < 0.15
    P[: min(dense_rows, m)] = True
    S = P.to_sparse()
    for color, axis, bound in ((color_columns, "columns", P.sum(1)), (color_rows, "rows", P.sum(0))):
        c = color(S)
        assert is_structurally_orthogonal(S, c.colors, axis)
        if P.any():
            assert c.lower_bound == int(bound.max()) <= c.num_colors


def test_small_dense_jacobians_do_not_warn():
    # a 4 x 3 dense Jacobian: identity seeds, but too small for the warning to be worth it
    def f(x):
        return torch.stack([x.sum(), (x * x).sum(), x.prod(), x.max()])

    x = torch.randn(3, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", trackjac.DenseColoringWarning)
        J = trackjac.jacobian(f, x)
    torch.testing.assert_close(J.to_dense(), dense_jacobian(f, x))


@pytest.mark.parametrize("n", [5, 20, 60])
def test_greedy_count_near_the_vertex_count_gives_identity_seeds(n):
    # one row per pair of columns: the clique bound is 2, but every two columns conflict
    pairs = torch.combinations(torch.arange(n), 2)
    rows = torch.arange(pairs.shape[0]).repeat_interleave(2)
    pattern = (rows, pairs.reshape(-1), (pairs.shape[0], n))
    c = color_columns(pattern)
    assert c.lower_bound == 2 and c.order == IDENTITY and c.num_colors == n
    assert is_structurally_orthogonal(pattern, c.colors, "columns")
