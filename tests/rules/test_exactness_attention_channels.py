"""Attention: ``out[..., i, c]`` reads ``v[..., j, c]`` only, on the fused and the math paths."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from dense_reference import random_points, union_nonzeros
from trackjac import jacobian_sparsity
from trackjac.errors import UnsupportedOpWarning


def _union(f, args, points=3):
    return union_nonzeros(f, random_points([a.shape for a in args], 20), points)

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("ev", [3, 5])
@pytest.mark.parametrize("heads", [None, 2])
def test_value_channels_do_not_mix(dtype, causal, ev, heads):
    b = (2,) if heads is None else (2, heads)     # 4-D float32 inputs take the fused CPU kernel
    q, k = torch.randn(b + (4, 3), dtype=dtype), torch.randn(b + (6, 3), dtype=dtype)
    v = torch.randn(b + (6, ev), dtype=dtype)
    if causal:
        k, v = k[..., :4, :], v[..., :4, :]

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        pats = jacobian_sparsity(f, q, k, v, layout=torch.strided)
    refs = _union(f, (q, k, v))
    for p, r, name in zip(pats, refs, "qkv"):
        if causal:
            # the math path masks scores that carry q's and k's provenance: the masked keys are
            # dropped in local mode only
            assert not (r & ~p).any()
            continue
        assert torch.equal(p, r), (name, int(p.sum()), int(r.sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        local = jacobian_sparsity(f, q, k, v, layout=torch.strided, local=True)
    for p, r, name in zip(local, refs, "qkv"):
        assert torch.equal(p, r), ("local", name, int(p.sum()), int(r.sum()))


def test_fused_rule_v_is_per_channel():
    """The float32 CPU path is the fused op: v's pattern is block diagonal over channels."""
    v = torch.randn(1, 1, 3, 4)
    q = torch.randn(1, 1, 2, 4)
    pat = jacobian_sparsity(lambda v: F.scaled_dot_product_attention(q, v, v), v, layout=torch.strided)
    pat = pat.reshape(2, 4, 3, 4)
    for c in range(4):
        for c2 in range(4):
            if c != c2:
                # only through the keys (k = v here): every channel of v[j] enters the weights
                assert pat[:, c, :, c2].all()
    pv = jacobian_sparsity(lambda v: F.scaled_dot_product_attention(q, torch.randn(1, 1, 3, 4), v), v,
                           layout=torch.strided).reshape(2, 4, 3, 4)
    assert torch.equal(pv, torch.eye(4, dtype=torch.bool)[None, :, None, :].expand(2, 4, 3, 4))
