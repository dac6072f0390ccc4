"""Distance-2 coloring: validity on random patterns, quality on the Brusselator, API errors."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from trackjac.coloring import (
    DEFAULT_ORDERS,
    ORDERS,
    color_columns,
    color_rows,
    is_structurally_orthogonal,
)

from problems import brusselator_pattern  # benches/problems.py


def _sparse(dense: torch.Tensor) -> torch.Tensor:
    return dense.to_sparse().coalesce()


def _distance2_degree_bound(dense: torch.Tensor) -> int:
    """Greedy never needs more than (max number of conflicting columns) + 1 colors."""
    d = dense.double()
    conflict = (d.T @ d) > 0
    conflict.fill_diagonal_(False)
    return int(conflict.sum(1).max()) + 1 if d.shape[1] else 0


@st.composite
def patterns(draw):
    m = draw(st.integers(0, 40))
    n = draw(st.integers(0, 40))
    density = draw(st.sampled_from([0.0, 0.05, 0.15, 0.4, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(m, n, generator=g) < density
    if m and n and draw(st.booleans()):  # a dense row or column: wide cliques
        if draw(st.booleans()):
            dense[draw(st.integers(0, m - 1))] = True
        else:
            dense[:, draw(st.integers(0, n - 1))] = True
    return dense


@settings(max_examples=60, deadline=None)
@given(patterns(), st.sampled_from([None, ("random",), ("natural",), ("incidence_degree",)]),
       st.booleans(), st.integers(0, 3))
def test_colorings_are_structurally_orthogonal(dense, orders, local_search, seed):
    for axis, color in (("columns", color_columns), ("rows", color_rows)):
        c = color(_sparse(dense), orders=orders, local_search=local_search, seed=seed)
        vertices = dense.shape[1] if axis == "columns" else dense.shape[0]
        assert c.colors.shape == (vertices,)
        assert c.axis == axis
        assert is_structurally_orthogonal(_sparse(dense), c.colors, axis)
        if dense.any():
            assert int(c.colors.min()) >= 0 and int(c.colors.max()) < c.num_colors
            assert c.lower_bound <= c.num_colors
            target = dense if axis == "columns" else dense.T
            assert c.num_colors <= _distance2_degree_bound(target)
        else:
            assert c.num_colors == 0


def test_input_forms_agree():
    dense = torch.rand(30, 20, generator=torch.Generator().manual_seed(1)) < 0.2
    rows, cols = dense.nonzero(as_tuple=True)
    ref = color_columns(_sparse(dense)).colors
    assert torch.equal(color_columns(dense).colors, ref)
    assert torch.equal(color_columns((rows, cols, (30, 20))).colors, ref)
    assert torch.equal(color_columns(_sparse(dense).to_sparse_csr()).colors, ref)


def test_deterministic_for_a_seed():
    P = brusselator_pattern(16)
    a, b = color_rows(P, seed=3), color_rows(P, seed=3)
    assert torch.equal(a.colors, b.colors)


def test_explicit_zeros_are_not_structural():
    ind = torch.tensor([[0, 0], [0, 1]])
    P = torch.sparse_coo_tensor(ind, torch.tensor([True, False]), (1, 2))
    assert color_columns(P).num_colors == 1


def test_many_colors_span_several_words():
    dense = torch.zeros(3, 150, dtype=torch.bool)
    dense[0] = True  # one row holding 150 columns: they all need distinct colors
    dense[1, :7] = True
    c = color_columns(_sparse(dense))
    assert c.num_colors == 150
    assert is_structurally_orthogonal(_sparse(dense), c.colors)
    assert color_rows(_sparse(dense)).num_colors == 2


def test_diagonal_and_empty():
    eye = torch.eye(50, dtype=torch.bool)
    assert color_columns(eye).num_colors == 1
    assert color_rows(eye).num_colors == 1
    empty = torch.zeros(4, 5, dtype=torch.bool)
    c = color_columns(empty)
    assert c.num_colors == 0 and c.colors.shape == (5,)


@pytest.mark.parametrize("N", [16, 33, 48, 128])
def test_brusselator_at_most_10_colors(N):
    P = brusselator_pattern(N)
    for color, axis in ((color_columns, "columns"), (color_rows, "rows")):
        c = color(P)
        assert is_structurally_orthogonal(P, c.colors, axis)
        assert 6 <= c.num_colors <= 10, (N, axis, c.num_colors)


def test_brusselator_524288_rows():
    P = brusselator_pattern(512)
    c = color_rows(P)
    assert c.num_colors <= 10
    assert is_structurally_orthogonal(P, c.colors, "rows")


def test_every_order_is_valid_on_a_stencil():
    P = brusselator_pattern(12)
    for order in ORDERS:
        c = color_columns(P, orders=(order,), local_search=False)
        assert is_structurally_orthogonal(P, c.colors)
        assert c.order == order
    assert set(DEFAULT_ORDERS) <= set(ORDERS)


def test_is_structurally_orthogonal_detects_clashes():
    dense = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    assert not is_structurally_orthogonal(dense, torch.tensor([0, 0, 1]))
    assert is_structurally_orthogonal(dense, torch.tensor([0, 1, 0]))
    assert not is_structurally_orthogonal(dense, torch.tensor([0, 1]))  # wrong length
    assert not is_structurally_orthogonal(dense, torch.tensor([0, 0]), axis="rows")
    with pytest.raises(ValueError, match="axis"):
        is_structurally_orthogonal(dense, torch.tensor([0, 1, 0]), axis="diagonal")


def test_errors():
    with pytest.raises(ValueError, match="unknown order"):
        color_columns(torch.eye(3, dtype=torch.bool), orders=("alphabetical",))
    with pytest.raises(TypeError, match="2-D"):
        color_columns(torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError):
        color_columns([[1, 0], [0, 1]])


@settings(max_examples=40, deadline=None)
@given(patterns(), st.lists(st.integers(1, 9), min_size=1, max_size=40), st.integers(0, 3))
def test_twin_columns_get_distinct_colors(base, reps, seed):
    # columns (rows) with identical row sets, like the 9 parameters of one camera, propose
    # the same colors; the greedy hands them out in rank order instead of letting them clash
    if base.shape[1] == 0:
        return
    reps = torch.tensor((reps * base.shape[1])[: base.shape[1]])
    dense = base.repeat_interleave(reps, dim=1)
    for axis, color, P in (("columns", color_columns, dense), ("rows", color_rows, dense.T.contiguous())):
        c = color(_sparse(P), seed=seed)
        assert is_structurally_orthogonal(_sparse(P), c.colors, axis)


def test_bundle_adjustment_like_blocks_reach_the_lower_bound():
    # 200 points, each seen by 4 of 30 cameras: 2 rows per observation over 9 camera
    # columns and 3 point columns; every row holds 12 columns, the lower bound
    g = torch.Generator().manual_seed(0)
    cams = torch.stack([torch.randperm(30, generator=g)[:4] for _ in range(200)]).reshape(-1)
    pts = torch.arange(200).repeat_interleave(4)
    obs_rows = torch.arange(800 * 2).view(800, 2)
    rows = torch.cat([obs_rows.repeat_interleave(9, 1).reshape(-1), obs_rows.repeat_interleave(3, 1).reshape(-1)])
    cam_cols = (cams.view(-1, 1) * 9 + torch.arange(9)).repeat_interleave(2, 0).reshape(-1)
    pt_cols = 270 + (pts.view(-1, 1) * 3 + torch.arange(3)).repeat_interleave(2, 0).reshape(-1)
    P = (rows, torch.cat([cam_cols, pt_cols]), (1600, 270 + 600))
    c = color_columns(P)
    assert c.num_colors == 12
    assert is_structurally_orthogonal(P, c.colors, "columns")
