"""Packed sequences: ``_pack_padded_sequence`` moves elements, and RNNs on packed data are exact."""
import copy
import warnings

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from dense_reference import random_points, union_nonzeros
from trackjac import Tracked, jacobian_sparsity, tracking
from trackjac.errors import UnsupportedOpWarning

LENGTHS = [5, 2, 4]


def _union(f, x, points=3):
    return union_nonzeros(f, random_points([x.shape], 10), points)[0]


def _plain(t):
    return t.value if isinstance(t, Tracked) else t


@pytest.mark.parametrize("batch_first", [False, True])
def test_pack_moves_elements(batch_first):
    x = torch.randn(3, 5, 2) if batch_first else torch.randn(5, 3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        with tracking():
            xt = Tracked(x)
            data, bs = torch.ops.aten._pack_padded_sequence(xt, torch.tensor([5, 4, 2]), batch_first)
            pat = data.depends_on(xt, layout=torch.strided).reshape(data.numel(), -1)
    codes = torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape)
    ref, ref_bs = torch.ops.aten._pack_padded_sequence(codes, torch.tensor([5, 4, 2]), batch_first)
    assert torch.equal(_plain(bs), ref_bs)
    assert torch.equal(pat.sum(1), torch.ones(data.numel(), dtype=torch.int64))
    assert torch.equal(pat.to(torch.int64).argmax(1), ref.reshape(-1).to(torch.int64))


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN])
def test_rnn_on_packed_data(cls):
    torch.manual_seed(0)
    m = cls(2, 3)
    m64 = copy.deepcopy(m).double()
    bs = torch.tensor([3, 3, 2, 2, 1])          # lengths 5, 4, 2

    def f(mod):
        def g(x):
            data, _ = torch.ops.aten._pack_padded_sequence(x, torch.tensor([5, 4, 2]), False)
            out, h = mod(PackedSequence(data, bs))
            h = h[0] if isinstance(h, tuple) else h
            return torch.cat([out.data.reshape(-1), h.reshape(-1)])
        return g
    x = torch.randn(5, 3, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        pat = jacobian_sparsity(f(m), x, layout=torch.strided)
    ref = _union(f(m64), x)
    assert torch.equal(pat, ref), (int(pat.sum()), int(ref.sum()))


@pytest.mark.parametrize("cls", [None, torch.nn.LSTM, torch.nn.GRU])
def test_pack_pad_round_trip(cls):
    torch.manual_seed(0)
    m = cls(2, 3) if cls is not None else None
    m64 = copy.deepcopy(m).double() if m is not None else None

    def f(mod):
        def g(x):
            p = pack_padded_sequence(x, LENGTHS, enforce_sorted=False)
            if mod is not None:
                p = mod(p)[0]
            return pad_packed_sequence(p)[0]
        return g
    x = torch.randn(5, 3, 2)
    pat = jacobian_sparsity(f(m), x, layout=torch.strided)
    ref = _union(f(m64), x)
    assert torch.equal(pat, ref)
