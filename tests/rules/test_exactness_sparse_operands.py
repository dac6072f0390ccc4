"""Products with a constant sparse operand (COO, CSR) follow its stored entries."""
import warnings

import pytest
import torch
from torch.autograd.functional import jacobian

from trackjac import jacobian_sparsity
from trackjac.errors import TrackingError

N = 6


def _laplacian():
    return torch.diag(torch.full((N,), -2.0)) + torch.diag(torch.ones(N - 1), 1) + torch.diag(torch.ones(N - 1), -1)


def _tridiagonal():
    return _laplacian() != 0


def _pattern(f, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no conservative fallback
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return jacobian_sparsity(f, *args, layout=torch.strided, **kw)


def _autograd(f, z):
    j = jacobian(f, z.double())
    return j.reshape(-1, z.numel()) != 0


LAYOUTS = {"coo": lambda m: m.to_sparse(), "csr": lambda m: m.to_sparse_csr()}

PRODUCTS = {
    "matmul_vec": lambda S, z: S @ z,
    "matmul_mat": lambda S, z: S @ z[:, None],
    "mv": lambda S, z: torch.mv(S, z),
    "sparse_mm": lambda S, z: torch.sparse.mm(S, z[:, None]),
    "addmm": lambda S, z: torch.addmm(z[:, None], S, z[:, None]),
    "residual": lambda S, z: S @ z - z ** 3,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_sparse_operand_gives_its_stored_entries(layout, name):
    S = LAYOUTS[layout](_laplacian())
    if layout == "csr" and name == "sparse_mm":
        pytest.skip("torch.sparse.mm of CSR goes through the same mm rule")
    prod = PRODUCTS[name]
    z = torch.randn(N)
    pat = _pattern(lambda z: prod(S, z), z)
    dense = _laplacian().double()
    ref = _autograd(lambda z: prod(dense, z), z)
    assert (ref & ~pat).sum() == 0
    assert torch.equal(pat, _tridiagonal()), int(pat.sum())


def test_dense_times_sparse():
    S = _laplacian().to_sparse()
    z = torch.randn(N)
    pat = _pattern(lambda z: (z[None] @ S).squeeze(0), z)
    assert torch.equal(pat, _tridiagonal())


def test_stored_zeros_are_dependencies_unless_dropped():
    """A stored entry participates (its value could change); with constant_zeros='drop' an
    exactly-zero stored constant does not."""
    m = torch.eye(N)
    idx = torch.stack([torch.arange(N), torch.arange(N)])
    idx = torch.cat([idx, torch.tensor([[0], [N - 1]])], 1)
    vals = torch.cat([torch.ones(N), torch.zeros(1)])
    S = torch.sparse_coo_tensor(idx, vals, (N, N)).coalesce()
    z = torch.randn(N)
    keep = _pattern(lambda z: S @ z, z)
    expect = m.bool().clone()
    expect[0, N - 1] = True
    assert torch.equal(keep, expect)
    drop = _pattern(lambda z: S @ z, z, constant_zeros="drop")
    assert torch.equal(drop, m.bool())


def test_sparse_with_tracked_values_stays_an_error():
    def f(z):
        S = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), z[:1], (N, N))
        return S @ z
    with pytest.raises(TrackingError):
        jacobian_sparsity(f, torch.randn(N))


def test_constant_sparse_built_inside_f():
    def f(z):
        i = torch.arange(N)
        idx = torch.stack([torch.cat([i, i[:-1], i[1:]]), torch.cat([i, i[1:], i[:-1]])])
        vals = torch.cat([torch.full((N,), -2.0), torch.ones(2 * N - 2)])
        S = torch.sparse_coo_tensor(idx, vals, (N, N)).coalesce()
        return S @ z + torch.eye(N).to_sparse_csr() @ z
    pat = _pattern(f, torch.randn(N))
    assert torch.equal(pat, _tridiagonal())
