"""Convolution, pooling, interpolation, grid sampling and embedding bags vs dense autograd Jacobians.

Sound always (every nonzero of the dense Jacobian is in the pattern); tight where the
op has no value-dependent choice (convolution, average pooling, interpolation,
embedding sums): equal to the union of the nonzeros over a few random points, in global
and local mode.  Max pooling in local mode equals the dense nonzeros at the point (random
inputs have no ties); in global mode it equals the window, obtained independently by
pooling one-hot images.
"""
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import trackjac

import dense_reference
from dense_reference import as_dense, assert_equal, assert_sound

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny convolutions: thread-pool start-up dominates (and thrashes on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# dense references in forward mode (vmapped: fast on these ops), reverse mode where an op has
# no forward rule; ``reverse_too=True``: united with reverse mode's, for ops whose backward
# disagrees with their forward
dense_nonzeros = partial(dense_reference.dense_nonzeros, forward=True)
union_nonzeros = partial(dense_reference.union_nonzeros, forward=True)


def patterns(f, args, local):
    """Dense pattern per argument (strict: an op without a rule fails the test)."""
    p = trackjac.jacobian_sparsity(f, *args, local=local, strict=True)
    return [as_dense(q) for q in (p if isinstance(p, tuple) else (p,))]


def randn_args(shapes, dtype=torch.float64):
    def make(seed):
        g = torch.Generator().manual_seed(1000 + seed)
        return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    return make


def check(f, make_args, *, global_exact=None, points=3, reverse_too=False):
    """Global pattern == union over points (or ``global_exact``); local == nonzeros here."""
    args = make_args(0)
    union = union_nonzeros(f, make_args, points, reverse_too=reverse_too)
    here = dense_nonzeros(f, args, reverse_too=reverse_too)
    glob = patterns(f, args, local=False)
    loc = patterns(f, args, local=True)
    expected = union if global_exact is None else global_exact
    for i, (g, l) in enumerate(zip(glob, loc)):
        assert_sound(g, union[i], f" (global, arg {i})")
        assert_equal(g, expected[i], f" (global, arg {i})")
        assert_equal(l, here[i], f" (local, arg {i})")
        assert not (l & ~g).any(), "local pattern must be inside the global one"
    return glob, loc


# -- convolution --------------------------------------------------------------------------------
@st.composite
def conv_configs(draw):
    d = draw(st.integers(1, 3))
    transposed = draw(st.booleans())
    groups = draw(st.integers(1, 2 if d == 3 else 3))
    icg, ocg = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    n = draw(st.integers(1, 2))
    side = {1: 8, 2: 5, 3: 3}[d]
    ks, strides, pads, dils, ops, sizes, outs = [], [], [], [], [], [], []
    for _ in range(d):
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 3))
        dl = draw(st.integers(1, 2))
        p = draw(st.integers(0, k - 1 if k > 1 else 1))
        size = draw(st.integers(1, side))
        if transposed:
            op = draw(st.integers(0, max(s, dl) - 1))
            out = (size - 1) * s - 2 * p + dl * (k - 1) + op + 1
        else:
            op = 0
            out = (size + 2 * p - dl * (k - 1) - 1) // s + 1
        assume(out >= 1)
        ks.append(k), strides.append(s), pads.append(p), dils.append(dl), ops.append(op)
        sizes.append(size), outs.append(out)
    bias = draw(st.booleans())
    cin, cout = groups * icg, groups * ocg
    out_numel = n * cout
    in_numel = n * cin
    for o, s in zip(outs, sizes):
        out_numel, in_numel = out_numel * o, in_numel * s
    assume(out_numel <= 400 and in_numel <= 400)
    wshape = (cin, ocg) if transposed else (cout, icg)
    return dict(d=d, transposed=transposed, groups=groups, x=(n, cin) + tuple(sizes),
                w=wshape + tuple(ks), b=(cout,) if bias else None, stride=strides, padding=pads,
                dilation=dils, output_padding=ops)


def conv_fn(cfg):
    d = cfg["d"]
    if cfg["transposed"]:
        op = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[d - 1]
        kw = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"],
                  groups=cfg["groups"], dilation=cfg["dilation"])
    else:
        op = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
        kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    if cfg["b"] is None:
        return lambda x, w: op(x, w, None, **kw)
    return lambda x, w, b: op(x, w, b, **kw)


@settings(max_examples=120, **SETTINGS)
@given(conv_configs())
def test_convolution_matches_autograd(cfg):
    shapes = [cfg["x"], cfg["w"]] + ([cfg["b"]] if cfg["b"] is not None else [])
    check(conv_fn(cfg), randn_args(shapes), points=2)


def test_convolution_unbatched_and_single_source():
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    check(lambda x: F.conv2d(x, w, padding=1, stride=2), randn_args([(2, 5, 6)]))
    x = torch.randn(1, 4, 5, dtype=torch.float64)
    check(lambda w: F.conv1d(x, w, groups=2, padding=2, dilation=2), randn_args([(6, 2, 3)]))


def test_convolution_padding_strings_and_conv_tbc():
    check(lambda x, w: F.conv2d(x, w, padding="same", dilation=(2, 1)), randn_args([(1, 2, 5, 6), (3, 2, 3, 3)]))
    check(lambda x, w: F.conv1d(x, w, padding="valid", stride=2), randn_args([(2, 2, 7), (3, 2, 2)]))
    # An even kernel makes torch pad a copy with zeros first: the weight multiplies those zero
    # constants, so it participates there (structurally) although autograd sees zeros.
    f = lambda x, w: F.conv2d(x, w, padding="same")
    args = randn_args([(1, 2, 5, 6), (3, 2, 2, 2)])(0)
    px, pw = patterns(f, args, False)
    nx, nw = dense_nonzeros(f, args)
    assert_equal(px, nx)
    assert_sound(pw, nw)
    check(lambda x, w, b: torch.conv_tbc(x, w, b, 1), randn_args([(6, 2, 3), (3, 3, 2), (2,)]))


def test_convolution_pattern_is_not_dense():
    """A 256x256 image: ``out x in`` would be 4G entries; the pattern has 9 per output."""
    x = torch.randn(1, 1, 256, 256)
    w = torch.randn(1, 1, 3, 3)
    p = trackjac.jacobian_sparsity(lambda x: F.conv2d(x, w, padding=1), x)
    assert p._nnz() == (256 * 256 * 9 - 4 * 256 * 3 + 4)
    pw = trackjac.jacobian_sparsity(lambda w: F.conv2d(x, w, padding=1), w)
    assert pw._nnz() == p._nnz()


# -- pooling ------------------------------------------------------------------------------------
def one_hot_windows(pool, spatial):
    """``(out, in)`` window membership of one plane by pooling one-hot images (independent reference)."""
    m = 1
    for s in spatial:
        m *= s
    eye = torch.eye(m, dtype=torch.float64).reshape((m, 1) + tuple(spatial))
    out = pool(eye)
    return (out.reshape(m, -1) > 0.5).t()


def planes(win, count):
    return torch.block_diag(*([win] * count))


@st.composite
def pool_configs(draw, dilation=True):
    d = draw(st.integers(1, 3))
    side = {1: 10, 2: 6, 3: 4}[d]
    ks, ss, ps, ds, sizes = [], [], [], [], []
    for _ in range(d):
        k = draw(st.integers(1, 3))
        ks.append(k)
        ss.append(draw(st.integers(1, 3)))
        ps.append(draw(st.integers(0, k // 2)))
        ds.append(draw(st.integers(1, 2)) if dilation else 1)
        sizes.append(draw(st.integers(ds[-1] * (k - 1) + 1, max(side, ds[-1] * (k - 1) + 1))))
    return dict(d=d, kernel_size=ks, stride=ss, padding=ps, dilation=ds, sizes=sizes,
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                batch=(draw(st.integers(1, 2)), draw(st.integers(1, 2))))


@settings(max_examples=50, **SETTINGS)
@given(pool_configs(dilation=False))
def test_avg_pool(cfg):
    d = cfg["d"]
    op = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[d - 1]
    f = lambda x: op(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["ceil_mode"],
                     cfg["count_include_pad"])
    check(f, randn_args([cfg["batch"] + tuple(cfg["sizes"])]), points=2)


@settings(max_examples=50, **SETTINGS)
@given(pool_configs())
def test_max_pool(cfg):
    d = cfg["d"]
    op = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[d - 1]
    f = lambda x: op(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["ceil_mode"])
    win = one_hot_windows(f, cfg["sizes"])
    check(f, randn_args([cfg["batch"] + tuple(cfg["sizes"])]),
          global_exact=[planes(win, cfg["batch"][0] * cfg["batch"][1])])
    # return_indices goes through the same op
    g = lambda x: op(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["ceil_mode"],
                     return_indices=True)[0]
    args = randn_args([cfg["batch"] + tuple(cfg["sizes"])])(3)
    assert_equal(patterns(g, args, True)[0], dense_nonzeros(g, args)[0])


@st.composite
def adaptive_configs(draw):
    d = draw(st.integers(1, 3))
    side = {1: 10, 2: 7, 3: 4}[d]
    size = tuple(draw(st.integers(1, side)) for _ in range(d))
    out = tuple(draw(st.integers(1, s + 2)) for s in size)
    return d, size, out


@settings(max_examples=40, **SETTINGS)
@given(adaptive_configs())
def test_adaptive_pools(cfg):
    d, size, out = cfg
    shape = (2, 2) + size
    avg = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[d - 1]
    mx = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[d - 1]
    check(lambda x: avg(x, out), randn_args([shape]), points=2)
    f = lambda x: mx(x, out)
    check(f, randn_args([shape]), global_exact=[planes(one_hot_windows(f, size), 4)])
    # interpolate(mode="area") is adaptive average pooling
    if d == 2:
        check(lambda x: F.interpolate(x, size=out, mode="area"), randn_args([shape]), points=2)


@pytest.mark.parametrize("d", [2, 3])
def test_fractional_max_pool(d):
    size, out, k = ((7, 9), (3, 4), (2, 3)) if d == 2 else ((5, 6, 6), (2, 3, 3), (2, 2, 3))
    samples = torch.rand(2, 3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    op = F.fractional_max_pool2d if d == 2 else F.fractional_max_pool3d
    f = lambda x: op(x, k, output_size=out, _random_samples=samples)
    # windows differ per (n, c) plane: reference from one-hot images, one plane at a time
    wins = []
    for n in range(2):
        for c in range(3):
            g = lambda e: op(e, k, output_size=out, _random_samples=samples[n:n + 1, c:c + 1].expand(e.shape[0], 1, d))
            wins.append(one_hot_windows(g, size))
    check(f, randn_args([(2, 3) + size]), global_exact=[torch.block_diag(*wins)])


def test_lp_pool():
    check(lambda x: F.lp_pool2d(x.abs() + 0.5, 2, (2, 3), stride=2), randn_args([(1, 2, 6, 7)]), points=2)
    check(lambda x: F.lp_pool1d(x.abs() + 0.5, 3, 3), randn_args([(2, 2, 9)]), points=2)


# -- interpolation ------------------------------------------------------------------------------
INTERP = [
    ("linear", (9,), dict(size=7)), ("linear", (9,), dict(size=4, align_corners=True)),
    ("linear", (5,), dict(scale_factor=2.5)), ("linear", (6,), dict(scale_factor=0.7, recompute_scale_factor=False)),
    ("bilinear", (6, 7), dict(size=(9, 4))), ("bilinear", (6, 7), dict(scale_factor=(1.7, 2.0), align_corners=True)),
    ("bilinear", (8, 9), dict(size=(3, 5), antialias=True)), ("bilinear", (8, 9), dict(size=(11, 4), antialias=True)),
    ("bilinear", (8, 6), dict(scale_factor=0.4, antialias=True, recompute_scale_factor=False)),
    ("bicubic", (6, 7), dict(size=(9, 4))), ("bicubic", (5, 6), dict(scale_factor=2, align_corners=True)),
    ("bicubic", (8, 9), dict(size=(3, 5), antialias=True)),
    ("bicubic", (8, 7), dict(size=(11, 3), antialias=True, align_corners=True)),
    ("trilinear", (4, 5, 6), dict(size=(3, 7, 5))), ("trilinear", (3, 4, 3), dict(scale_factor=1.5, align_corners=True)),
]


@pytest.mark.parametrize("mode,size,kw", INTERP)
def test_interpolate(mode, size, kw):
    check(lambda x: F.interpolate(x, mode=mode, **kw), randn_args([(2, 2) + size]), points=2)


def _aa_width_one(x, kw):
    """torch's antialiased CPU forward with output width 1 disagrees with its backward."""
    if not kw.get("antialias"):
        return False
    return F.interpolate(x, **kw).shape[-1] == 1


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_interpolate_antialias_width_one(mode):
    for size, out in (((5, 1), (3, 1)), ((5, 4), (3, 1)), ((2, 3), (7, 1))):
        kw = dict(size=out, antialias=True)
        f = lambda x: F.interpolate(x, mode=mode, **kw)
        check(f, randn_args([(1, 2) + size]), points=2, reverse_too=True)


@st.composite
def interp_configs(draw):
    mode = draw(st.sampled_from(["linear", "bilinear", "bicubic", "trilinear"]))
    d = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}[mode]
    side = {1: 10, 2: 7, 3: 4}[d]
    size = tuple(draw(st.integers(1, side)) for _ in range(d))
    kw = dict(align_corners=draw(st.booleans()))
    if d == 2 and draw(st.booleans()):
        kw["antialias"] = True
    if draw(st.booleans()):
        kw["size"] = tuple(draw(st.integers(1, side + 3)) for _ in range(d))
    else:
        scale = tuple(draw(st.floats(0.3, 3.0)) for _ in range(d))
        assume(all(int(s * f) >= 1 for s, f in zip(size, scale)))
        kw["scale_factor"] = scale
        kw["recompute_scale_factor"] = draw(st.booleans())
    return mode, size, kw


@settings(max_examples=60, **SETTINGS)
@given(interp_configs())
def test_interpolate_generated(cfg):
    mode, size, kw = cfg
    make = randn_args([(1, 2) + size])
    quirk = _aa_width_one(make(0)[0], dict(kw, mode=mode))
    check(lambda x: F.interpolate(x, mode=mode, **kw), make, points=2, reverse_too=quirk)


def test_interpolate_float32_and_channels_last():
    x = torch.randn(1, 3, 5, 6).to(memory_format=torch.channels_last)
    f = lambda x: F.interpolate(x, size=(7, 4), mode="bilinear")
    p = patterns(f, [x], False)[0]
    assert_equal(p, union_nonzeros(f, randn_args([(1, 3, 5, 6)]), 2)[0])


# -- grid sampling ------------------------------------------------------------------------------
def grid_args(xshape, gshape):
    def make(seed):
        g = torch.Generator().manual_seed(2000 + seed)
        return [torch.randn(xshape, generator=g, dtype=torch.float64),
                torch.rand(gshape, generator=g, dtype=torch.float64) * 2.6 - 1.3]
    return make


GRID_CASES = [(m, p, a) for m in ("bilinear", "nearest", "bicubic")
              for p in ("zeros", "border", "reflection") for a in (False, True)]


@pytest.mark.parametrize("mode,pad,ac", GRID_CASES)
def test_grid_sample_2d(mode, pad, ac):
    for xs, gs in (((2, 2, 4, 5), (2, 3, 4, 2)), ((1, 2, 1, 4), (1, 2, 3, 2))):
        make = grid_args(xs, gs)
        f = lambda x, g: F.grid_sample(x, g, mode=mode, padding_mode=pad, align_corners=ac)
        x, g = make(0)
        here = dense_nonzeros(f, [x, g])
        loc = patterns(f, [x, g], True)
        for i in range(2):
            assert_equal(loc[i], here[i], f" (local, arg {i})")
        glob = patterns(f, [x, g], False)
        union = union_nonzeros(f, make, 3)
        n, c = xs[:2]
        plane, pts = xs[2] * xs[3], gs[1] * gs[2]
        # input: the grid chooses positions, every element of the plane is a candidate
        exp_x = torch.block_diag(*[torch.ones(pts, plane, dtype=torch.bool)] * (n * c))
        # grid: each output depends on its own point's coordinates (none for nearest)
        exp_g = torch.zeros(n, c, pts, n, pts, 2, dtype=torch.bool)
        if mode != "nearest":
            for b in range(n):
                exp_g[b, :, torch.arange(pts), b, torch.arange(pts), 0] = not (ac and xs[3] == 1)
                exp_g[b, :, torch.arange(pts), b, torch.arange(pts), 1] = not (ac and xs[2] == 1)
        for i, e in enumerate((exp_x, exp_g.reshape(n * c * pts, -1))):
            assert_sound(glob[i], union[i], f" (global, arg {i})")
            assert_equal(glob[i], e, f" (global, arg {i})")
        # a constant grid makes no choice: exact in both modes
        gc = make(1)[1]
        check(lambda x: F.grid_sample(x, gc, mode=mode, padding_mode=pad, align_corners=ac),
              lambda s: make(s)[:1])


@pytest.mark.parametrize("mode,pad,ac", [(m, p, a) for m, p, a in GRID_CASES if m != "bicubic"])
def test_grid_sample_3d(mode, pad, ac):
    make = grid_args((1, 2, 3, 4, 3), (1, 2, 3, 2, 3))
    f = lambda x, g: F.grid_sample(x, g, mode=mode, padding_mode=pad, align_corners=ac)
    x, g = make(0)
    here = dense_nonzeros(f, [x, g])
    loc = patterns(f, [x, g], True)
    glob = patterns(f, [x, g], False)
    union = union_nonzeros(f, make, 3)
    for i in range(2):
        assert_equal(loc[i], here[i], f" (local, arg {i})")
        assert_sound(glob[i], union[i], f" (global, arg {i})")
    gc = make(1)[1]
    check(lambda x: F.grid_sample(x, gc, mode=mode, padding_mode=pad, align_corners=ac), lambda s: make(s)[:1])


def test_grid_sample_on_pixel_centres_is_sound():
    """affine_grid's identity lands exactly on pixels: taps of zero weight may be kept, none is lost."""
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64)
    grid = F.affine_grid(theta, (1, 1, 4, 5), align_corners=True)
    f = lambda x: F.grid_sample(x, grid, align_corners=True)
    x = torch.randn(1, 1, 4, 5, dtype=torch.float64)
    for local in (False, True):
        assert_sound(patterns(f, [x], local)[0], dense_nonzeros(f, [x])[0])


# -- embedding bags -----------------------------------------------------------------------------
IDX = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9, 0, 0])
OFF = torch.tensor([0, 4, 4, 7])


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 4])
def test_embedding_bag(mode, padding_idx):
    make = randn_args([(10, 3)])
    for idx, off in ((IDX, OFF), (IDX.view(2, 5), None)):
        f = lambda w: F.embedding_bag(idx, w, off, mode=mode, padding_idx=padding_idx)
        if mode == "max":  # a choice: global keeps every row of the bag
            exact = patterns(lambda w: F.embedding_bag(idx, w, off, mode="sum", padding_idx=padding_idx),
                             make(0), False)
            check(f, make, global_exact=exact)
        else:
            check(f, make, points=2)


def test_embedding_bag_per_sample_weights_and_tracked_indices():
    check(lambda w, p: F.embedding_bag(IDX, w, OFF, mode="sum", per_sample_weights=p),
          randn_args([(10, 3), (10,)]), points=2)

    def f(w, s):  # indices computed from a tracked value: any row may be chosen
        idx = (s.abs() * 3).long().clamp(max=9)
        return F.embedding_bag(idx, w, OFF)
    w, s = torch.randn(10, 3, dtype=torch.float64), torch.rand(10, dtype=torch.float64)
    pw = patterns(f, [w, s], False)[0]
    assert pw.all()
    assert_equal(patterns(f, [w, s], True)[0], dense_nonzeros(lambda w: f(w, s), [w])[0])
