"""Indices and masks computed from tracked values are choices: a global pattern built at one
point must contain the Jacobian at every other point with the same control flow, for every rule
that consumes indices (issue #11, classes 1 and 4)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac
from trackjac.rules import registry

from dense_reference import as_dense, assert_sound, dense_nonzeros

aten = torch.ops.aten
N = 6


def _order(x):
    """A permutation computed from the tracked values (an index that is a choice)."""
    return x.detach().argsort() if not hasattr(x, "value") else x.argsort()


def _topmask(x, k=4):
    """A boolean mask of ``k`` selected entries, computed from the values (count fixed)."""
    return x >= x.sort().values[-k]


def f_unpool(x):
    y, i = F.max_pool2d(x.reshape(1, 1, 4, 4), 2, return_indices=True)
    return F.max_unpool2d(y * 2, i, 2).reshape(-1)


def f_unpool3d(x):
    y, i = F.max_pool3d(x.reshape(1, 1, 2, 2, 4), 2, return_indices=True)
    return F.max_unpool3d(y * 2, i, 2).reshape(-1)


def f_gather(x):
    m = x.reshape(4, 4)
    return m.gather(1, m.argsort(1)[:, :2]).reshape(-1)


def f_take_along(x):
    m = x.reshape(4, 4)
    return torch.take_along_dim(m, m.argmax(0, keepdim=True), 0).reshape(-1)


def f_embedding(x):
    w = x.reshape(4, 4)
    return F.embedding(w.argmax(1), w * 1.0).reshape(-1)


def f_index_int(x):
    m = x.reshape(4, 4)
    return m[torch.arange(4), m.argmin(1)]


def f_index_select(x):
    m = x.reshape(4, 4)
    return m.index_select(1, m[0].argsort()[:2]).reshape(-1)


def f_take(x):
    return torch.take(x, x.argsort()[:5])


def f_scatter(x):
    return torch.zeros(16, dtype=x.dtype).scatter(0, x.argsort(), x * 2)


def f_index_put(x):
    y = torch.zeros(16, dtype=x.dtype)
    y[x.argsort()[:3]] = x[:3] * 2
    return y


def f_index_add(x):
    return torch.zeros(4, dtype=x.dtype).index_add(0, (x[:4] * 3).floor().long().clamp(0, 3), x[:4])


def f_masked_select(x):
    return torch.masked_select(x, _topmask(x, 12))


def f_masked_scatter(x):
    return torch.zeros(16, dtype=x.dtype).masked_scatter(_topmask(x, 5), x.sin())


def f_masked_fill(x):
    return x.masked_fill(_topmask(x), 0.0)


def f_where(x):
    return torch.where(_topmask(x), x.sin(), x.roll(1))


def f_mask_assign(x):
    y = x.cos()
    m = _topmask(x, 13)
    y[m] = torch.sin(x[m])
    return y


def f_put(x):
    return torch.zeros(16, dtype=x.dtype).put(x.argsort()[:4], x[:4])


CASES = {
    "max_unpool2d": f_unpool, "max_unpool3d": f_unpool3d, "gather": f_gather,
    "take_along_dim": f_take_along, "embedding": f_embedding, "index_int": f_index_int,
    "index_select": f_index_select, "take": f_take, "scatter": f_scatter, "index_put": f_index_put,
    "index_add": f_index_add, "masked_select": f_masked_select, "masked_scatter": f_masked_scatter,
    "masked_fill": f_masked_fill, "where": f_where, "mask_assign": f_mask_assign, "put": f_put,
}


def _pattern(f, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return as_dense(trackjac.jacobian_sparsity(f, x))


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(CASES)), seed=st.integers(0, 2 ** 16))
def test_global_pattern_is_sound_at_other_points(name, seed):
    """The pattern built at the first point contains the union of the Jacobian's nonzeros at
    several other random points."""
    f = CASES[name]
    g = torch.Generator().manual_seed(seed)
    pts = [torch.rand(16, dtype=torch.float64, generator=g) for _ in range(4)]
    p = _pattern(f, pts[0])
    for x in pts:
        out = f(x)
        nz = dense_nonzeros(f, [x])[0]
        assert nz.shape == p.shape, (name, out.shape)
        assert_sound(p, nz, f" ({name}, seed {seed})")


def test_max_unpool_strict_plan_at_another_point():
    x0 = torch.rand(16, dtype=torch.float64)
    plan = trackjac.jacobian_plan(f_unpool, x0)
    for s in range(3):
        x = torch.rand(16, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
        ref = torch.autograd.functional.jacobian(f_unpool, x)
        torch.testing.assert_close(plan(x).to_dense(), ref)


def _renorm_reference(w, idx, max_norm):
    """``embedding_renorm_`` out of place: rows named by ``idx`` with a norm over ``max_norm`` are
    scaled to it (the formula of ATen's kernel)."""
    rows = torch.zeros(w.shape[0], dtype=torch.bool)
    rows[idx] = True
    norm = w.norm(dim=1, keepdim=True)
    scale = torch.where(rows[:, None] & (norm > max_norm), max_norm / (norm + 1e-7), torch.ones_like(norm))
    return (w * scale).reshape(-1)


def test_embedding_renorm_with_derived_indices_is_sound_at_other_points():
    def f(x):
        w = x.reshape(4, 4) * 1.0
        torch.embedding_renorm_(w, w.sum(1).argsort()[:2], 1.0, 2.0)
        return w.reshape(-1)

    p = _pattern(f, torch.rand(16, dtype=torch.float64) + 1)
    for s in range(6):
        x = torch.rand(16, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) + 1
        w = x.reshape(4, 4)
        idx = w.sum(1).argsort()[:2]
        nz = dense_nonzeros(lambda v: _renorm_reference(v.reshape(4, 4), idx, 1.0), [x])[0]
        assert_sound(p, nz, f" (seed {s})")


# every rule that reads index or mask values declares them, so the registry refuses derived ones
INDEX_NAMES = {"index", "indices", "mask", "condition", "repeats", "lengths", "offsets"}
MY_KINDS = {"table:indexing", "table:movement", "table:pointwise", "table:reductions"}


def test_index_arguments_are_declared():
    missing = []
    for packet, kind in registry.KIND.items():
        if kind not in MY_KINDS or registry.RULES[packet].__name__ == "sparse_result":   # refused anyway
            continue
        names = set()
        for o in packet.overloads():
            for a in getattr(packet, o)._schema.arguments:
                written = a.alias_info is not None and a.alias_info.is_write   # out= buffers
                if a.name in INDEX_NAMES and "Tensor" in str(a.type) and not written:
                    names.add(a.name)
        undeclared = names - set(registry.INDICES.get(packet, ()))
        if undeclared:
            missing.append((packet.__name__, sorted(undeclared)))
    assert not missing, missing


# -- class 4: tighter candidates, still sound --------------------------------------------------
def _old_dense_count(f, x):   # every output on every input: the pattern before the tightening
    return f(x).numel() * x.numel()


@pytest.mark.parametrize("name, bound", [
    ("gather", lambda p: p.reshape(4, 2, 4, 4).any(1).any(-1).float().sum() == 4),       # own row
    ("take_along_dim", lambda p: p.reshape(4, 4, 4).any(1).float().sum() == 4),   # own column
    ("embedding", lambda p: p.reshape(4, 4, 4, 4).any(0).any(1).float().sum() == 4),  # column d
    ("index_int", lambda p: p.reshape(4, 4, 4).any(-1).float().sum() == 4),              # own row
    ("index_select", lambda p: p.reshape(4, 2, 4, 4).any(1).any(-1).float().sum() == 4),
])
def test_derived_index_candidates_stay_on_their_line(name, bound):
    f = CASES[name]
    x = torch.rand(16, dtype=torch.float64)
    p = _pattern(f, x)
    assert int(p.sum()) < _old_dense_count(f, x), "as dense as every candidate"
    assert bool(bound(p))


def test_boolean_mask_assignment_is_banded():
    """``y[m] = sin(x[m])`` with a derived mask selecting 13 of 16: every output depends on a band
    of positions around itself (it was dense), and the band holds at every point."""
    x = torch.rand(16, dtype=torch.float64)
    p = _pattern(f_mask_assign, x)
    i, j = p.nonzero().unbind(1)
    assert int((i - j).abs().max()) <= 2 * (16 - 13)
    assert int(p.sum()) < 16 * 16
    sel = _pattern(f_masked_select, x)   # 12 of 16: output k from inputs k .. k + 4
    i, j = sel.nonzero().unbind(1)
    assert bool(((j >= i) & (j <= i + 4)).all())
