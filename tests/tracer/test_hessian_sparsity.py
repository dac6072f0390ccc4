"""``hessian_sparsity`` against ``torch.autograd.functional.hessian`` on generated scalar programs.

A program runs the first-order generator's steps (``tests/random_programs.py``: pointwise maths
with broadcasting, views, in-place writes, reductions, scans, data movement, matmuls with
constant matrices) mixed with second-order steps (``STEPS2``: nonlinearities, products of
tracked intermediates, matmuls between them, in-place ``mul_``/``add_``/``x[...] = ...`` on
intermediates, ``prod``/``mean``/``norm`` reductions) on an ``(m, n)`` state built from three
inputs ``x`` (m, n), ``r`` (n,), ``c`` (m,), then reduces it to a scalar (``FINALS``).  Steps
have no zero constants and no value-dependent choices, so the global pattern must equal the
union of the dense Hessian's nonzeros over a few random points.  Value-dependent choices
(``CHOICES2``: relu, abs, max, where, clamp, sort ...) are checked for soundness in both modes,
and the local pattern against the Hessian at and near the point.

Nonzeros: ``|h| > NOISE * max(max|H|, 1)`` and not ``nan`` (round-off residue of terms that
cancel is no evidence), as in the OpInfo sweeps.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.autograd.functional import hessian

import trackjac

from dense_reference import as_dense, assert_sound
from random_programs import STEPS, program_args, shapes

NOISE = 1e-10


def _perm(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _ramp(h):
    """Asymmetric weights in [0.5, 1.5): no two entries cancel by symmetry."""
    return torch.linspace(0.5, 1.5, h.numel(), dtype=h.dtype).reshape(h.shape)


def _inplace_mul(h, r, c, k):
    z = h.clone()
    z[:, :1].mul_(torch.atan(h[:, -1:]))   # a product of two tracked intermediates, in place
    z.add_(r)
    z.t()[k % z.shape[1]].mul_(c)   # through a transposed view
    return z


def _setitem_product(h, x, k):
    """Writes over part of ``z``: a write over all of a nonlinear value is the known limit
    (``test_value_overwritten_entirely_keeps_its_interactions``)."""
    z = h * 1.5
    if h.shape[0] > 1:
        z[0] = h[0] * torch.atan(h[-1])
    if h.shape[1] > 1:
        z[:, k % h.shape[1]] = x[:, 0] * torch.atan(h[:, -1])
    return z


# second-order steps: (h, x, r, c, k) -> new h of the same shape.  atan keeps values moderate:
# a saturated tanh or an overflowing product has derivatives that round to exactly 0
STEPS2 = {
    "tanh": lambda h, x, r, c, k: torch.tanh(torch.atan(h)),
    "sigmoid": lambda h, x, r, c, k: torch.sigmoid(torch.atan(h)),
    "exp": lambda h, x, r, c, k: torch.exp(0.5 * torch.atan(h)),
    "torch_square": lambda h, x, r, c, k: torch.square(torch.atan(h)) + h,
    "mul_tracked": lambda h, x, r, c, k: torch.atan(h) * h.roll(1, 0) + x,
    "div_tracked": lambda h, x, r, c, k: h / (1 + h.flip(1) ** 2),
    "prod_rows": lambda h, x, r, c, k: h * (1 + 0.25 * torch.atan(h)).prod(1, keepdim=True),
    "mean_all": lambda h, x, r, c, k: h * torch.atan(h.mean()),
    "norm_rows": lambda h, x, r, c, k: h * torch.atan(torch.linalg.vector_norm(h, dim=1, keepdim=True)),
    "matmul_tracked": lambda h, x, r, c, k: h + 0.1 * (torch.atan(h) @ torch.atan(h).t()) @ h,
    "matmul_x": lambda h, x, r, c, k: torch.atan(h) @ (x.t() @ x) * 0.2,
    "outer": lambda h, x, r, c, k: h + torch.outer(c, r) * torch.atan(h.sum()),
    "pow_tracked": lambda h, x, r, c, k: (torch.atan(h) ** 2 + 1) ** (0.5 * r),
    "expand_mul": lambda h, x, r, c, k: h * c.unsqueeze(1).expand_as(h),
    "index_mul": lambda h, x, r, c, k: torch.atan(h) * h[_perm(h.shape[0], k)],
    "inplace_mul": lambda h, x, r, c, k: _inplace_mul(h, r, c, k),
    "setitem_product": lambda h, x, r, c, k: _setitem_product(h, x, k),
    "slice_mul": lambda h, x, r, c, k: torch.cat([torch.atan(h[:, :1]) * h[:, -1:], h[:, 1:]], 1),
}


def _one(h):
    """A constant entry: a norm or logsumexp of one element would be linear in it."""
    return torch.ones(1, dtype=h.dtype)


# scalar reductions of the final state
FINALS = {
    "wsum": lambda h: (h * _ramp(h)).sum(),
    "sumsq": lambda h: (h * h * _ramp(h)).sum(),
    "prod": lambda h: (0.75 + 0.5 * h).prod(),
    "mean_sq": lambda h: (h * _ramp(h)).mean() ** 2,
    "norm": lambda h: torch.linalg.vector_norm(torch.cat([h.reshape(-1) * _ramp(h).reshape(-1), _one(h)])),
    # atan: softmax weights of widely spread values underflow, and so would the Hessian's entries
    "logsumexp": lambda h: torch.logsumexp(torch.cat([(torch.atan(h) * _ramp(h)).reshape(-1), 0.5 * _one(h)]), 0),
    "sin_sum": lambda h: torch.sin(h * _ramp(h)).sum(),
}

# value-dependent choices (global mode keeps every branch)
CHOICES2 = {
    "relu": lambda h: torch.relu(h - 1) * h.flip(0),
    "relu_sq": lambda h: torch.relu(h - 1) ** 2,
    "abs": lambda h: (h - 1).abs() * h.roll(1, 1),
    "abs_alone": lambda h: (h - 1).abs(),
    "max": lambda h: h.max(1, keepdim=True).values * h,
    "max_all": lambda h: h.max() + h,
    "amax_sq": lambda h: h.amax(0) ** 2 + h,
    "where": lambda h: torch.where(h > 1, h * h, h.roll(1, 0)),
    "clamp": lambda h: h.clamp(0.8, 1.2) * h,
    "maximum": lambda h: torch.maximum(h, h.roll(1, 0)) ** 2,
    "sort": lambda h: h.sort(1).values * _ramp(h),
    "sign": lambda h: h.sign() * h * h,
    "leaky_relu": lambda h: torch.nn.functional.leaky_relu(h - 1, 0.1) * h,
    "hardtanh": lambda h: torch.nn.functional.hardtanh(h - 1, -0.3, 0.3) ** 2,
    "min_all": lambda h: h.min() * h,
}

def _softmax(h, k):
    """``STEPS["softmax"]`` over a dimension of size > 1 where there is one.  Over a dimension of
    size 1 softmax is the constant 1: its input's own interactions (``x * x`` before it) stay in
    the pattern, as they would for a per-element pair tracer, though the Hessian has none."""
    dim = k % 2 if h.shape[k % 2] > 1 else 1 - k % 2
    return STEPS["softmax"](h, None, None, None, dim) if h.shape[dim] > 1 else h


ALL_STEPS = {**STEPS, **STEPS2, "softmax": lambda h, x, r, c, k: _softmax(h, k)}
programs2 = st.lists(st.tuples(st.sampled_from(sorted(ALL_STEPS)), st.integers(0, 5)), min_size=1, max_size=5)


def run(steps, final, x, r, c, choice=None):
    h = x * 1.0
    for name, k in steps:
        h = ALL_STEPS[name](h, x, r, c, k)
    if choice is not None:
        h = CHOICES2[choice](h)
    return FINALS[final](h)


# -- the dense reference ---------------------------------------------------------------------------
def dense_hessian_masks(f, args):
    """``(nonzero, possible)``: ``H[a][b]`` boolean ``(a.numel(), b.numel())`` masks of the dense
    Hessian at ``args``.  ``nonzero``: what a sound pattern must hold (residue below ``NOISE``
    relative to the largest entry, and ``nan``, are no evidence); ``possible``: what a tight one
    may hold (any entry that is not exactly 0, and ``nan``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        H = hessian(f, tuple(args))
    blks = [[H[a][b].reshape(args[a].numel(), args[b].numel()) for b in range(len(args))]
            for a in range(len(args))]
    finite = torch.cat([blk[torch.isfinite(blk)] for row in blks for blk in row])
    tol = NOISE * max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0)
    return ([[(blk.abs() > tol) & ~torch.isnan(blk) for blk in row] for row in blks],
            [[(blk != 0) | torch.isnan(blk) for blk in row] for row in blks])


def union_hessian_masks(f, make_args, points=3):
    """:func:`dense_hessian_masks` united over ``make_args(0 .. points - 1)``."""
    acc = None
    for s in range(points):
        m = dense_hessian_masks(f, make_args(s))
        acc = m if acc is None else tuple([[a | b for a, b in zip(ra, rb)] for ra, rb in zip(x, y)]
                                          for x, y in zip(acc, m))
    return acc


def near_hessian_masks(f, args, points=2, scale=1e-4):
    """Masks at ``args`` and at small perturbations of it (a local pattern's reference)."""
    gen = torch.Generator().manual_seed(7)
    return union_hessian_masks(
        f, lambda s: args if s == 0 else [a + scale * torch.randn(a.shape, generator=gen, dtype=a.dtype)
                                          for a in args], points + 1)


def assert_tight(pattern, nonzero, possible, msg):
    assert_sound(pattern, nonzero, msg)
    extra = pattern & ~possible
    assert not extra.any(), f"not tight{msg}: {int(extra.sum())} extra entries at {extra.nonzero()[:5].tolist()}"


def blocks(p):
    return [[as_dense(b) for b in row] for row in p]


NAMES = "xrc"


# -- generated programs ----------------------------------------------------------------------------
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs2, st.sampled_from(sorted(FINALS)), shapes)
def test_program_hessian_equals_union_of_nonzeros(steps, final, shape):
    f = lambda x, r, c: run(steps, final, x, r, c)  # noqa: E731
    args = program_args(shape, 0)
    pat = blocks(trackjac.hessian_sparsity(f, *args))
    nonzero, possible = union_hessian_masks(f, lambda s: program_args(shape, 100 + s))
    loc = blocks(trackjac.hessian_sparsity(f, *args, local=True))
    here, _ = dense_hessian_masks(f, args)
    for a in range(3):
        for b in range(3):
            where = f" for H[{NAMES[a]}][{NAMES[b]}] in {steps}, {final}"
            assert_tight(pat[a][b], nonzero[a][b], possible[a][b], where)
            assert_sound(loc[a][b], here[a][b], " (local)" + where)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs2, st.sampled_from(sorted(FINALS)), shapes, st.sampled_from(sorted(CHOICES2)))
def test_program_with_choices_sound_in_both_modes(steps, final, shape, choice):
    f = lambda x, r, c: run(steps, final, x, r, c, choice)  # noqa: E731
    args = program_args(shape, 1)
    glob = blocks(trackjac.hessian_sparsity(f, *args))
    loc = blocks(trackjac.hessian_sparsity(f, *args, local=True))
    here, _ = dense_hessian_masks(f, args)
    _, near = near_hessian_masks(f, args)
    for a in range(3):
        for b in range(3):
            where = f" for H[{NAMES[a]}][{NAMES[b]}] in {steps}, {choice}, {final}"
            assert_sound(glob[a][b], here[a][b], " (global)" + where)
            assert_sound(loc[a][b], here[a][b], " (local)" + where)
            assert not (loc[a][b] & ~glob[a][b]).any(), "local pattern outside the global one" + where
            assert not (loc[a][b] & ~near[a][b]).any(), "local pattern not tight" + where


# -- regressions and semantics ---------------------------------------------------------------------
def _equal_to_dense(f, *shapes, local=False, points=3):
    """The pattern of ``f`` equals the dense Hessian's nonzeros, united over ``points`` random points."""
    make = lambda s: [torch.randn(sh, generator=torch.Generator().manual_seed(10 + s), dtype=torch.float64)  # noqa: E731
                      for sh in shapes]
    args = make(0)
    pat = trackjac.hessian_sparsity(f, *args, local=local)
    pat = blocks(pat) if len(shapes) > 1 else [[as_dense(pat)]]
    nonzero, possible = dense_hessian_masks(f, args) if local else union_hessian_masks(f, make, points)
    for a in range(len(shapes)):
        for b in range(len(shapes)):
            assert_tight(pat[a][b], nonzero[a][b], possible[a][b], f" for block {a}, {b}")
    return pat


_M = torch.tensor([True, False, True, False, False])

SELECTIONS = {   # a product, then only part of it used: the backward's zero slots multiply the factors
    "slice": lambda x: (x * x.flip(0))[:2].sum(),
    "index": lambda x: (x * x.flip(0))[[0, 3]].sin().sum(),
    "gather": lambda x: (x * x.roll(1)).gather(0, torch.tensor([1, 1, 4])).sum(),
    "where_const": lambda x: torch.where(_M, x * x.roll(1), x).sum(),
    "masked_fill": lambda x: (x * x.roll(2)).masked_fill(_M, 1.0).exp().sum(),
    "setitem": lambda x: _overwrite_part(x),
    "mixed": lambda x: (x * x.flip(0))[:1].sum() + (x * x.roll(1)).sum(),
    "relu_alone": lambda x: torch.relu(x).sum(),
}


def _overwrite_part(x):
    z = x * x.roll(1)
    z[1:3] = x[1:3] * 2.0
    return z.sum()


@pytest.mark.parametrize("name", sorted(SELECTIONS))
@pytest.mark.parametrize("local", [False, True])
def test_selections_of_products_are_exact(name, local):
    _equal_to_dense(SELECTIONS[name], (5,), local=local)


def test_relu_has_no_hessian():
    # threshold_backward(grad, result, 0) passes grad where result > 0: no derivative in result
    x = torch.randn(6, dtype=torch.float64)
    assert as_dense(trackjac.hessian_sparsity(lambda x: torch.relu(x).sum(), x)).sum() == 0
    assert as_dense(trackjac.hessian_sparsity(lambda x: torch.relu(x).sum(), x, local=True)).sum() == 0


def test_relu_local_drops_the_branch_not_taken():
    x = torch.tensor([1.0, -2.0, -3.0, 4.0], dtype=torch.float64)
    f = lambda x: (torch.relu(x) * x.flip(0)).sum()  # noqa: E731
    loc = as_dense(trackjac.hessian_sparsity(f, x, local=True))
    assert torch.equal(loc, hessian(f, x) != 0)          # only the pair (0, 3): x[1], x[2] < 0
    assert as_dense(trackjac.hessian_sparsity(f, x)).sum() == 4


def test_zero_constants_keep_interactions_unless_dropped():
    x = torch.rand(4, dtype=torch.float64) + 0.5
    f = lambda x: (0.0 * (x * x.flip(0))).sum() + (torch.cat([x[:2], torch.zeros(2, dtype=x.dtype)]) * x.sin()).sum()  # noqa: E731
    keep = as_dense(trackjac.hessian_sparsity(f, x))
    assert torch.equal(keep, torch.eye(4, dtype=torch.bool) | torch.eye(4, dtype=torch.bool).flip(0))
    drop = as_dense(trackjac.hessian_sparsity(f, x, constant_zeros="drop"))
    assert torch.equal(drop, hessian(f, x) != 0)          # x[0], x[1]: sin(x) * x only


def test_buffer_allocated_inside_f():
    def f(x):
        buf = torch.zeros(x.shape, dtype=x.dtype)      # a factory under torch.func.grad
        buf[::2] = x[::2] ** 2
        return (buf * x.roll(1)).sum()
    _equal_to_dense(f, (5,))


def test_value_overwritten_entirely_keeps_its_interactions():
    # known limit: the gradient of a value overwritten everywhere is all zeros and holds the seed
    # nowhere, so it is taken for a constant zero (participation): x0 * x1 stays in the pattern
    def f(x):
        z = x * x.flip(0)
        z[:] = x * 2.0
        return z.sin().sum()
    x = torch.rand(2, dtype=torch.float64)
    pat = as_dense(trackjac.hessian_sparsity(f, x))
    assert_sound(pat, hessian(f, x) != 0)
    assert pat.all() and not (hessian(f, x)[0, 1] != 0)


def test_several_inputs_nest_like_autograd():
    f = lambda a, b, n: ((a[:, None] * b[None, :]).sin().sum() + (a ** 3).sum()) * n  # noqa: E731
    a, b = torch.rand(3, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    H = trackjac.hessian_sparsity(f, a, b, 2)          # a non-tensor argument is passed as it is
    assert [[tuple(h.shape) for h in row] for row in H] == [[(3, 3), (3, 2)], [(2, 3), (2, 2)]]
    _equal_to_dense(lambda a, b: f(a, b, 2), (3,), (2,))
    assert torch.equal(as_dense(H[0][1]), as_dense(H[1][0]).t())


def test_pattern_is_symmetric_and_coalesced():
    x = torch.rand(6, dtype=torch.float64)
    P = trackjac.hessian_sparsity(lambda x: (x[:-1] * x[1:].exp()).sum() + x[0] * x[5], x)
    assert P.layout == torch.sparse_coo and P.is_coalesced()
    assert torch.equal(P.to_dense(), P.to_dense().t())


def test_bad_inputs_raise_clear_errors():
    x = torch.rand(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="scalar"):
        trackjac.hessian_sparsity(lambda x: x * 2, x)
    with pytest.raises(TypeError, match="no floating-point tensor"):
        trackjac.hessian_sparsity(lambda n: torch.tensor(float(n)), 3)


_F = torch.nn.functional
_RAMP = torch.linspace(0.5, 1.5, 72, dtype=torch.float64)

BACKWARD_RULES = {   # backward ops with a rule of their own (rules/backward.py): name -> (f, shape)
    "avg_pool2d": (lambda x: (_F.avg_pool2d(x, 2, stride=1) ** 2).sum(), (1, 2, 4, 4)),
    "avg_pool3d": (lambda x: (_F.avg_pool3d(x, 2) ** 2).sum(), (1, 1, 2, 4, 4)),
    "adaptive_avg_pool2d": (lambda x: (_F.adaptive_avg_pool2d(x, 3) ** 2).sum(), (1, 2, 4, 4)),
    "adaptive_avg_pool3d": (lambda x: (_F.adaptive_avg_pool3d(x, (1, 3, 3)) ** 2).sum(), (1, 1, 2, 4, 4)),
    "adaptive_max_pool2d": (lambda x: (_F.adaptive_max_pool2d(x, 2) ** 2).sum(), (1, 2, 4, 4)),
    "max_pool3d": (lambda x: (_F.max_pool3d(x, 2) ** 2).sum(), (1, 1, 2, 4, 4)),
    "replicate_pad2d": (lambda x: (_F.pad(x, (1, 2, 1, 0), mode="replicate").sin() * 1.5).sum(), (1, 2, 3, 3)),
    "replicate_pad1d": (lambda x: (_F.pad(x, (2, 1), mode="replicate") ** 3).sum(), (2, 4)),
    "upsample_nearest2d": (lambda x: (_F.interpolate(x, scale_factor=2) ** 2 * _RAMP[:64].reshape(1, 1, 8, 8)).sum(),
                           (1, 1, 4, 4)),
    "upsample_nearest_exact1d": (lambda x: _F.interpolate(x, size=7, mode="nearest-exact").sin().sum(), (1, 2, 3)),
    "hardshrink": (lambda x: (_F.hardshrink(x, 0.5) ** 2).sum(), (2, 4)),
    "softshrink": (lambda x: (_F.softshrink(x, 0.5) * x.flip(1)).sum(), (2, 4)),
}


@pytest.mark.parametrize("name", sorted(BACKWARD_RULES))
def test_backward_op_rules_local_equal_the_hessian(name):
    f, shape = BACKWARD_RULES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", trackjac.UnsupportedOpWarning)   # no conservative fallback
        _equal_to_dense(f, shape, local=True)
        x = torch.randn(shape, dtype=torch.float64)
        glob = as_dense(trackjac.hessian_sparsity(f, x))
    assert_sound(glob, hessian(f, x).reshape(x.numel(), -1) != 0)
    if "max" not in name and "shrink" not in name:   # no choice by value: global is exact too
        _equal_to_dense(f, shape)


CONVOLUTIONS = {   # (f(x, w), x shape, w shape): convolution_backward's rule, input and weight tracked
    "conv1d_groups_stride": (lambda x, w: (_F.conv1d(x, w, stride=2, padding=1, groups=2) ** 2).sum(),
                             (2, 4, 5), (6, 2, 3)),
    "conv1d_dilation_sin": (lambda x, w: _F.conv1d(x, w, dilation=2, groups=2).sin().sum(), (2, 4, 7), (4, 2, 2)),
    "conv2d_tanh": (lambda x, w: _F.conv2d(x, w, stride=(2, 1), padding=1).tanh().sum(), (1, 2, 4, 3), (3, 2, 2, 2)),
    "conv1d_unbatched": (lambda x, w: (_F.conv1d(x, w) ** 2).sum(), (3, 6), (2, 3, 2)),
    "conv_transpose1d": (lambda x, w: (_F.conv_transpose1d(x, w, stride=2) ** 2).sum(), (2, 3, 4), (3, 2, 3)),
    "conv_then_slice": (lambda x, w: (_F.conv1d(x, w) ** 2)[..., :2].sum(), (1, 2, 6), (2, 2, 3)),
}


@pytest.mark.parametrize("name", sorted(CONVOLUTIONS))
@pytest.mark.parametrize("local", [False, True])
def test_convolution_backward_is_exact(name, local):
    f, xs, ws = CONVOLUTIONS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", trackjac.UnsupportedOpWarning)   # no conservative fallback
        _equal_to_dense(f, xs, ws, local=local)
        _equal_to_dense(lambda x: f(x, torch.linspace(-1, 1, _numel(ws), dtype=torch.float64).reshape(ws)), xs,
                        local=local)


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n
