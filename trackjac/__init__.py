"""trackjac: exact Jacobian sparsity and sparse Jacobians for PyTorch.

* :class:`Tracked` wraps an input; ordinary PyTorch code run on it records, for every
  element, which input elements it structurally depends on (``y.depends_on(x)``).
* :func:`jacobian_sparsity` returns that pattern as a sparse matrix.
* :func:`jacobian` computes the sparse Jacobian's values with one vjp/jvp per color;
  :func:`jacobian_plan` prepares that once for many points; :func:`check_jacobian`
  compares with plain autograd.
* :func:`hessian_sparsity`, :func:`hessian` and :func:`hessian_plan` do the same for the
  Hessian of a scalar function (symmetric pattern, batched Hessian-vector products).
* :class:`SparsityPattern` (``jacobian_sparsity(..., result="pattern")``): the pattern with its
  shapes, names and nesting, convertible to COO/CSR/dense/scipy.
* :func:`spy` draws a pattern (text, or a PNG with matplotlib).
"""
from .errors import (ControlFlowWarning, DenseColoringWarning, StrictModeError, TrackingError,
                     TrackJacWarning, UnsupportedOpWarning)
from .evaluate import (HessianPlan, JacobianCheckError, PathChangedError, Plan, check_hessian, check_jacobian,
                       hessian, hessian_plan, jacobian, jacobian_plan)
from .evaluate import DistributedPlan, DistributedPlanError, distributed, distributed_plan
from .evaluate import DistributedHessianPlan
from . import solvers as solvers  # trackjac.solvers without a second import
from .spy_plot import SpyPlot, spy
from .pattern import SparsityPattern
from .tracer import (JacobianClassification, Tracked, depends_on, hessian_sparsity, jacobian_sparsity, tracking,
                     untrack)

__all__ = [
    "Tracked", "depends_on", "untrack", "tracking", "jacobian_sparsity", "hessian_sparsity", "JacobianClassification",
    "TrackJacWarning", "UnsupportedOpWarning", "ControlFlowWarning", "DenseColoringWarning", "StrictModeError",
    "TrackingError", "spy", "SpyPlot",
    "jacobian", "jacobian_plan", "check_jacobian", "Plan", "JacobianCheckError", "PathChangedError",
    "hessian", "hessian_plan", "check_hessian", "HessianPlan",
    "distributed_plan", "DistributedPlan", "DistributedPlanError", "distributed",
    "DistributedHessianPlan",
    "SparsityPattern",
]
__version__ = "0.1.0"
