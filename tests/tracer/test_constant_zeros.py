"""``constant_zeros="drop"``: value-aware products, against dense autograd."""
import pytest
import torch

import trackjac

from dense_reference import assert_equal, assert_sound, dense_nonzeros

T, D = 5, 3


def causal_attention(x):
    q, k, v = x @ torch.linspace(0.5, 1.5, D * D, dtype=x.dtype).reshape(D, D), x * 0.5, x * 2
    s = q @ k.T
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    return torch.softmax(s.masked_fill(mask, float("-inf")), -1) @ v


def seed(a):
    return torch.cat([a[:2] * 0, a[2:] * 2])


CASES = {
    "seed": (seed, (4,)),
    "eye_mask_mm": (lambda x: torch.eye(4, dtype=x.dtype) @ x.reshape(4, 2), (8,)),
    "mv_constant_sparse": (lambda x: torch.mv(torch.tensor([[1.0, 0, 2], [0, 0, 3]], dtype=x.dtype), x), (3,)),
    "bmm": (lambda x: torch.bmm(torch.eye(3, dtype=x.dtype).expand(2, 3, 3), x.reshape(2, 3, 1)), (6,)),
    "dot": (lambda x: torch.dot(torch.tensor([0.0, 1, 0], dtype=x.dtype), x).reshape(1), (3,)),
    "mul_mask": (lambda x: x * (torch.arange(4, dtype=x.dtype) % 2), (4,)),
    "causal_attention": (causal_attention, (T, D)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_drop_is_exact_and_keep_is_participation(name):
    f, shape = CASES[name]
    x = torch.rand(shape, dtype=torch.float64) + 0.1
    nz = dense_nonzeros(f, [x])[0]
    dropped = trackjac.jacobian_sparsity(f, x, constant_zeros="drop")
    assert_equal(dropped, nz)
    kept = trackjac.jacobian_sparsity(f, x).to_dense()
    assert_sound(kept, nz)
    assert (kept & ~nz).any(), "participation keeps the entries multiplied by constant zeros"


def test_causal_attention_has_no_future_leak():
    x = torch.rand(T, D, dtype=torch.float64)
    p = trackjac.jacobian_sparsity(causal_attention, x, constant_zeros="drop").to_dense()
    tok = p.reshape(T, D, T, D).any(-1).any(1)
    assert torch.equal(tok, torch.ones(T, T, dtype=torch.bool).tril())


def test_zeros_with_provenance_still_connect():
    def f(x):
        z = x - x.detach()          # numerically zero, but depends on x
        return z * x.roll(1)

    x = torch.rand(3, dtype=torch.float64)
    p = trackjac.jacobian_sparsity(f, x, constant_zeros="drop").to_dense()
    assert_sound(p, dense_nonzeros(f, [x])[0])
    assert p.diagonal().all() and p.roll(1, 1).diagonal().all()


def test_bad_option():
    with pytest.raises(ValueError, match="constant_zeros"):
        trackjac.jacobian_sparsity(seed, torch.rand(4), constant_zeros="maybe")


@pytest.mark.parametrize("name", sorted(CASES))
def test_local_mode_drops_constant_zeros_unless_told_to_keep(name):
    f, shape = CASES[name]
    x = torch.rand(shape, dtype=torch.float64) + 0.1
    nz = dense_nonzeros(f, [x])[0]
    assert_equal(trackjac.jacobian_sparsity(f, x, local=True), nz)
    kept = trackjac.jacobian_sparsity(f, x, local=True, constant_zeros="keep").to_dense()
    assert_sound(kept, nz)
    assert (kept & ~nz).any()


# ops whose own formula multiplies by a constant that can be exactly zero
ZERO_FACTOR_OPS = {
    "lerp_weight_1": lambda x: torch.lerp(x[:3], x[3:], 1.0),
    "lerp_weight_0": lambda x: torch.lerp(x[:3], x[3:], 0.0),
    "lerp_tensor_weight": lambda x: torch.lerp(x[:3], x[3:], torch.tensor([0.0, 0.5, 1.0], dtype=x.dtype)),
    "foreach_lerp": lambda x: torch.cat(torch._foreach_lerp([x[:3], x[3:]], [x[3:], x[:3]], 1.0)),
    "dropout_backward_scale_0": lambda x: torch.ops.aten.native_dropout_backward(
        x, torch.tensor([True, False] * 3), 0.0),
    "dropout_backward": lambda x: torch.ops.aten.native_dropout_backward(
        x, torch.tensor([True, False] * 3), 2.0),
    "prelu_weight_0": lambda x: torch.nn.functional.prelu(x.reshape(2, 3) - 0.5,
                                                          torch.tensor([0.0, 0.2, 0.0], dtype=x.dtype)),
    "dropout2d": lambda x: torch.nn.functional.dropout2d(x.reshape(1, 3, 2, 1), 0.5, training=True),
}


@pytest.mark.parametrize("name", sorted(ZERO_FACTOR_OPS))
def test_zero_factors_inside_ops(name):
    f = ZERO_FACTOR_OPS[name]
    x = torch.rand(6, dtype=torch.float64) + 0.1
    for seed_ in range(3):   # dropout2d: several draws, the same draw for both runs
        torch.manual_seed(seed_)
        nz = dense_nonzeros(f, [x])[0]
        torch.manual_seed(seed_)
        assert_equal(trackjac.jacobian_sparsity(f, x, local=True), nz)
        torch.manual_seed(seed_)
        assert_sound(trackjac.jacobian_sparsity(f, x).to_dense(), nz)


def test_local_source_drops_constant_zeros_outside_a_context():
    x = trackjac.Tracked(torch.rand(4, dtype=torch.float64), local=True)
    assert not seed(x).depends_on(x, layout=torch.strided)[:2].any()
    with trackjac.tracking(constant_zeros="keep"):
        y = seed(x)
    assert y.depends_on(x, layout=torch.strided)[:2].diagonal()[:2].all()
    g = trackjac.Tracked(torch.rand(4, dtype=torch.float64))
    assert seed(g).depends_on(g, layout=torch.strided)[:2, :2].diagonal().all()
