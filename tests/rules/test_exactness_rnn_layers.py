"""Recurrent layers: the fused CPU LSTM layer (``mkldnn_rnn_layer``, float32 only) is exact."""
import copy
import warnings

import pytest
import torch

from dense_reference import random_points, union_nonzeros
from trackjac import jacobian_sparsity
from trackjac.errors import UnsupportedOpWarning


def _union(f, args, points=3):
    return union_nonzeros(f, random_points([a.shape for a in args], 100), points)

def _pattern(f, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        p = jacobian_sparsity(f, *args, layout=torch.strided, **kw)
    return p if isinstance(p, tuple) else (p,)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("output", ["y", "h", "c"])
def test_lstm_exact(layers, batch_first, bidirectional, output):
    torch.manual_seed(0)
    m = torch.nn.LSTM(3, 4, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional)
    m64 = copy.deepcopy(m).double()
    pick = {"y": lambda r: r[0], "h": lambda r: r[1][0], "c": lambda r: r[1][1]}[output]
    x = torch.randn(5, 2, 3)
    (pat,) = _pattern(lambda x: pick(m(x)), x)
    (ref,) = _union(lambda x: pick(m64(x)), (x,))
    assert torch.equal(pat, ref), (int(pat.sum()), int(ref.sum()))


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("local", [False, True])
def test_lstm_tracked_initial_states(steps, local):
    torch.manual_seed(0)
    m = torch.nn.LSTM(3, 4)
    m64 = copy.deepcopy(m).double()

    def f(mod):
        def g(x, h0, c0):
            y, (h, c) = mod(x, (h0, c0))
            return torch.cat([y.reshape(-1), h.reshape(-1), c.reshape(-1)])
        return g
    args = (torch.randn(steps, 2, 3), torch.randn(1, 2, 4), torch.randn(1, 2, 4))
    pats = _pattern(f(m), *args, local=local)
    for p, r in zip(pats, _union(f(m64), args)):
        assert torch.equal(p, r), (int(p.sum()), int(r.sum()))
