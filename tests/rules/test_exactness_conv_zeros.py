"""Convolutions drop constant exact zeros of the kernel and of the input when products do
(``constant_zeros="drop"``, local mode), and work on operands without provenance."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from dense_reference import random_points, union_nonzeros
from trackjac import jacobian_sparsity, tracking
from trackjac.errors import UnsupportedOpWarning


def _union(f, shape, points=3):
    return union_nonzeros(f, random_points([shape], 30), points)[0]

def _pattern(f, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        return jacobian_sparsity(f, x, layout=torch.strided, **kw)


def test_difference_kernel_is_not_tridiagonal():
    k = torch.tensor([[[1.0, 0.0, -1.0]]])

    def f(x):
        return F.conv1d(x[None, None], k.to(x.dtype), padding=1).reshape(-1)
    x = torch.randn(6)
    keep = _pattern(f, x)
    assert int(keep.sum()) == 16                     # participation: the 0 tap still counts
    for kw in ({"local": True}, {"constant_zeros": "drop"}):
        pat = _pattern(f, x, **kw)
        expect = torch.diag(torch.ones(5, dtype=torch.bool), 1) | torch.diag(torch.ones(5, dtype=torch.bool), -1)
        assert torch.equal(pat, expect)


CASES = {
    "1d": dict(d=1, cin=2, cout=3, k=3, stride=1, padding=1, dilation=1, groups=1, transposed=False),
    "2d_stride": dict(d=2, cin=2, cout=2, k=3, stride=2, padding=1, dilation=1, groups=1, transposed=False),
    "2d_dil_groups": dict(d=2, cin=4, cout=4, k=2, stride=1, padding=1, dilation=2, groups=2, transposed=False),
    "1d_transposed": dict(d=1, cin=2, cout=3, k=3, stride=2, padding=1, dilation=1, groups=1, transposed=True),
    "2d_transposed_groups": dict(d=2, cin=4, cout=2, k=2, stride=2, padding=0, dilation=1, groups=2,
                                 transposed=True),
}


def _conv(c, x, w):
    fn = {(1, False): F.conv1d, (2, False): F.conv2d, (1, True): F.conv_transpose1d,
          (2, True): F.conv_transpose2d}[(c["d"], c["transposed"])]
    return fn(x, w, stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])


def _shapes(c):
    sp = (5,) * c["d"]
    xs = (2, c["cin"]) + sp
    ws = ((c["cin"], c["cout"] // c["groups"]) if c["transposed"] else (c["cout"], c["cin"] // c["groups"]))
    return xs, ws + (c["k"],) * c["d"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_constant_kernel_with_zeros(name):
    c = CASES[name]
    xs, ws = _shapes(c)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(ws, generator=g) * (torch.rand(ws, generator=g) > 0.5)

    def f(x):
        return _conv(c, x, w.to(x.dtype)).reshape(-1)
    pat = _pattern(f, torch.randn(xs), constant_zeros="drop")
    assert torch.equal(pat, _union(f, xs))


@pytest.mark.parametrize("name", sorted(CASES))
def test_constant_input_with_zeros(name):
    c = CASES[name]
    xs, ws = _shapes(c)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(xs, generator=g) * (torch.rand(xs, generator=g) > 0.6)

    def f(w):
        return _conv(c, x.to(w.dtype), w).reshape(-1)
    pat = _pattern(f, torch.randn(ws), local=True)
    assert torch.equal(pat, _union(f, ws))


def test_both_tracked_zero_kernel_entries_of_a_product():
    """A tracked kernel masked by a constant 0/1 pattern (x * mask): the masked taps are dropped."""
    mask = torch.tensor([[[1.0, 0.0, 1.0]]])

    def f(x, w):
        return F.conv1d(x[None, None], w * mask, padding=1).reshape(-1)
    x, w = torch.randn(6), torch.randn(1, 1, 3)
    px, pw = jacobian_sparsity(f, x, w, layout=torch.strided, constant_zeros="drop")
    ref = jacobian(f, (x.double(), w.double()))
    assert torch.equal(px, ref[0].reshape(6, 6) != 0)
    assert torch.equal(pw, ref[1].reshape(6, 3) != 0)


def test_conv_of_constants_inside_tracking():
    """A constant kernel made inside f applied to a constant image (image-quality metrics)."""
    def f(x):
        win = torch.ones(1, 1, 3, 3) / 9
        img = torch.arange(25.0).reshape(1, 1, 5, 5)
        blurred = F.conv2d(img, win, padding=1)
        return x * blurred.mean()
    x = torch.randn(4)
    pat = _pattern(f, x)
    assert torch.equal(pat, torch.eye(4, dtype=torch.bool))
    with tracking():
        out = F.conv2d(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
    assert out.shape == (1, 1, 2, 2)
