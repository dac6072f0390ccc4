"""Local mode at nan, ties and infinities: selection rules follow autograd's conventions, so the
local pattern contains every nonzero of autograd's Jacobian at that point (issue #11, class 2).

Comparisons are ``False`` at nan, while autograd's formulas often pass the derivative through
there (``relu``'s ``threshold_backward`` zeroes only where ``result <= 0``; ``max()`` spreads it
over the nan entries; ``maximum`` gives both sides a share)."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac

from dense_reference import assert_sound

NAN, INF = float("nan"), float("inf")
POOL = [NAN, INF, -INF, 0.0, 1.0, -1.0, 0.5, 2.0, 6.0, -3.0, 3.0, 0.25]


def _other(x):
    return x.flip(0)


OPS = {
    "relu": torch.relu,
    "relu6": F.relu6,
    "clamp": lambda x: x.clamp(-1.0, 2.0),
    "clamp_tensor": lambda x: x.clamp(x.roll(1), x.roll(2)),
    "clamp_min": lambda x: x.clamp_min(_other(x)),
    "clamp_max": lambda x: x.clamp_max(_other(x)),
    "hardtanh": F.hardtanh,
    "hardsigmoid": F.hardsigmoid,
    "hardswish": F.hardswish,
    "threshold": lambda x: F.threshold(x, 0.5, -2.0),
    "hardshrink": F.hardshrink,
    "softshrink": F.softshrink,
    "logit": lambda x: torch.logit(x, 0.1),
    "maximum": lambda x: torch.maximum(x, _other(x)),
    "minimum": lambda x: torch.minimum(x, _other(x)),
    "fmax": lambda x: torch.fmax(x, _other(x)),
    "fmin": lambda x: torch.fmin(x, _other(x)),
    "max_binary": lambda x: torch.max(x, _other(x)),
    "max": lambda x: x.max().reshape(1),
    "min": lambda x: x.min().reshape(1),
    "amax": lambda x: x.reshape(2, -1).amax(1),
    "amin": lambda x: x.reshape(2, -1).amin(1),
    "median": lambda x: x.median().reshape(1),
    "nanmedian": lambda x: x.nanmedian().reshape(1),
    "max_dim": lambda x: x.reshape(2, -1).max(1).values,
    "median_dim": lambda x: x.reshape(2, -1).median(1).values,
    "kthvalue": lambda x: x.reshape(2, -1).kthvalue(2, 1).values,
    "sort": lambda x: x.sort().values,
    "topk": lambda x: x.topk(3).values,
    "cummax": lambda x: x.cummax(0).values,
    "norm_inf": lambda x: torch.linalg.vector_norm(x, math.inf).reshape(1),
    "norm_ninf": lambda x: torch.linalg.vector_norm(x, -math.inf).reshape(1),
    "scatter_reduce_amax": lambda x: torch.zeros(2, dtype=x.dtype).scatter_reduce(
        0, torch.tensor([0, 1, 0, 1, 0, 1]), x, "amax"),
}


def dense_nonzeros(f, args):
    """Nonzeros of autograd's Jacobian, leaving out nan entries: those are ``0 / 0`` artifacts of
    formulas that divide by a count of ties (``amax``, ``scatter_reduce``), which spread even to
    other outputs' rows, not derivatives passed through."""
    (x,) = args
    j = torch.autograd.functional.jacobian(f, x.detach().clone())
    j = j.reshape(-1, x.numel())
    return [(j != 0) & ~torch.isnan(j)]


def _local(f, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trackjac.jacobian_sparsity(f, x, local=True)


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(sorted(OPS)), vals=st.lists(st.sampled_from(POOL), min_size=6, max_size=6))
def test_local_pattern_contains_autograds_jacobian(name, vals):
    f = OPS[name]
    x = torch.tensor(vals, dtype=torch.float64)
    nz = dense_nonzeros(f, [x])[0]
    assert_sound(_local(f, x), nz, f" ({name} at {vals})")


@pytest.mark.parametrize("name", ["relu", "maximum", "minimum", "max", "min", "threshold",
                                  "hardswish", "hardshrink", "softshrink"])
def test_nan_passes_the_derivative(name):
    f = OPS[name]
    x = torch.tensor([NAN, 1.0, -1.0, 2.0, 0.25, -3.0], dtype=torch.float64)
    nz = dense_nonzeros(f, [x])[0]
    assert nz[:, 0].any(), "autograd passes a derivative through the nan entry"
    assert_sound(_local(f, x), nz, f" ({name})")
