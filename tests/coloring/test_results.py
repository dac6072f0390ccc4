"""Coloring results and the order registry: every order colors validly, results decompress."""
import pytest
import torch

from trackjac import jacobian_plan
from trackjac.coloring import (
    ORDERS,
    Coloring,
    ColumnColoring,
    RowColoring,
    color_columns,
    color_rows,
    get_order,
    is_structurally_orthogonal,
    order,
)
from trackjac.evaluate.plan import Plan


def _pattern(m=13, n=9, density=0.25, seed=0):
    g = torch.Generator().manual_seed(seed)
    P = torch.rand(m, n, generator=g) < density
    P[0] = False      # an empty row and an empty column: never seeded
    P[:, 1] = False
    return P


# -- the order registry --------------------------------------------------------


@pytest.mark.parametrize("name", list(ORDERS))
def test_every_registered_order_colors_validly(name):
    P = _pattern(40, 30, 0.15)
    for color, axis in ((color_columns, "columns"), (color_rows, "rows")):
        c = color(P, orders=(name,), local_search=False)
        assert c.order == name and c.axis == axis
        assert is_structurally_orthogonal(P, c.colors, axis)
        assert c.num_colors >= c.lower_bound


def test_a_registered_order_is_listed_and_used():
    @order("test_reverse_natural")
    def _reverse(g, gen):
        return torch.arange(g.n - 1, -1, -1)
    try:
        assert "test_reverse_natural" in ORDERS and get_order("test_reverse_natural") is _reverse
        P = _pattern()
        c = color_columns(P, orders="test_reverse_natural", local_search=False, polish=0)
        assert c.order == "test_reverse_natural" and is_structurally_orthogonal(P, c.colors)
        with pytest.raises(ValueError, match="already registered"):
            order("test_reverse_natural")(_reverse)
    finally:
        from trackjac.coloring import orders
        orders._REGISTRY.pop("test_reverse_natural")
    assert "test_reverse_natural" not in ORDERS


def test_unknown_order_raises_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown order 'alphabetical'.*largest_first"):
        color_rows(_pattern(), orders=("largest_first", "alphabetical"))
    with pytest.raises(ValueError, match="unknown order"):
        get_order("alphabetical")


# -- result objects --------------------------------------------------------------


def test_results_are_typed_by_axis():
    P = _pattern()
    r, c = color_rows(P), color_columns(P)
    assert isinstance(r, RowColoring) and r.mode == "rev" and isinstance(r, Coloring)
    assert isinstance(c, ColumnColoring) and c.mode == "fwd"
    assert type(Coloring(r.colors, r.num_colors, "rows", "x", 1)) is RowColoring
    assert type(Coloring(colors=c.colors, num_colors=1, axis="columns", order="x", lower_bound=1)) is ColumnColoring
    with pytest.raises(ValueError, match="axis"):
        Coloring(r.colors, 1, "diagonal", "x", 1)
    with pytest.raises(ValueError, match="axis"):
        RowColoring(c.colors, 1, "columns", "x", 1)
    assert r.seeded("R", "C") == "R" and r.compressed("R", "C") == "C"
    assert c.seeded("R", "C") == "C" and c.compressed("R", "C") == "R"


def test_seed_colors_leave_out_empty_vertices():
    P = _pattern()
    rows, cols = P.nonzero(as_tuple=True)
    r, c = color_rows(P), color_columns(P)
    assert int(r.seed_colors(rows, cols)[0]) == -1 and int(c.seed_colors(rows, cols)[1]) == -1
    used = torch.zeros(P.shape[0], dtype=torch.bool)
    used[rows] = True
    assert torch.equal(r.seed_colors(rows, cols)[used], r.colors[used])


def test_compressed_index_with_a_block_offset():
    P = _pattern()
    rows, cols = P.nonzero(as_tuple=True)
    for col in (color_rows(P), color_columns(P)):
        color, pos = col.compressed_index(rows, cols)
        keep = (rows >= 4) & (cols >= 3)   # the block P[4:, 3:], in local indices
        bc, bp = col.compressed_index(rows[keep] - 4, cols[keep] - 3, (4, 3))
        assert torch.equal(bc, color[keep])
        assert torch.equal(bp, pos[keep] - col.compressed(4, 3))


def _f_of(P):
    g = torch.Generator().manual_seed(1)
    W1 = torch.randn(P.shape, generator=g, dtype=torch.float64) * P
    W2 = torch.randn(P.shape, generator=g, dtype=torch.float64) * P

    def f(x):
        return W1 @ torch.sin(x) + (W2 @ x) ** 2
    return f


@pytest.mark.parametrize("axis", ["rows", "columns"])
def test_decompression_reproduces_the_dense_jacobian(axis):
    P = _pattern()
    f = _f_of(P)
    x = torch.randn(P.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    dense = torch.autograd.functional.jacobian(f, x)
    col = color_rows(P) if axis == "rows" else color_columns(P)
    S = col.seed_matrix(torch.float64)
    if col.mode == "rev":      # C = S J: one vjp per color
        _, vjp = torch.func.vjp(f, x)
        C = torch.func.vmap(vjp)(S)[0]
    else:                      # C = S J^T: one jvp per color
        C = torch.func.vmap(lambda t: torch.func.jvp(f, (x,), (t,))[1])(S)
    assert C.shape == (col.num_colors, col.compressed(*P.shape))
    rows, cols = P.nonzero(as_tuple=True)
    got = torch.zeros_like(dense)
    got[rows, cols] = col.decompress(C, rows, cols)
    torch.testing.assert_close(got, dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_plan_decompresses_through_the_result(mode):
    P = _pattern()
    f = _f_of(P)
    x = torch.randn(P.shape[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    plan = jacobian_plan(f, x, mode=mode, pattern=P.to_sparse(), chunk_size=2)
    assert plan.coloring.mode == mode
    torch.testing.assert_close(plan(x).to_dense(), torch.autograd.functional.jacobian(f, x), rtol=0, atol=1e-12)
    other = color_columns(P) if mode == "rev" else color_rows(P)
    with pytest.raises(ValueError, match="coloring"):
        Plan(f, plan.structure, mode, other)
