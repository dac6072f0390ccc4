"""Hypothesis-generated programs compared with dense autograd Jacobians.

The programs (``tests/random_programs.py``) are random sequences of steps on an ``(m, n)``
state built from up to three sources ``x`` (m, n), ``r`` (n,) and ``c`` (m,): pointwise maths
with broadcasting, views, in-place writes into buffers, reductions, scans, data movement and
products.  Programs have no zero constants, no value-dependent choices, asymmetric
coefficients (so no two entries cancel by symmetry) and a square root after softmax (no
linear combination of its outputs is constant), so the global pattern must equal the union
of the dense Jacobian's nonzeros over a few random points.
"""
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import trackjac

from dense_reference import assert_equal, assert_sound, dense_nonzeros, union_nonzeros
from random_programs import CHOICES, program_args, programs, run_program, shapes


def _unsaturated(out) -> bool:
    """No output is exactly 0 or 1 or non-finite: where a softmax underflows (an exact 0, whose
    square root has an infinite derivative, or an exact 1 with derivative ``p (1 - p) = 0``) or
    a power overflows, the dense Jacobian's zeros and nans are round-off, not structure."""
    return bool(torch.isfinite(out).all() and (out != 0).all() and (out != 1).all())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, shapes)
def test_program_pattern_equals_union_of_nonzeros(steps, shape):
    f = lambda x, r, c: run_program(steps, x, r, c)  # noqa: E731
    for s in range(3):   # saturated points (softmax at exactly 0 or 1, overflow) say nothing of structure
        assume(_unsaturated(f(*program_args(shape, 100 + s))))
    pats = trackjac.jacobian_sparsity(f, *program_args(shape, 0))
    expected = union_nonzeros(f, lambda s: program_args(shape, 100 + s), points=3)
    for p, e, name in zip(pats, expected, "xrc"):
        assert_equal(p, e, f" for {name} in {steps}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, shapes, st.sampled_from(["relu", "max", "where", "clamp", "sort"]))
def test_program_with_choices_sound_in_both_modes(steps, shape, choice):
    choose = CHOICES[choice]
    f = lambda x, r, c: choose(run_program(steps, x, r, c))  # noqa: E731
    args = program_args(shape, 1)
    glob = trackjac.jacobian_sparsity(f, *args)
    loc = trackjac.jacobian_sparsity(f, *args, local=True)
    for g, l, nz in zip(glob, loc, dense_nonzeros(f, args)):
        assert_sound(g, nz, " (global)")
        assert_sound(l, nz, " (local)")
        assert not (l.to_dense() & ~g.to_dense()).any()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.lists(st.integers(1, 3), min_size=1, max_size=3),
       st.sampled_from([torch.add, torch.mul, torch.atan2, torch.maximum]))
def test_broadcasting_binary(shape_a, shape_b, op):
    # right-align and make the shapes broadcastable by putting 1s where they differ
    n = max(len(shape_a), len(shape_b))
    a = [1] * (n - len(shape_a)) + shape_a
    b = [1] * (n - len(shape_b)) + shape_b
    b = [bb if bb == aa else 1 for aa, bb in zip(a, b)]
    xa, xb = torch.rand(a, dtype=torch.float64) + 0.1, torch.rand(b, dtype=torch.float64) + 0.2
    f = lambda u, v: op(u, v) * 1.0  # noqa: E731
    pats = trackjac.jacobian_sparsity(f, xa, xb)
    ref = union_nonzeros(f, lambda s: [torch.rand(a, dtype=torch.float64) + 0.1,
                                       torch.rand(b, dtype=torch.float64) + 0.2])
    for p, e in zip(pats, ref):
        if op is torch.maximum:
            assert_sound(p, e)
        else:
            assert_equal(p, e)
