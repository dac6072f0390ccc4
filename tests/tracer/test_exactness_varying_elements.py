"""constant_zeros="drop" in global mode: a zero is a constant only element by element.

A tensor can hold entries that carry provenance next to entries computed from tracked values
without a derivative (``cat([softmax(s), (x > 0).float()])``) or drawn at random; a zero of the
latter is not a zero at another point, so value-aware products must keep the other factor there.
"""
import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac
from dense_reference import assert_sound, union_nonzeros

DT = torch.float64

# pieces of length k built from x (length n >= k): (name, function)
CARRY = {
    "softmax": lambda x, k: torch.softmax(x[:k], 0),
    "scaled": lambda x, k: 3 * x[:k],
    "constant": lambda x, k: torch.zeros(k, dtype=x.dtype),
}
VARYING = {
    "positive": lambda x, k: (x[:k] > 0).to(x.dtype),
    "floor": lambda x, k: torch.floor(x[:k]),
    "no_grad": lambda x, k: _no_grad(lambda: torch.relu(x[:k])),
    "argmax_hot": lambda x, k: torch.nn.functional.one_hot(x[:k].argmax(), k).to(x.dtype),
    "dropout_mask": lambda x, k: torch.nn.functional.dropout(torch.ones(k, dtype=x.dtype), 0.5),
}


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def _combine(how, a, b):
    if how == "cat":
        return torch.cat([a, b])
    if how == "stack":
        return torch.stack([a, b], 1).reshape(-1)
    if how == "where":   # a constant condition picks entries of both
        cond = torch.arange(a.numel() * 2) % 2 == 0
        return torch.where(cond, torch.cat([a, a]), torch.cat([b, b]))
    buf = torch.zeros(a.numel() * 2, dtype=a.dtype)   # written in place
    buf[: a.numel()] = a
    buf[a.numel():] = b
    return buf


def _use(how, m, x):
    if how == "mul":
        return x.roll(1)[: m.numel()] * m
    if how == "matmul":
        return m.unsqueeze(1) * (torch.ones(m.numel(), 3, dtype=x.dtype) @ x[:3].unsqueeze(1))
    return torch.lerp(x[: m.numel()], x.flip(0)[: m.numel()], m)


@settings(max_examples=40, deadline=None)
@given(carry=st.sampled_from(sorted(CARRY)), varying=st.sampled_from(sorted(VARYING)),
       combine=st.sampled_from(["cat", "stack", "where", "write"]),
       use=st.sampled_from(["mul", "matmul", "lerp"]), k=st.integers(2, 4))
def test_varying_entries_next_to_provenance_are_not_constants(carry, varying, combine, use, k):
    n = 2 * k

    def f(x):
        return _use(use, _combine(combine, CARRY[carry](x, k), VARYING[varying](x, k)), x)

    def point(seed):
        torch.manual_seed(seed)
        return (torch.randn(n, dtype=DT),)

    x = point(0)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pattern = trackjac.jacobian_sparsity(f, x, constant_zeros="drop")
    # every point and every draw: the global pattern must hold there too
    assert_sound(pattern, union_nonzeros(f, point, points=6)[0], f" ({carry}, {varying}, {combine}, {use})")


def test_constant_entries_next_to_provenance_still_drop():
    """Masked-out entries of a softmax (exact constant zeros) keep cutting the other factor."""
    def f(x):
        s = torch.cat([x[:3], torch.full((3,), float("-inf"), dtype=x.dtype)])
        return torch.softmax(s, 0) * x.roll(1)

    x = torch.randn(6, dtype=DT)
    p = trackjac.jacobian_sparsity(f, x, constant_zeros="drop").to_dense()
    assert not p[3:].any()   # 0 * x.roll(1) with a constant zero: no entry
    assert p[:3, :3].all()
