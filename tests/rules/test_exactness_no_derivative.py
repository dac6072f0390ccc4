"""Ops without a derivative (PyTorch's derivatives.yaml): no provenance, no warning, still derived."""
import warnings

import pytest
import torch

from trackjac import jacobian_sparsity
from trackjac.errors import UnsupportedOpWarning
from trackjac.rules.nondiff import packets_without_derivative

OPS = {
    "unique": lambda x: torch.unique(x, return_inverse=True, return_counts=True)[0],
    "unique_sorted_false": lambda x: torch.unique(x, sorted=False),
    "unique_dim": lambda x: torch.unique(x.reshape(2, 3), dim=1).reshape(-1),
    "unique_consecutive": lambda x: torch.unique_consecutive(x),
    "histc": lambda x: torch.histc(x, bins=4),
}


def _quiet(f, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedOpWarning)
        return jacobian_sparsity(f, x, layout=torch.strided, **kw)


def test_metadata_lists_them():
    names = set(packets_without_derivative())
    assert {"_unique2", "unique_consecutive", "unique_dim", "histc"} <= names
    assert "mul" not in names and "sin" not in names


@pytest.mark.parametrize("name", sorted(OPS))
def test_no_provenance_no_warning(name):
    x = torch.tensor([0.5, -1.0, 0.5, 2.0, -1.0, 3.0])
    pat = _quiet(OPS[name], x)
    assert not pat.any()


@pytest.mark.parametrize("name", ["unique", "histc"])
def test_their_values_stay_derived(name):
    """A choice made with a no-derivative output is a choice made by tracked values: global mode
    keeps both candidates of the ``where``."""
    def f(x):
        cond = OPS[name](x)[:3] > 0
        return torch.where(cond, x[:3], x[3:])
    x = torch.tensor([0.5, -1.0, 0.25, 2.0, -1.5, 3.0])
    pat = _quiet(f, x)
    expect = torch.zeros(3, 6, dtype=torch.bool)
    for i in range(3):
        expect[i, i] = expect[i, 3 + i] = True
    assert torch.equal(pat, expect)
