"""``trackjac.solvers``: nonlinear least squares on sparse Jacobians, in torch.

* :func:`gauss_newton_step`: one damped Gauss-Newton step, by CG on the normal equations,
  a Schur complement for bundle-adjustment structure, or a dense Cholesky for small problems.
* :func:`levenberg_marquardt`: the LM loop on a :func:`trackjac.jacobian_plan`.
* :func:`conjugate_gradient`: the preconditioned CG they use.
"""
from .cg import CGInfo, conjugate_gradient
from .lm import LMResult, levenberg_marquardt
from .step import SolverWarning, gauss_newton_step

__all__ = ["gauss_newton_step", "levenberg_marquardt", "LMResult", "conjugate_gradient", "CGInfo",
           "SolverWarning"]
