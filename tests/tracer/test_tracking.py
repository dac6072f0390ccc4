"""The tracking runtime: seed question, views and in-place writes, buffers, modes, errors."""
import warnings

import pytest
import torch

import trackjac
from trackjac import ControlFlowWarning, StrictModeError, Tracked, TrackingError, UnsupportedOpWarning

from dense_reference import assert_equal, assert_sound, dense_jacobian, dense_nonzeros
from trackjac.testing import assert_pattern_sound
from trackjac.demo import seed_func  # the forum question's function, as the demo runs it


def dense(p):
    return p.to_dense()


# -- the forum question ---------------------------------------------------------------------
def seed_single(g):
    return seed_func(g[:2], g[2:4], g[4:6])


def test_seed_single_participation():
    g = torch.rand(6)
    pat = dense(trackjac.jacobian_sparsity(seed_single, g))
    assert torch.equal(pat, torch.eye(6, dtype=torch.bool))
    # autograd cannot tell: the first block is numerically zero
    nz = dense_nonzeros(seed_single, [g])[0]
    assert not nz[:2, :2].any() and pat[:2, :2].diagonal().all()


def test_seed_tuple_participation():
    a = [torch.rand(2) for _ in range(3)]
    pats = trackjac.jacobian_sparsity(seed_func, *a)
    assert isinstance(pats, tuple) and len(pats) == 3
    for i, p in enumerate(pats):
        expected = torch.zeros(6, 2, dtype=torch.bool)
        expected[2 * i:2 * i + 2] = torch.eye(2, dtype=torch.bool)
        assert torch.equal(dense(p), expected)


# -- API shapes and nesting -------------------------------------------------------------------
def test_depends_on_shapes_and_layouts():
    x = Tracked(torch.rand(3, 4))
    y = x.sum(1)
    p = y.depends_on(x)
    assert p.layout == torch.sparse_coo and p.is_coalesced() and p.shape == (3, 3, 4)
    d = y.depends_on(x, layout=torch.strided)
    assert d.dtype == torch.bool and torch.equal(d, p.to_dense())
    expected = torch.zeros(3, 3, 4, dtype=torch.bool)
    for i in range(3):
        expected[i, i, :] = True
    assert torch.equal(d, expected)
    assert torch.equal(trackjac.depends_on(y, x, layout=torch.strided), d)


def test_scalar_output_and_input():
    x = Tracked(torch.tensor(2.0))
    y = (x * 3).reshape(1).expand(4)
    assert y.depends_on(x, layout=torch.strided).tolist() == [True] * 4
    assert (x ** 2).depends_on(x).shape == ()
    assert (x ** 2).depends_on(x).to_dense().item()


def test_nesting_like_autograd_functional():
    def f(a, b):
        return a * b.sum(), a.sum() + 0 * b[:1]

    a, b = torch.rand(3), torch.rand(2)
    pats = trackjac.jacobian_sparsity(f, a, b)
    ref = dense_jacobian(f, a, b)
    assert len(pats) == 2 and all(len(row) == 2 for row in pats)
    for prow, rrow in zip(pats, ref):
        for p, r in zip(prow, rrow):
            assert p.shape == r.shape
    assert_pattern_sound(f, a, b)   # at (a, b) and at three perturbations of it
    single = trackjac.jacobian_sparsity(lambda a: a * 2, a)
    assert isinstance(single, torch.Tensor) and single.shape == (3, 3)


def test_non_float_args_pass_through():
    idx = torch.tensor([2, 0])
    p = trackjac.jacobian_sparsity(lambda x, i: x[i], torch.rand(3), idx)
    assert dense(p).tolist() == [[False, False, True], [True, False, False]]


def test_several_sources_mixed():
    x, y = Tracked(torch.rand(3)), Tracked(torch.rand(3))
    z = x * y.roll(1)
    assert torch.equal(z.depends_on(x, layout=torch.strided), torch.eye(3, dtype=torch.bool))
    assert torch.equal(z.depends_on(y, layout=torch.strided), torch.eye(3, dtype=torch.bool).roll(1, 0))


# -- views and in-place writes -----------------------------------------------------------------
def test_write_through_view_updates_base():
    def f(x):
        buf = torch.zeros(3, 4)
        col = buf[:, 1]          # a view
        col.copy_(x[:3])         # write through the view
        buf.t()[2].add_(x[3])    # another view, in place
        return buf

    x = torch.rand(4)
    p = dense(trackjac.jacobian_sparsity(f, x)).reshape(3, 4, 4)
    for i in range(3):
        assert p[i, 1].tolist() == [j == i for j in range(4)]
        assert p[i, 2].tolist() == [j == 3 for j in range(4)]
        assert not p[i, 0].any() and not p[i, 3].any()


def test_preallocated_buffer_from_issue():
    def f(x):
        m = x.numel() - 1
        out = torch.zeros(m)
        for i in range(m):
            out[i] = x[i] * x[i + 1]
        return out

    x = torch.rand(6)
    assert_equal(trackjac.jacobian_sparsity(f, x), dense_nonzeros(f, [x])[0])


def test_inplace_ops_update_provenance():
    def f(x, y):
        z = x.clone()
        z.mul_(y)
        z[1:] += x[:-1]
        z.index_put_((torch.tensor([0]),), y[-1:])
        w = torch.empty(5, dtype=x.dtype)
        w.copy_(z)
        w.scatter_(0, torch.tensor([4]), x[:1])
        return w

    x, y = torch.rand(5), torch.rand(5)
    pats = trackjac.jacobian_sparsity(f, x, y)
    for p, r in zip(pats, dense_nonzeros(f, [x, y])):
        assert_equal(p, r)


def test_overwrite_removes_dependency():
    def f(x):
        z = x * 2
        z[0] = 1.0
        return z

    p = dense(trackjac.jacobian_sparsity(f, torch.rand(3)))
    assert not p[0].any() and p[1, 1] and p[2, 2]


def test_view_of_source_and_source_inplace():
    x = Tracked(torch.rand(4))
    v = x[1:3]
    y = v * 2
    assert y.depends_on(x, layout=torch.strided).tolist() == [[False, True, False, False],
                                                              [False, False, True, False]]
    with pytest.raises(ValueError, match="must be a source"):
        y.depends_on(v)


def test_storage_offset_and_strides():
    def f(x):
        a = x.reshape(4, 6)[1:, ::2].t()       # non-contiguous, offset view
        b = a.contiguous().flip(0)
        return b * a

    x = torch.rand(24)
    assert_equal(trackjac.jacobian_sparsity(f, x), dense_nonzeros(f, [x])[0])


# -- autograd's view of "no derivative" -----------------------------------------------------------
def test_detach_no_grad_integer_results():
    x = Tracked(torch.rand(4))
    assert not (x.detach() * 2).depends_on(x).to_dense().any()
    with torch.no_grad():
        z = x * 3
    assert not z.depends_on(x).to_dense().any()
    k = x.argmax()
    assert k.dtype == torch.int64
    assert not (x.floor() + x.sign()).depends_on(x).to_dense().any()


# -- global vs local on selection ops ----------------------------------------------------------------
SELECTIONS = {
    "where": lambda x: torch.where(x > 0, x, x.roll(1)),
    "max_dim": lambda x: x.reshape(2, 3).max(1).values,
    "max_all": lambda x: x.max().reshape(1),
    "amin": lambda x: x.reshape(2, 3).amin(0),
    "sort": lambda x: x.sort().values,
    "topk": lambda x: x.topk(2).values,
    "index_by_argmax": lambda x: x[x.argmax().reshape(1)] * x[:2],
    "clamp": lambda x: x.clamp(-0.5, 0.5),
    "relu": torch.relu,
    "maximum": lambda x: torch.maximum(x, x.roll(2)),
    "masked_fill": lambda x: x.masked_fill(x < 0, 0.0),
    "max_pool": lambda x: torch.nn.functional.max_pool1d(x.reshape(1, 1, 6), 2),
    "cummax": lambda x: x.cummax(0).values,
}


@pytest.mark.parametrize("name", sorted(SELECTIONS))
def test_global_and_local_selection(name):
    f = SELECTIONS[name]
    x = torch.tensor([0.3, -1.2, 2.0, -0.7, 1.1, 0.9])
    glob = dense(trackjac.jacobian_sparsity(f, x))
    loc = dense(trackjac.jacobian_sparsity(f, x, local=True))
    nz = dense_nonzeros(f, [x])[0]
    assert_sound(glob, nz, " (global)")
    assert_sound(loc, nz, " (local)")
    assert not (loc & ~glob).any(), "local must be inside global"
    assert (glob & ~loc).any(), "global keeps candidates that local drops"
    # global holds at any other point with the same control flow
    for s in range(3):
        g = torch.Generator().manual_seed(s)
        assert_sound(glob, dense_nonzeros(f, [torch.randn(6, generator=g)])[0], f" (global, point {s})")


def test_constant_choices_exact_in_both_modes():
    mask = torch.tensor([True, False, True])
    idx = torch.tensor([2, 2, 0])

    def f(x):
        return torch.where(mask, x, x.roll(1)) + x[idx] + x.masked_fill(mask, 0.0)

    x = torch.rand(3)
    ref = dense_nonzeros(f, [x])[0]
    assert_equal(trackjac.jacobian_sparsity(f, x), ref)
    assert_equal(trackjac.jacobian_sparsity(f, x, local=True), ref)


def test_tracked_local_flag():
    x = Tracked(torch.tensor([1.0, -1.0]), local=True)
    assert torch.relu(x).depends_on(x, layout=torch.strided).tolist() == [[True, False], [False, False]]


# -- control flow ------------------------------------------------------------------------------------
def branchy(x):
    if x.sum() > 0:
        return x * 2
    return x.roll(1)


def test_control_flow_warns_once():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        trackjac.jacobian_sparsity(lambda x: branchy(x) + branchy(x), torch.rand(3))
    cf = [r for r in w if issubclass(r.category, ControlFlowWarning)]
    assert len(cf) == 1 and "control-flow path" in str(cf[0].message)


@pytest.mark.parametrize("read", [lambda t: t.item(), lambda t: t.tolist(), lambda t: bool(t > 0),
                                  lambda t: float(t)])
def test_control_flow_strict_raises(read):
    with pytest.raises(StrictModeError, match="control-flow path"):
        trackjac.jacobian_sparsity(lambda x: x * read(x.sum()), torch.rand(3), strict=True)


def test_control_flow_silent_in_local_mode():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ControlFlowWarning)
        trackjac.jacobian_sparsity(branchy, torch.rand(3), local=True)


def test_reading_constants_is_not_control_flow():
    def f(x):
        n = int(torch.zeros(1).sum().item()) + 2
        return x[:n]

    with warnings.catch_warnings():
        warnings.simplefilter("error", ControlFlowWarning)
        trackjac.jacobian_sparsity(f, torch.rand(3), strict=True)


# -- ops without a rule --------------------------------------------------------------------------------
@pytest.fixture
def no_rule_for_sinh(monkeypatch):
    from trackjac.tracer import resolve as rules
    real = rules.lookup
    monkeypatch.setattr(rules, "lookup",
                        lambda func: None if func.overloadpacket is torch.ops.aten.sinh else real(func))


def test_unknown_op_is_conservative_with_warning(no_rule_for_sinh):
    f = lambda x: torch.sinh(x[:2]) * 1.0  # noqa: E731
    with pytest.warns(UnsupportedOpWarning, match="aten.sinh"):
        p = dense(trackjac.jacobian_sparsity(f, torch.rand(4)))
    assert p[:, :2].all() and not p[:, 2:].any()


def test_unknown_op_strict_raises(no_rule_for_sinh):
    with pytest.raises(StrictModeError, match="aten.sinh"):
        trackjac.jacobian_sparsity(torch.sinh, torch.rand(4), strict=True)


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [torch.arange(3), torch.tensor([True]), torch.rand(2, dtype=torch.complex64), 3.0])
def test_tracked_rejects_non_float(bad):
    with pytest.raises(TypeError, match="Tracked"):
        Tracked(bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_tracked_accepts_float_dtypes(dtype):
    x = Tracked(torch.rand(3, dtype=dtype))
    y = x * x
    assert y.dtype == dtype and y.depends_on(x).to_dense().sum() == 3
    assert torch.equal(x.value, trackjac.untrack(x))


def test_depends_on_requires_source():
    x = Tracked(torch.rand(3))
    with pytest.raises(ValueError, match="must be a source"):
        (x * 2).depends_on(x * 2)
    with pytest.raises(ValueError, match="must be a source"):
        (x * 2).depends_on(torch.rand(3))


def test_writing_tracked_into_plain_tensor_raises():
    plain = torch.zeros(3)
    x = Tracked(torch.rand(3))
    with pytest.raises(TrackingError, match="inside the tracked function"):
        plain[:] = x * 2
    with pytest.raises(TrackingError):
        plain.add_(x)
    outside = torch.zeros(3)
    with pytest.raises(TrackingError):
        trackjac.jacobian_sparsity(lambda x: outside.copy_(x), torch.rand(3))


def test_jacobian_sparsity_errors():
    with pytest.raises(TypeError, match="no floating-point tensor"):
        trackjac.jacobian_sparsity(lambda i: i, torch.arange(3))
    with pytest.raises(TypeError, match="must return a tensor"):
        trackjac.jacobian_sparsity(lambda x: "nope", torch.rand(3))


def test_untrack_pytree():
    x = Tracked(torch.rand(2))
    out = trackjac.untrack({"a": [x, 1], "b": x * 2})
    assert type(out["a"][0]) is torch.Tensor and type(out["b"]) is torch.Tensor and out["a"][1] == 1


def test_factories_inside_tracking_are_trackable():
    with trackjac.tracking():
        z = torch.zeros(3)
        assert isinstance(z, Tracked)
    assert type(torch.zeros(3)) is torch.Tensor


def test_random_ops_have_no_dependency():
    def f(x):
        return x * torch.rand_like(x) + torch.randn(3) + torch.nn.functional.dropout(x, 0.5)

    p = dense(trackjac.jacobian_sparsity(f, torch.rand(3)))
    assert torch.equal(p, torch.eye(3, dtype=torch.bool))


@pytest.mark.parametrize("local", [False, True])
@pytest.mark.parametrize("op", ["_foreach_add_", "_foreach_mul_", "_foreach_div_"])
def test_foreach_with_a_0d_tracked_tensor_keeps_its_dependency(op, local):
    # PyTorch's argument parser reads a 0-d tensor that does not require grad as a Scalar
    # (t.item()) for the in-place overloads; inside tracking() it must stay a dependency
    def f(x):
        xs = [x[:3].clone(), x[3:5].clone()]
        out = getattr(torch, op)(xs, x[5])
        return torch.cat(xs if out is None else list(out))

    x = torch.rand(6, dtype=torch.float64) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no ControlFlowWarning: nothing read as a number
        P = trackjac.jacobian_sparsity(f, x, local=local, layout=torch.strided)
    J = dense_nonzeros(f, [x])[0]
    assert torch.equal(P, J)
