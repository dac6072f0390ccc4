"""Merging identical rows before coloring: exact merges, an exact validity check, a safe fallback;
and the colorings that depend on it (bundle adjustment in any observation order, the arrowhead)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

import trackjac.coloring.api as api
from trackjac.coloring import color_columns, color_rows, is_structurally_orthogonal
from trackjac.coloring.dedupe import distinct_in_rows, merge_identical_rows

from problems import BA_ORDERS, arrowhead_pattern, bundle_adjustment_coo  # benches/problems.py


@st.composite
def patterns_with_repeats(draw):
    """A random pattern whose rows are repeated 1-4 times each, then shuffled."""
    m = draw(st.integers(1, 20))
    n = draw(st.integers(1, 30))
    density = draw(st.sampled_from([0.05, 0.2, 0.5]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    base = torch.rand(m, n, generator=g) < density
    reps = torch.randint(1, 5, (m,), generator=g)
    dense = base.repeat_interleave(reps, 0)
    return dense[torch.randperm(dense.shape[0], generator=g)]


def _coo(dense):
    r, c = dense.nonzero().unbind(1)
    return r, c, tuple(dense.shape)


@settings(max_examples=60, deadline=None)
@given(patterns_with_repeats())
def test_merged_rows_are_identical_and_none_are_lost(dense):
    rows, cols, (m, n) = _coo(dense)
    merged = merge_identical_rows(rows, cols, m, n)
    if merged is None:
        assert torch.unique(dense, dim=0).shape[0] == m
        return
    mr, mc, k = merged
    M = torch.zeros(k, n, dtype=torch.bool)
    M[mr, mc] = True
    # every original row is one of the kept rows, and the kept rows are distinct
    assert torch.equal(torch.unique(M, dim=0), torch.unique(dense, dim=0))
    assert k == torch.unique(dense, dim=0).shape[0]


@settings(max_examples=80, deadline=None)
@given(patterns_with_repeats(), st.integers(1, 130), st.integers(0, 2**31 - 1), st.booleans())
def test_distinct_in_rows_agrees_with_the_sorting_check(dense, k, seed, repeat_entry):
    rows, cols, (m, n) = _coo(dense)
    if repeat_entry and rows.numel():  # a vertex listed twice in a row is a clash
        rows, cols = torch.cat([rows, rows[:1]]), torch.cat([cols, cols[:1]])
    colors = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    expect = is_structurally_orthogonal((rows, cols, (m, n)), colors, "columns")
    assert distinct_in_rows(rows, cols, m, colors) == expect


@settings(max_examples=30, deadline=None)
@given(patterns_with_repeats())
def test_colorings_with_repeated_rows_are_valid(dense):
    P = _coo(dense)
    assert is_structurally_orthogonal(P, color_columns(P).colors, "columns")
    assert is_structurally_orthogonal(P, color_rows(P).colors, "rows")


def test_a_wrong_merge_is_caught_and_colored_again(monkeypatch):
    # a hash collision would merge different rows: simulate one by keeping only the first row
    def collide(rows, cols, m, n, seed=0):
        keep = rows == 0
        return rows[keep], cols[keep], 1

    monkeypatch.setattr(api, "merge_identical_rows", collide)
    dense = torch.eye(6, dtype=torch.bool) | torch.eye(6, dtype=torch.bool).roll(1, 1)
    P = _coo(dense)
    c = color_columns(P)
    assert is_structurally_orthogonal(P, c.colors, "columns")


@pytest.mark.parametrize("order", BA_ORDERS)
@pytest.mark.parametrize("observations", [400, 4000])
def test_bundle_adjustment_in_any_order_reaches_the_lower_bound(order, observations):
    P = bundle_adjustment_coo(observations, order)
    for axis, color in (("columns", color_columns), ("rows", color_rows)):
        c = color(P)
        assert is_structurally_orthogonal(P, c.colors, axis)
        assert c.num_colors == c.lower_bound, (axis, c.num_colors, c.lower_bound)


@pytest.mark.parametrize("n", [10, 257, 5000])
def test_arrowhead_rows_take_three_colors(n):
    # one dense row over a bidiagonal: the dense row, then two colors alternating
    P = arrowhead_pattern(n)
    c = color_rows(P)
    assert is_structurally_orthogonal(P, c.colors, "rows")
    assert c.num_colors == 3


@pytest.mark.parametrize("clash", [False, True])
def test_distinct_in_rows_with_many_colors_and_short_rows(clash):
    # 2,000 colors over rows of one or two vertices: checked a word at a time (bounded memory)
    n = 2000
    rows = torch.cat([torch.arange(n), torch.tensor([0])])
    cols = torch.cat([torch.arange(n), torch.tensor([1])])
    colors = torch.arange(n)
    if clash:
        colors[1] = 0
    assert distinct_in_rows(rows, cols, n, colors) == (not clash)
    assert is_structurally_orthogonal((rows, cols, (n, n)), colors, "columns") == (not clash)
