"""``trackjac.interop``: patterns and Jacobians to and from ``scipy.sparse``, and a
``scipy.optimize.least_squares`` adapter.

scipy is an optional dependency: it is imported when one of these functions runs.

* :func:`to_scipy`: a 2-D tensor (sparse COO/CSR/CSC/BSR or dense), or nested blocks as
  :func:`trackjac.jacobian_sparsity` / :func:`trackjac.jacobian` return them, to one CSR
  or CSC matrix (blocks: rows = outputs, columns = inputs, via ``scipy.sparse.bmat``).
* :func:`from_scipy`: a scipy sparse matrix (or array) to a torch sparse (or dense) tensor.
* :func:`least_squares_problem`: ``fun``, ``jac`` and ``jac_sparsity`` for
  ``scipy.optimize.least_squares`` from one plan.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor

from ._blocks import flat_side, plan_nesting
from ._scipy import coo_matrix_of as _block, scipy_sparse as _scipy_sparse
from ._sparse import quiet_beta as _quiet_beta
from .evaluate import jacobian_plan
from .pattern import SparsityPattern

__all__ = ["to_scipy", "from_scipy", "least_squares_problem", "LeastSquaresProblem"]

_FORMATS = ("csr", "csc", "coo")
_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.strided)


def to_scipy(pattern_or_jacobian: Any, format: str = "csr", *, nesting: Optional[str] = None):
    """A scipy sparse matrix (``format`` "csr", "csc" or "coo") of a pattern or Jacobian.

    ``pattern_or_jacobian``: a 2-D torch tensor, sparse (COO, CSR, CSC, BSR: every stored
    entry is kept, a stored numerical 0 too, except ``False`` in a boolean pattern) or dense
    (its nonzeros); a :class:`~trackjac.SparsityPattern` (its stacked matrix); a plan (its
    ``pattern``); or blocks nested like
    :func:`trackjac.jacobian_sparsity` returns them (a tuple over outputs of tuples over
    inputs), assembled into one matrix with ``scipy.sparse.bmat``. A flat tuple runs over
    inputs or outputs as ``nesting`` says (default: from the block shapes, see
    :func:`trackjac.spy`). Boolean patterns stay boolean; float16/bfloat16 become float64.
    """
    sp = _scipy_sparse()
    if format not in _FORMATS:
        raise ValueError(f"to_scipy: format must be one of {_FORMATS}; got {format!r}")
    x = pattern_or_jacobian
    if isinstance(x, SparsityPattern):   # it knows its block grid: no nesting to guess
        return _block(x.to_coo(), sp).asformat(format)
    if hasattr(x, "pattern") and not isinstance(x, (Tensor, tuple, list)):  # a plan
        nesting = nesting or plan_nesting(x)
        x = x.pattern
    if isinstance(x, Tensor):
        return _block(x, sp).asformat(format)
    if not isinstance(x, (tuple, list)) or not x:
        raise TypeError("to_scipy: expected a 2-D tensor, a plan or nested tuples of 2-D tensors; got "
                        f"{type(x).__name__}")
    if all(isinstance(b, Tensor) for b in x):
        blocks = [_block(b, sp) for b in x]
        side = flat_side([b.shape for b in blocks], nesting, "to_scipy")
        grid = [[b] for b in blocks] if side == "outputs" else [blocks]
    elif all(isinstance(row, (tuple, list)) and row for row in x):
        grid = [[_block(b, sp) for b in row] for row in x]
    else:
        raise TypeError("to_scipy: nested blocks must be a tuple of tensors or a tuple of tuples of tensors")
    if len({len(row) for row in grid}) != 1:
        raise ValueError("to_scipy: the nested blocks do not form a block matrix: rows of different lengths")
    try:
        return sp.bmat(grid, format=format)
    except ValueError as e:
        raise ValueError(f"to_scipy: the nested blocks do not form a block matrix ({e})") from None


def from_scipy(matrix: Any, layout=torch.sparse_csr, dtype: Optional[torch.dtype] = None) -> Tensor:
    """A torch tensor of a scipy sparse matrix or array, keeping its stored entries.

    ``layout``: ``torch.sparse_csr`` (default), ``torch.sparse_csc``, ``torch.sparse_coo``
    (coalesced) or ``torch.strided`` (dense). Duplicate entries are summed (as scipy does);
    ``dtype`` defaults to the matrix's.
    """
    sp = _scipy_sparse()
    if not sp.issparse(matrix):
        raise TypeError(f"from_scipy: expected a scipy.sparse matrix or array; got {type(matrix).__name__}")
    if layout not in _LAYOUTS:
        raise ValueError(f"from_scipy: layout must be one of {_LAYOUTS}; got {layout}")
    if matrix.ndim != 2:
        raise ValueError(f"from_scipy: expected a 2-D matrix; got {matrix.ndim}-D")
    shape = tuple(int(s) for s in matrix.shape)

    def vals(data):
        t = torch.from_numpy(data.copy())
        return t if dtype is None else t.to(dtype)

    with _quiet_beta():
        if layout in (torch.sparse_csr, torch.sparse_csc):
            m = matrix.tocsr() if layout == torch.sparse_csr else matrix.tocsc()
            m = m.copy()
            m.sum_duplicates()   # also sorts the indices, as torch's compressed layouts need
            ptr = torch.from_numpy(m.indptr.astype("int64"))
            idx = torch.from_numpy(m.indices.astype("int64"))
            make = torch.sparse_csr_tensor if layout == torch.sparse_csr else torch.sparse_csc_tensor
            return make(ptr, idx, vals(m.data), shape, check_invariants=True)
        m = matrix.tocoo()
        ind = torch.from_numpy(_numpy().stack([m.row, m.col]).astype("int64")) if m.nnz else \
            torch.zeros(2, 0, dtype=torch.int64)
        t = torch.sparse_coo_tensor(ind, vals(m.data), shape, check_invariants=True).coalesce()
        return t.to_dense() if layout == torch.strided else t


class LeastSquaresProblem:
    """``fun``, ``jac`` and ``jac_sparsity`` for ``scipy.optimize.least_squares``; unpacks as those three.

    ``fun(x)`` and ``jac(x)`` take numpy vectors; both come from one plan evaluation at the last
    ``x`` (least_squares calls ``jac`` at the point it just evaluated ``fun`` at). Attributes:
    ``x0`` (the flat numpy start), ``plan``, ``evaluations`` (plan evaluations so far).
    """

    def __init__(self, f: Callable, x0: Any, dtype: torch.dtype = torch.float64, **plan_kwargs: Any):
        np = _numpy()
        x0t = torch.as_tensor(x0).detach().to(dtype=dtype, device="cpu")
        if x0t.numel() == 0:
            raise ValueError("least_squares_problem: x0 is empty")
        self.shape = x0t.shape
        self._f = f
        self.x0 = x0t.reshape(-1).numpy().astype(np.float64)
        if "layout" in plan_kwargs:
            raise ValueError("least_squares_problem: the layout is CSR (what scipy uses); do not pass layout=")
        with _quiet_beta():
            self.plan = jacobian_plan(self._residual, x0t.reshape(-1), layout=torch.sparse_csr, **plan_kwargs)
        self.jac_sparsity = to_scipy(self.plan.pattern, "csr")
        self.evaluations = 0
        self._x: Optional[Any] = None
        self._value: Any = None
        self._jac: Any = None
        self._dtype = dtype

    def _residual(self, x: Tensor) -> Tensor:
        r = self._f(x.reshape(self.shape))
        if not isinstance(r, Tensor):
            raise TypeError(f"least_squares_problem: f must return one tensor of residuals; got {type(r).__name__}")
        return r.reshape(-1)

    def _at(self, x: Any) -> None:
        np = _numpy()
        x = np.asarray(x, dtype=np.float64)
        if x.shape != self.x0.shape:
            raise ValueError(f"least_squares_problem: x has shape {x.shape}, expected {self.x0.shape}")
        if self._x is not None and np.array_equal(x, self._x):
            return
        with _quiet_beta():
            value, jac = self.plan.value_and_jacobian(torch.from_numpy(x.copy()).to(self._dtype))
        self.evaluations += 1
        self._x = x.copy()
        self._value = value.detach().to(torch.float64).numpy()
        self._jac = to_scipy(jac, "csr")

    def fun(self, x: Any, *args: Any, **kwargs: Any):
        """Residuals at ``x`` (a flat float64 numpy array)."""
        self._at(x)
        return self._value

    def jac(self, x: Any, *args: Any, **kwargs: Any):
        """The sparse Jacobian at ``x`` (scipy CSR)."""
        self._at(x)
        return self._jac

    def __iter__(self) -> Iterator[Any]:
        return iter((self.fun, self.jac, self.jac_sparsity))


def _numpy():
    _scipy_sparse()   # the adapter needs scipy; say so before anything numpy-specific fails
    import numpy  # torch depends on numpy only optionally: imported where scipy is in use
    return numpy


def least_squares_problem(f: Callable, x0: Any, **plan_kwargs: Any) -> LeastSquaresProblem:
    """An adapter for ``scipy.optimize.least_squares`` on a torch residual ``f``.

    ``f`` takes a tensor shaped like ``x0`` (a tensor or numpy array; float64 unless
    ``dtype=`` says otherwise) and returns the residuals (any shape: flattened). The plan
    (:func:`trackjac.jacobian_plan`, ``plan_kwargs`` passed on) is built once at ``x0``::

        fun, jac, sparsity = trackjac.interop.least_squares_problem(f, x0)
        res = scipy.optimize.least_squares(fun, x0.ravel(), jac=jac)   # or jac_sparsity=sparsity

    ``fun`` and ``jac`` share one plan evaluation per point. ``jac_sparsity`` is the pattern
    (scipy CSR) for least_squares' own finite differences (``jac="2-point"``). The methods
    "trf" and "dogbox" accept a sparse Jacobian; "lm" does not.
    """
    return LeastSquaresProblem(f, x0, **plan_kwargs)
