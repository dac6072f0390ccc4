"""CSR index sets and packed bitmasks give identical patterns on random programs.

The programs are those of ``test_programs`` (``tests/random_programs.py``: pointwise maths,
views, in-place writes into buffers, reductions, scans, data movement, products), run once
per provenance representation; the patterns must be equal entry for entry.  Larger shapes than in
``test_programs`` make bitmasks span several words and id ranges straddle word
boundaries; sources created under different representations exercise the conversions.
"""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trackjac
from trackjac.provenance import policy
from trackjac.provenance import BitProv
from trackjac.provenance import SetProv as Prov

from random_programs import CHOICES, program_args, programs, run_program

REPS = ("sets", "bits", "auto")


def _patterns(f, args, **kw):
    out = {}
    for rep in REPS:
        pats = trackjac.jacobian_sparsity(f, *args, representation=rep, **kw)
        out[rep] = [p.to_dense() for p in pats]
    return out


def _assert_same(pats, msg):
    ref = pats["sets"]
    for rep in REPS[1:]:
        for name, a, b in zip("xrc", ref, pats[rep]):
            assert torch.equal(a, b), f"{rep} differs from sets for {name}{msg}"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.tuples(st.integers(1, 12), st.integers(1, 12)), st.sampled_from(sorted(CHOICES)),
       st.booleans())
def test_programs_identical_patterns(steps, shape, choice, local):
    f = lambda x, r, c: CHOICES[choice](run_program(steps, x, r, c))  # noqa: E731
    _assert_same(_patterns(f, program_args(shape, 3), local=local), f" in {steps} + {choice} (local={local})")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.tuples(st.integers(1, 9), st.integers(1, 9)),
       st.tuples(*[st.sampled_from(["sets", "bits"])] * 4))
def test_sources_of_different_representations(steps, shape, reps):
    """x, r, c created as bitmasks or CSR in any mix, combined under any setting."""
    args = program_args(shape, 5)
    f = lambda x, r, c: run_program(steps, x, r, c)  # noqa: E731
    expected = [p.to_dense() for p in trackjac.jacobian_sparsity(f, *args, representation="sets")]
    srcs = []
    for a, rep in zip(args, reps):
        with trackjac.tracking(representation=rep):
            srcs.append(trackjac.Tracked(a))
    with trackjac.tracking(representation=reps[3]):
        y = f(*srcs)
    for s, e, name in zip(srcs, expected, "xrc"):
        got = y.depends_on(s, layout=torch.strided).reshape(e.shape)
        assert torch.equal(got, e), f"{name} differs with sources {reps[:3]} under {reps[3]} in {steps}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.tuples(st.integers(1, 12), st.integers(1, 12)), st.sampled_from(sorted(CHOICES)))
def test_auto_switches_dense_intermediates_to_bits(steps, shape, choice):
    """With no size threshold, "auto" starts from sets and turns rows full enough into
    bitmasks (dense intermediates), mixing both representations: same patterns."""
    f = lambda x, r, c: CHOICES[choice](run_program(steps + [("softmax", 0), ("matmul", 1)], x, r, c))  # noqa: E731
    args = program_args(shape, 4)
    expected = [p.to_dense() for p in trackjac.jacobian_sparsity(f, *args, representation="sets")]
    saved = policy.AUTO_MAX_INPUTS, policy.AUTO_MAX_SPAN
    policy.AUTO_MAX_INPUTS, policy.AUTO_MAX_SPAN = 0, 0
    try:
        got = trackjac.jacobian_sparsity(f, *args, representation="auto")
    finally:
        policy.AUTO_MAX_INPUTS, policy.AUTO_MAX_SPAN = saved
    for name, e, g in zip("xrc", expected, got):
        assert torch.equal(g.to_dense(), e), f"auto (no threshold) differs for {name} in {steps} + {choice}"


def test_dense_intermediate_becomes_bits():
    x = torch.rand(200, dtype=torch.float64)
    saved = policy.AUTO_MAX_INPUTS, policy.AUTO_MAX_SPAN
    policy.AUTO_MAX_INPUTS, policy.AUTO_MAX_SPAN = 0, 0
    try:
        t = trackjac.Tracked(x)
        s = torch.softmax(t, 0)       # every element depends on all 200 inputs
        y = s * t.roll(1)             # mixes with a sparse CSR operand
    finally:
        policy.AUTO_MAX_INPUTS, policy.AUTO_MAX_SPAN = saved
    assert isinstance(t._store.prov, Prov)
    assert isinstance(s._store.prov, BitProv) and isinstance(y._store.prov, BitProv)
    assert y.depends_on(t, layout=torch.strided).all()


def test_representation_is_used():
    x = torch.rand(4, 5, dtype=torch.float64)
    for rep, cls in (("bits", BitProv), ("sets", Prov)):
        with trackjac.tracking(representation=rep):
            t = trackjac.Tracked(x)
            y = (t * t.roll(1, 0)).sum(1)
        assert isinstance(t._store.prov, cls)
        assert isinstance(y._store.prov, cls)


def test_auto_threshold_by_input_count():
    small = torch.rand(policy.AUTO_MAX_INPUTS, dtype=torch.float64)
    large = torch.rand(policy.AUTO_MAX_INPUTS + 1, dtype=torch.float64)
    seen = []

    def f(*xs):
        seen.append([type(x._store.prov) for x in xs])
        return sum(x.sum() for x in xs)

    trackjac.jacobian_sparsity(f, small)
    trackjac.jacobian_sparsity(f, large)
    half = small[: policy.AUTO_MAX_INPUTS // 2 + 1]
    trackjac.jacobian_sparsity(f, half, half)  # the count is over all tracked arguments
    assert seen == [[BitProv], [Prov], [Prov, Prov]]


def test_bits_on_brusselator_match_sets():
    import problems   # benches/problems.py (benches/ is on sys.path: pyproject's pytest options)
    x = problems.brusselator_point(8)
    ref = problems.brusselator_pattern(8).to_dense()
    for rep in REPS:
        p = trackjac.jacobian_sparsity(problems.brusselator, x, representation=rep)
        assert torch.equal(p.to_dense(), ref), rep
