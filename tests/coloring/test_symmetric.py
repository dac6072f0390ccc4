"""Symmetric (star, acyclic) coloring: validity on generated symmetric patterns, validators that can
fail, color counts against column coloring, exact recovery of H from C = (H S)^T."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from trackjac.coloring import (
    SymmetricColoring,
    color_columns,
    color_symmetric,
    is_acyclic_coloring,
    is_star_coloring,
)


def _tri(n: int, diag: bool = True) -> torch.Tensor:
    d = torch.zeros(n, n, dtype=torch.bool)
    i = torch.arange(n - 1)
    d[i, i + 1] = d[i + 1, i] = True
    if diag:
        d.fill_diagonal_(True)
    return d


def _arrow(n: int) -> torch.Tensor:
    d = torch.eye(n, dtype=torch.bool)
    d[0] = d[:, 0] = True
    return d


@st.composite
def symmetric_patterns(draw):
    """Random density, bands, arrowheads, block diagonals, disconnected parts; diagonal or not."""
    n = draw(st.integers(0, 30))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["random", "band", "arrow", "blocks"]))
    if kind == "random":
        d = torch.rand(n, n, generator=g) < draw(st.sampled_from([0.0, 0.05, 0.15, 0.4, 1.0]))
    elif kind == "band":
        w = draw(st.integers(0, 4))
        i = torch.arange(n)
        d = (i[:, None] - i[None, :]).abs() <= w
    elif kind == "arrow":
        d = torch.zeros(n, n, dtype=torch.bool)
        if n:
            d[draw(st.integers(0, n - 1))] = True
    else:
        d = torch.zeros(n, n, dtype=torch.bool)
        start = 0
        while start < n:
            size = int(torch.randint(1, 6, (1,), generator=g))
            blk = torch.rand(size, size, generator=g) < 0.6
            d[start:start + size, start:start + size] = blk[: n - start, : n - start]
            start += size + int(torch.randint(0, 2, (1,), generator=g))  # gaps: isolated vertices
    d = d | d.T
    diag = draw(st.sampled_from(["none", "all", "some"]))
    if diag == "all":
        d.fill_diagonal_(True)
    elif diag == "none" and n:
        d.fill_diagonal_(False)
    return d


def _values(pattern: torch.Tensor, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """A dense symmetric H with random nonzero values exactly on the pattern."""
    g = torch.Generator().manual_seed(seed)
    n = pattern.shape[0]
    a = torch.rand(n, n, generator=g, dtype=torch.float64) + 0.5
    a = torch.where(torch.rand(n, n, generator=g) < 0.5, a, -a)
    h = torch.triu(a) + torch.triu(a, 1).T
    return (h * pattern).to(dtype)


def _recover(col: SymmetricColoring, H: torch.Tensor, pattern: torch.Tensor) -> None:
    """Decompressing C = (H S)^T gives H on both triangles."""
    rows, cols = pattern.nonzero(as_tuple=True)
    C = (H @ col.seed_matrix(H.dtype).T).T
    assert C.shape == (col.num_colors, H.shape[0])
    got = col.decompression(rows, cols)(C)
    want = H[rows, cols]
    tol = 1e-12 if H.dtype == torch.float64 else 1e-5
    assert torch.allclose(got, want, rtol=tol, atol=tol * float(want.abs().max()) if want.numel() else 0)


@settings(max_examples=150, deadline=None)
@given(symmetric_patterns(), st.sampled_from(["star", "acyclic", "auto"]))
def test_valid_and_exact(pattern, method):
    col = color_symmetric(pattern.to_sparse(), method=method)
    assert isinstance(col, SymmetricColoring) and col.axis == "symmetric" and col.mode == "hvp"
    assert col.method in ("star", "acyclic")
    n = pattern.shape[0]
    assert col.colors.shape == (n,)
    if bool(pattern.any()):
        assert col.num_colors == int(col.colors.max()) + 1
        assert col.num_colors >= col.lower_bound
    check = is_star_coloring if col.method == "star" else is_acyclic_coloring
    assert check(pattern, col.colors)
    assert is_acyclic_coloring(pattern, col.colors)  # a star coloring is acyclic too
    _recover(col, _values(pattern), pattern)


@settings(max_examples=60, deadline=None)
@given(symmetric_patterns())
def test_column_coloring_is_a_valid_star_coloring(pattern):
    """A distance-2 coloring of H + I is a star coloring: the validators must accept it."""
    n = pattern.shape[0]
    closed = pattern | torch.eye(n, dtype=torch.bool)
    cc = color_columns(closed)
    if n:
        assert is_star_coloring(pattern, cc.colors) and is_acyclic_coloring(pattern, cc.colors)


@settings(max_examples=40, deadline=None)
@given(symmetric_patterns())
def test_auto_keeps_fewer_colors_star_on_ties(pattern):
    star = color_symmetric(pattern, method="star")
    acyc = color_symmetric(pattern, method="acyclic")
    auto = color_symmetric(pattern)
    assert auto.num_colors <= min(star.num_colors, acyc.num_colors) or auto.num_colors <= auto.lower_bound
    if star.num_colors <= acyc.num_colors:
        assert auto.method == "star"


@pytest.mark.parametrize("n", [4, 7, 50, 1000])
def test_tridiagonal_counts(n):
    p = _tri(n)
    star = color_symmetric(p, method="star")
    acyc = color_symmetric(p, method="acyclic")
    assert star.num_colors == 3  # a path on >= 4 vertices has star chromatic number 3
    assert acyc.num_colors == 2  # a path is a tree: any proper 2-coloring is acyclic
    assert star.num_colors <= color_columns(p).num_colors
    assert color_symmetric(p).method == "acyclic"


@pytest.mark.parametrize("n", [3, 10, 200])
def test_arrowhead_counts(n):
    p = _arrow(n)
    star = color_symmetric(p, method="star")
    assert star.num_colors == 2 and star.method == "star"
    assert color_columns(p).num_colors == n
    assert color_symmetric(p).method == "star"  # tie: direct recovery wins


@pytest.mark.parametrize("n", [2_000, 20_000])
def test_long_path_substitution_accuracy(n):
    """A 2-colored path of n vertices: one tree, the worst case for substitution.

    float64 recovers H to 1e-12 of its largest entry. In float32 the rounding of C
    itself propagates along the tree (an entry is an alternating sum over its subtree,
    inherent to substitution), but the float64 prefix adds nothing: the float32 result
    is the float64 decompression of the same float32 C, rounded."""
    rows = torch.cat([torch.arange(n), torch.arange(n - 1), torch.arange(1, n)])
    cols = torch.cat([torch.arange(n), torch.arange(1, n), torch.arange(n - 1)])
    col = color_symmetric((rows, cols, (n, n)), method="acyclic")
    assert col.num_colors == 2 and is_acyclic_coloring((rows, cols, (n, n)), col.colors)
    g = torch.Generator().manual_seed(1)
    vals = torch.cat([torch.rand(n, generator=g, dtype=torch.float64) + 1,
                      torch.randn(n - 1, generator=g, dtype=torch.float64)])
    vals = torch.cat([vals, vals[n:]])
    d = col.decompression(rows, cols)
    for dtype in (torch.float64, torch.float32):
        H = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals.to(dtype), (n, n), check_invariants=True)
        C = (H @ col.seed_matrix(dtype).T).T
        got = d(C)
        assert got.dtype == dtype
        err = float((got.double() - vals).abs().max() / vals.abs().max())
        if dtype == torch.float64:
            assert err < 1e-12
        else:
            assert torch.allclose(got, d(C.double()).float(), rtol=2e-7, atol=0)
            assert err < n * 2**-24  # the inherent propagation of C's rounding


def test_validators_reject_invalid_colorings():
    p = _tri(4)  # the path 0-1-2-3
    assert is_star_coloring(p, torch.tensor([0, 1, 2, 0]))
    assert not is_star_coloring(p, torch.tensor([0, 1, 0, 1]))  # a 2-colored P4
    assert is_acyclic_coloring(p, torch.tensor([0, 1, 0, 1]))  # ... but no cycle
    assert not is_star_coloring(p, torch.tensor([0, 0, 1, 2]))  # not proper
    assert not is_acyclic_coloring(p, torch.tensor([0, 0, 1, 2]))
    assert not is_star_coloring(p, torch.tensor([0, 1, 2]))  # wrong length
    assert not is_acyclic_coloring(p, torch.tensor([-1, 1, 2, 0]))
    cycle = _tri(4, diag=False)
    cycle[0, 3] = cycle[3, 0] = True  # the 4-cycle
    assert not is_acyclic_coloring(cycle, torch.tensor([0, 1, 0, 1]))
    assert is_acyclic_coloring(cycle, torch.tensor([0, 1, 0, 2]))
    assert is_star_coloring(cycle, torch.tensor([0, 1, 0, 2]))  # every 4-vertex path has 3 colors
    longer = _tri(5)
    assert not is_star_coloring(longer, torch.tensor([0, 1, 2, 1, 2]))  # 1-2-3-4 is 2-colored
    assert is_acyclic_coloring(longer, torch.tensor([0, 1, 2, 1, 2]))


@settings(max_examples=60, deadline=None)
@given(symmetric_patterns(), st.integers(0, 2**31 - 1))
def test_validators_match_brute_force(pattern, seed):
    """On random (often invalid) colorings, the validators agree with enumeration of paths and cycles."""
    n = pattern.shape[0]
    g = torch.Generator().manual_seed(seed)
    colors = torch.randint(0, max(1, min(n, 4)), (n,), generator=g)
    adj = pattern.clone()
    adj.fill_diagonal_(False)
    proper = not bool((adj & (colors[:, None] == colors[None, :])).any())
    nb = [adj[i].nonzero().squeeze(1).tolist() for i in range(n)]
    p4 = any(colors[w] == colors[y] and colors[x] == colors[z]
             for x in range(n) for y in nb[x] for w in nb[x] if w != y for z in nb[y] if z != x)
    assert is_star_coloring(pattern, colors) == (proper and not p4)
    # a 2-colored cycle: some color pair's subgraph has more edges than vertices - components
    cyc = False
    for a in range(4):
        for b in range(a + 1, 4):
            keep = (colors == a) | (colors == b)
            sub = adj & keep[:, None] & keep[None, :]
            seen, comps = set(), 0
            for s in keep.nonzero().squeeze(1).tolist():
                if s in seen:
                    continue
                comps += 1
                todo = [s]
                seen.add(s)
                while todo:
                    x = todo.pop()
                    for y in sub[x].nonzero().squeeze(1).tolist():
                        if y not in seen:
                            seen.add(y)
                            todo.append(y)
            cyc |= int(sub.sum()) // 2 > int(keep.sum()) - comps
    assert is_acyclic_coloring(pattern, colors) == (proper and not cyc)


def test_star_compressed_index_reads_each_pair_once():
    p = _arrow(6) | _tri(6)
    col = color_symmetric(p, method="star")
    rows, cols = p.nonzero(as_tuple=True)
    c1, p1 = col.compressed_index(rows, cols)
    c2, p2 = col.compressed_index(cols, rows)
    assert torch.equal(c1, c2) and torch.equal(p1, p2)
    H = _values(p)
    C = (H @ col.seed_matrix().T).T
    assert torch.equal(C[c1, p1], H[rows, cols])


def test_errors():
    with pytest.raises(ValueError, match="symmetric"):
        color_symmetric(torch.tensor([[1, 1], [0, 1]]))
    with pytest.raises(ValueError, match="square"):
        color_symmetric(torch.ones(2, 3))
    with pytest.raises(ValueError, match="method"):
        color_symmetric(_tri(3), method="distance2")
    acyc = color_symmetric(_tri(5), method="acyclic")
    rows, cols = _tri(5).nonzero(as_tuple=True)
    with pytest.raises(ValueError, match="substitution"):
        acyc.compressed_index(rows, cols)
    star = color_symmetric(_tri(5), method="star")
    with pytest.raises(ValueError, match="outside"):
        star.compressed_index(torch.tensor([0]), torch.tensor([4]))
    with pytest.raises(ValueError, match="outside"):
        acyc.decompression(torch.tensor([0]), torch.tensor([4]))
    bare = SymmetricColoring(star.colors, star.num_colors, "symmetric", "hubs", 2)
    with pytest.raises(ValueError, match="color_symmetric"):
        bare.decompression(rows, cols)


def test_empty_and_diagonal_only():
    col = color_symmetric(torch.zeros(0, 0))
    assert col.num_colors == 0
    assert color_symmetric(torch.zeros(4, 4)).num_colors == 0
    d = torch.eye(5, dtype=torch.bool)
    col = color_symmetric(d)
    assert col.num_colors == 1
    _recover(col, _values(d), d)
