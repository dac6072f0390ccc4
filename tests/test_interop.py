"""``trackjac.interop``: scipy.sparse conversion both ways and the least_squares adapter."""
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac
from trackjac.interop import from_scipy, least_squares_problem, to_scipy

pytest.importorskip("scipy")
import numpy as np  # noqa: E402  (after the skip: numpy comes with scipy here)
import scipy.optimize  # noqa: E402
import scipy.sparse  # noqa: E402

from dense_reference import dense_jacobian  # noqa: E402


def _dense(m):
    return torch.from_numpy(np.asarray(m.toarray()))


# -- to_scipy ---------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.integers(0, 2 ** 31 - 1),
       st.sampled_from(["coo", "csr", "csc", "bsr", "dense"]), st.sampled_from(["csr", "csc", "coo"]))
def test_to_scipy_keeps_the_entries_of_every_layout(m, n, seed, layout, fmt):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(m, n, generator=g, dtype=torch.double) * (torch.rand(m, n, generator=g) < 0.4)
    t = {"coo": d.to_sparse(), "csr": d.to_sparse_csr(), "csc": d.to_sparse_csc(), "dense": d,
         "bsr": d.to_sparse_bsr((1, 1))}[layout]
    s = to_scipy(t, fmt)
    assert s.format == fmt and s.shape == (m, n) and s.dtype == np.float64
    assert torch.equal(_dense(s), d)
    assert s.nnz == int((d != 0).sum())


def test_to_scipy_keeps_stored_zeros_and_drops_stored_false():
    ind = torch.tensor([[0, 1], [1, 0]])
    assert to_scipy(torch.sparse_coo_tensor(ind, torch.tensor([0.0, 2.0]), (2, 2))).nnz == 2  # a stored 0 is structural
    p = to_scipy(torch.sparse_coo_tensor(ind, torch.tensor([False, True]), (2, 2)))
    assert p.dtype == np.bool_ and p.nnz == 1 and p[1, 0] and not p[0, 1]
    J = trackjac.jacobian(lambda x: x * 0.0 + x.roll(1), torch.rand(4, dtype=torch.double))
    assert to_scipy(J).nnz == J._nnz() == 8   # x * 0 participates: its zeros stay in the matrix
    assert to_scipy(torch.rand(2, 3, dtype=torch.float16) + 1).dtype == np.float64


def test_to_scipy_nested_blocks_of_any_sizes():
    def f(a, b):
        return a * b.sum(), torch.cat([a, b[:1]]).cumsum(0)

    a, b = torch.rand(2, dtype=torch.double), torch.rand(3, dtype=torch.double)
    p = trackjac.jacobian_sparsity(f, a, b)
    ref = dense_jacobian(f, a, b)
    want = torch.cat([torch.cat(row, 1) for row in ref], 0) != 0
    s = to_scipy(p, "csc")
    assert s.format == "csc" and s.shape == (5, 5)
    assert torch.equal(_dense(s), want)   # the pattern is exact here: every entry is nonzero somewhere
    assert torch.equal(_dense(to_scipy(trackjac.jacobian(f, a, b))), torch.cat([torch.cat(r, 1) for r in ref], 0))


def test_to_scipy_flat_tuples_over_outputs_or_inputs():
    x = torch.rand(5, dtype=torch.double)
    outs = trackjac.jacobian_sparsity(lambda x: (x * 2, x[:3].sin()), x)
    assert to_scipy(outs).shape == (8, 5)   # one input, outputs of different sizes: a column of blocks
    same = trackjac.jacobian_sparsity(lambda x: (x * 2, x.sin()), x)
    assert to_scipy(same, nesting="outputs").shape == (10, 5)
    assert to_scipy(same).shape == (5, 10)   # all blocks one shape: inputs unless told
    plan = trackjac.jacobian_plan(lambda u: u.cumsum(0), x)
    assert to_scipy(plan).nnz == 15
    two = trackjac.jacobian_plan(lambda u: (u * 2, u.sin()), x)
    assert to_scipy(two).shape == (10, 5)   # a plan knows it has one input


def test_to_scipy_errors():
    with pytest.raises(ValueError, match="format must be"):
        to_scipy(torch.eye(2), "bsr")
    with pytest.raises(ValueError, match="2-D"):
        to_scipy(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="do not form a block matrix"):
        to_scipy(((torch.ones(2, 2), torch.ones(2, 3)), (torch.ones(3, 3), torch.ones(3, 3))))
    with pytest.raises(TypeError, match="expected a 2-D tensor"):
        to_scipy("nope")
    with pytest.raises(ValueError, match="nesting must be"):
        to_scipy((torch.eye(2), torch.eye(2)), nesting="rows")


# -- from_scipy -------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2 ** 31 - 1),
       st.sampled_from([torch.sparse_csr, torch.sparse_csc, torch.sparse_coo, torch.strided]),
       st.sampled_from(["csr", "csc", "coo", "lil"]))
def test_from_scipy_round_trip(m, n, seed, layout, fmt):
    s = scipy.sparse.random(m, n, density=0.4, format=fmt, random_state=seed, dtype=np.float64)
    t = from_scipy(s, layout=layout)
    assert t.layout == layout and t.shape == (m, n) and t.dtype == torch.float64
    dense = t if layout == torch.strided else t.to_dense()
    assert torch.equal(dense, _dense(s))
    if layout != torch.strided:
        back = to_scipy(t, "csr")
        assert back.nnz == s.nnz and torch.equal(_dense(back), _dense(s))


def test_from_scipy_sums_duplicates_keeps_explicit_zeros_and_casts():
    s = scipy.sparse.coo_matrix((np.array([1.0, 2.0, 0.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    t = from_scipy(s)
    assert t.layout == torch.sparse_csr and t.values().tolist() == [3.0, 0.0]
    assert from_scipy(s, layout=torch.sparse_coo, dtype=torch.float32).dtype == torch.float32
    arr = scipy.sparse.csr_array(np.eye(3))
    assert torch.equal(from_scipy(arr, layout=torch.strided), torch.eye(3, dtype=torch.double))
    empty = from_scipy(scipy.sparse.csr_matrix((3, 4)), layout=torch.sparse_coo)
    assert empty.shape == (3, 4) and empty._nnz() == 0


def test_from_scipy_errors():
    with pytest.raises(TypeError, match="scipy.sparse matrix"):
        from_scipy(np.eye(2))
    with pytest.raises(ValueError, match="layout must be"):
        from_scipy(scipy.sparse.eye(2), layout=torch.sparse_bsr)


def test_missing_scipy_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)   # what "import scipy.sparse" sees without scipy
    with pytest.raises(ImportError, match="trackjac.interop needs scipy: pip install scipy"):
        to_scipy(torch.eye(2))


# -- least_squares ------------------------------------------------------------------------------------------
def rosenbrock(x):
    """Chained Rosenbrock residuals (2 (n-1) of them); the minimum is x = 1, cost 0."""
    x = x.reshape(-1)
    return torch.cat([10 * (x[1:] - x[:-1] ** 2), 1 - x[:-1]])


def start(shape):
    x0 = torch.full(shape, -1.2, dtype=torch.double)
    x0.view(-1)[1::2] = 1.0
    return x0


def test_least_squares_matches_dense_finite_differences():
    x0 = start((4, 6))   # f takes x0's shape; scipy sees the flat vector
    fun, jac, sparsity = least_squares_problem(rosenbrock, x0)
    sparse = scipy.optimize.least_squares(fun, x0.reshape(-1).numpy(), jac=jac)
    dense = scipy.optimize.least_squares(lambda x: rosenbrock(torch.from_numpy(x)).numpy(), x0.reshape(-1).numpy())
    assert sparse.success and dense.success
    np.testing.assert_allclose(sparse.x, dense.x, atol=1e-6)
    np.testing.assert_allclose(sparse.x, np.ones(24), atol=1e-6)
    assert sparse.cost < 1e-12 and scipy.sparse.issparse(sparse.jac)


def test_least_squares_jacobian_sparsity_and_values():
    x0 = start((12,))
    problem = least_squares_problem(rosenbrock, x0)
    ref = dense_jacobian(rosenbrock, x0)
    S = problem.jac_sparsity
    assert S.shape == (22, 12) and torch.equal(_dense(S), ref != 0)
    J = problem.jac(problem.x0)
    assert J.format == "csr" and torch.equal(_dense(J), ref)
    np.testing.assert_array_equal(problem.fun(problem.x0), rosenbrock(x0).numpy())
    # least_squares' own finite differences, grouped by the pattern
    fd = scipy.optimize.least_squares(lambda x: rosenbrock(torch.from_numpy(x)).numpy(), problem.x0,
                                      jac_sparsity=S)
    np.testing.assert_allclose(fd.x, np.ones(12), atol=1e-6)


def test_least_squares_fun_and_jac_share_one_evaluation():
    problem = least_squares_problem(rosenbrock, start((6,)))
    x = problem.x0 + 0.1
    problem.fun(x)
    problem.jac(x)
    problem.jac(x.copy())
    assert problem.evaluations == 1
    problem.fun(x + 1)
    assert problem.evaluations == 2
    res = scipy.optimize.least_squares(problem.fun, problem.x0, jac=problem.jac)
    assert problem.evaluations <= 2 + res.nfev   # jac never costs a second evaluation


def test_least_squares_errors():
    with pytest.raises(ValueError, match="layout"):
        least_squares_problem(rosenbrock, start((4,)), layout=torch.sparse_coo)
    problem = least_squares_problem(rosenbrock, start((4,)))
    with pytest.raises(ValueError, match=r"x has shape \(3,\), expected \(4,\)"):
        problem.fun(np.zeros(3))
    with pytest.raises(TypeError, match="one tensor of residuals"):
        least_squares_problem(lambda x: (x, x), start((4,)))
