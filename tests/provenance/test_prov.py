"""Provenance primitives in both representations against a naive reference (a list of Python sets).

Every primitive (gather, scatter, replace_rows, union, cat_rows, to_coo ...) is run on CSR
(with and without uniform rows) and on packed bitmasks over several id ranges, mixed
with each other, and compared with the same operation on Python sets.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trackjac
from trackjac import provenance
from trackjac.provenance import policy
from trackjac.provenance.bits import BitProv, or_reduce, popcount, to_bits
from trackjac.provenance import SetProv as Prov

KINDS = ["csr", "uniform", "bits", "bits_wide"]
SETTINGS = dict(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- reference and builders ------------------------------------------------------------

def as_sets(p):
    """Python sets of a provenance, read through its CSR fields (lazy for bitmasks)."""
    ptr, col = p.ptr.tolist(), p.col.tolist()
    assert len(ptr) == p.numel + 1
    rows = [col[ptr[i]:ptr[i + 1]] for i in range(p.numel)]
    for r in rows:
        assert len(r) == len(set(r)), "ids repeat within a row"
    return [set(r) for r in rows]


def make(ref, kind, lo_pad=0):
    """A provenance holding the sets ``ref`` (rows stored in reverse order of their ids)."""
    rows = [sorted(r, reverse=True) for r in ref]
    ptr = torch.tensor([0] + [len(r) for r in rows], dtype=torch.int64).cumsum(0)
    col = torch.tensor([i for r in rows for i in r], dtype=torch.int64)
    p = Prov(ptr, col)
    if kind == "uniform" and len({len(r) for r in rows}) == 1 and rows:
        p = Prov.uniform(col.view(len(rows), len(rows[0])))
    if kind.startswith("bits"):
        ids = [i for r in ref for i in r]
        lo = (min(ids) // 64) * 64 if ids else 0
        hi = ((max(ids) // 64) + 1) * 64 if ids else 64
        if kind == "bits_wide":
            lo, hi = max(0, lo - 64 * lo_pad), hi + 64
        p = to_bits(p, lo, hi)
        assert isinstance(p, BitProv)
    return p


def id_sets(n_max=10, id_max=200):
    return st.integers(0, n_max).flatmap(
        lambda n: st.lists(st.sets(st.integers(0, id_max), max_size=6), min_size=n, max_size=n))


def uniform_sets(n_max=10, id_max=200):
    return st.tuples(st.integers(1, n_max), st.integers(0, 4)).flatmap(
        lambda nw: st.lists(st.sets(st.integers(0, id_max), min_size=nw[1], max_size=nw[1]),
                            min_size=nw[0], max_size=nw[0]))


any_sets = st.one_of(id_sets(), uniform_sets())


def check(p, ref):
    assert p.numel == len(ref)
    assert as_sets(p) == ref
    assert p.nnz == sum(len(r) for r in ref)
    assert p.lengths().tolist() == [len(r) for r in ref]
    assert p.rows().tolist() == [i for i, r in enumerate(ref) for _ in r]


# -- tests --------------------------------------------------------------------------------

@settings(**SETTINGS)
@given(any_sets, st.sampled_from(KINDS))
def test_roundtrip(ref, kind):
    p = make(ref, kind)
    check(p, ref)
    w = {len(r) for r in ref}
    assert p.width == (w.pop() if len(w) == 1 else (0 if not ref else -1))


@settings(**SETTINGS)
@given(any_sets, st.sampled_from(KINDS), st.data())
def test_gather(ref, kind, data):
    n = len(ref)
    idx = data.draw(st.lists(st.integers(-1, n - 1) if n else st.just(-1), max_size=12))
    p = make(ref, kind)
    g = p.gather(torch.tensor(idx, dtype=torch.int64))
    check(g, [set(ref[i]) if i >= 0 else set() for i in idx])
    assert type(g) is type(p)


@settings(**SETTINGS)
@given(any_sets, st.sampled_from(KINDS), st.data())
def test_gather_identity_returns_rows(ref, kind, data):
    p = make(ref, kind)
    check(p.gather(torch.arange(len(ref))), ref)


@settings(**SETTINGS)
@given(any_sets, st.sampled_from(KINDS), st.data(), st.booleans())
def test_scatter(ref, kind, data, with_in_rows):
    n = len(ref)
    numel = data.draw(st.integers(0, 6))
    tgt_el = st.integers(-1, numel - 1) if numel else st.just(-1)
    if with_in_rows:
        k = data.draw(st.integers(0, 12))
        in_rows = data.draw(st.lists(st.integers(-1, n - 1) if n else st.just(-1), min_size=k, max_size=k))
        out_rows = data.draw(st.lists(tgt_el, min_size=k, max_size=k))
        pairs = list(zip(in_rows, out_rows))
    else:
        in_rows = None
        out_rows = data.draw(st.lists(tgt_el, min_size=n, max_size=n))
        pairs = list(zip(range(n), out_rows))
    expected = [set() for _ in range(numel)]
    for i, o in pairs:
        if i >= 0 and o >= 0:
            expected[o] |= ref[i]
    p = make(ref, kind)
    res = provenance.scatter(p, torch.tensor(out_rows, dtype=torch.int64), numel,
                    None if in_rows is None else torch.tensor(in_rows, dtype=torch.int64))
    check(res, expected)


@settings(**SETTINGS)
@given(uniform_sets(n_max=12, id_max=300), st.sampled_from(KINDS), st.integers(1, 4), st.booleans())
def test_scatter_regular_groups(ref, kind, group, shuffle):
    """Reductions: every target receives the same number of rows (sorted or not)."""
    n = len(ref) - len(ref) % group
    ref = ref[:n]
    out_rows = [i // group for i in range(n)]
    if shuffle:
        out_rows = out_rows[::-1]
    expected = [set() for _ in range(n // group)]
    for i, o in enumerate(out_rows):
        expected[o] |= ref[i]
    res = provenance.scatter(make(ref, kind), torch.tensor(out_rows, dtype=torch.int64), n // group)
    check(res, expected)


@settings(**SETTINGS)
@given(any_sets, any_sets, st.sampled_from(KINDS), st.sampled_from(KINDS), st.data())
def test_replace_rows(ref, new_ref, kind, new_kind, data):
    n = len(ref)
    if n == 0:
        return
    k = len(new_ref)
    idx = data.draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k))
    expected = [set(r) for r in ref]
    for i in set(idx):
        expected[i] = set()
    for j, i in enumerate(idx):
        expected[i] |= new_ref[j]
    res = provenance.replace_rows(make(ref, kind), torch.tensor(idx, dtype=torch.int64), make(new_ref, new_kind, 2))
    check(res, expected)


@settings(**SETTINGS)
@given(st.integers(0, 8), st.data(), st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
       st.sampled_from(["auto", "sets", "bits"]))
def test_union_mixed(n, data, kinds, rep):
    refs = [data.draw(st.lists(st.sets(st.integers(0, data.draw(st.sampled_from([60, 300, 5000]))), max_size=7),
                               min_size=n, max_size=n)) for _ in kinds]
    provs = [make(r, k, j) for j, (r, k) in enumerate(zip(refs, kinds))]
    provs.append(provs[0])  # the same object twice
    with trackjac.tracking(representation=rep):
        res = provenance.union(provs, n)
    check(res, [set().union(*(r[i] for r in refs)) for i in range(n)])
    if rep == "sets" and any(isinstance(p, Prov) and p.nnz for p in provs):
        assert isinstance(res, Prov)  # a mix falls back to CSR


@settings(**SETTINGS)
@given(uniform_sets(n_max=8), uniform_sets(n_max=8), st.data())
def test_union_wide_rows(a, b, data):
    """Unions wider than the padded limit (row sort and global sort paths)."""
    n = min(len(a), len(b))
    many = [data.draw(uniform_sets(n_max=n, id_max=1000).filter(lambda r: len(r) == n)) for _ in range(6)]
    refs = [a[:n], b[:n]] + many
    provs = [make(r, "uniform") for r in refs]
    check(provenance.union(provs, n), [set().union(*(r[i] for r in refs)) for i in range(n)])
    provs[0] = make(refs[0], "csr")
    check(provenance.union(provs, n), [set().union(*(r[i] for r in refs)) for i in range(n)])


@settings(**SETTINGS)
@given(st.lists(st.tuples(any_sets, st.sampled_from(KINDS)), min_size=1, max_size=3))
def test_cat_rows(parts):
    res = provenance.cat_rows([make(r, k) for r, k in parts])
    check(res, [s for r, _ in parts for s in r])


@settings(**SETTINGS)
@given(any_sets, st.sampled_from(KINDS), st.integers(0, 250), st.integers(0, 120),
       st.sampled_from([torch.sparse_coo, torch.strided]))
def test_to_coo(ref, kind, lo, n, layout):
    p = make(ref, kind)
    t = p.to_coo(lo, n, layout=layout)
    assert t.shape == (len(ref), n) and t.dtype == torch.bool
    expected = torch.zeros(len(ref), n, dtype=torch.bool)
    for i, r in enumerate(ref):
        for j in r:
            if lo <= j < lo + n:
                expected[i, j - lo] = True
    if layout == torch.sparse_coo:
        assert t.is_coalesced()
        idx = t.indices()
        keys = (idx[0] * max(n, 1) + idx[1]).tolist()
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        t = t.to_dense()
    assert torch.equal(t, expected)


@settings(**SETTINGS)
@given(any_sets, st.sampled_from(KINDS))
def test_all_ids(ref, kind):
    assert provenance.all_ids(make(ref, kind)).tolist() == sorted(set().union(*ref))


@settings(**SETTINGS)
@given(st.integers(0, 300), st.integers(0, 200), st.sampled_from(["sets", "bits"]))
def test_identity(first, numel, rep):
    p = provenance.identity(numel, first, torch.device("cpu"), rep)
    assert isinstance(p, BitProv if rep == "bits" else Prov)
    check(p, [{first + i} for i in range(numel)])


def test_broadcast_row():
    p = provenance.broadcast_row(torch.tensor([5, 2, 9]), 4)
    check(p, [{2, 5, 9}] * 4)
    assert p.width == 3


@settings(**SETTINGS)
@given(st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=20))
def test_popcount(values):
    w = torch.tensor(values, dtype=torch.int64)
    assert popcount(w).tolist() == [bin(v & (2 ** 64 - 1)).count("1") for v in values]


@settings(**SETTINGS)
@given(st.integers(1, 40), st.integers(1, 3), st.integers(1, 9), st.data())
def test_or_reduce(m, W, n, data):
    """Every path: injective, regular groups, padded groups and the segmented scan."""
    shape = data.draw(st.sampled_from(["any", "one_long", "regular"]))
    if shape == "regular":
        m = n * data.draw(st.integers(1, 5))
        tgt = [i % n for i in range(m)]
    elif shape == "one_long":
        tgt = [0] * m + list(range(1, n))
        m = len(tgt)
    else:
        tgt = data.draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m))
    vals = data.draw(st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=m * W, max_size=m * W))
    src = torch.tensor(vals, dtype=torch.int64).view(m, W)
    out = or_reduce(src, torch.tensor(tgt, dtype=torch.int64), n)
    expected = [[0] * W for _ in range(n)]
    for k, t in enumerate(tgt):
        for j in range(W):
            expected[t][j] |= vals[k * W + j]
    assert out.tolist() == expected


def test_choose_threshold():
    with trackjac.tracking(representation="auto"):
        assert policy.choose(policy.AUTO_MAX_INPUTS) == "bits"
        assert policy.choose(policy.AUTO_MAX_INPUTS + 1) == "sets"
    with trackjac.tracking(representation="sets"):
        assert policy.choose(1) == "sets"
    with trackjac.tracking(representation="bits"):
        assert policy.choose(10 ** 7) == "bits"
    with pytest.raises(ValueError):
        with trackjac.tracking(representation="dense"):
            pass


def test_bits_range_realignment():
    """Bitmasks over different id ranges (two sources far apart) line up, or fall back to CSR."""
    a = BitProv.identity(3, 10, torch.device("cpu"))
    b = BitProv.identity(3, 130, torch.device("cpu"))
    far = BitProv.identity(3, 10 ** 6, torch.device("cpu"))
    with trackjac.tracking(representation="auto"):
        u = provenance.union([a, b], 3)
        assert isinstance(u, BitProv) and u.lo == 0
        check(u, [{10, 130}, {11, 131}, {12, 132}])
        v = provenance.union([a, far], 3)
        assert isinstance(v, Prov)
        check(v, [{10, 10 ** 6}, {11, 10 ** 6 + 1}, {12, 10 ** 6 + 2}])
    with trackjac.tracking(representation="bits"):
        assert isinstance(provenance.union([a, far], 3), BitProv)
