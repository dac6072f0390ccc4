"""Sparse Jacobians from a pattern: coloring choice, seeds, compressed products, assembly, plans."""
from .api import check_jacobian, jacobian, jacobian_plan
from .distributed import DistributedPlan, DistributedPlanError, global_rows
from .distributed_api import distributed_plan
from .distributed_hessian import DistributedHessianPlan
from .hessian_plans import HessianPlan
from .hessian_api import check_hessian, hessian, hessian_plan
from .paths import PathChangedError
from .plan import Plan
from .verify import JacobianCheckError

__all__ = ["jacobian", "jacobian_plan", "check_jacobian", "Plan", "JacobianCheckError", "PathChangedError",
           "hessian", "hessian_plan", "check_hessian", "HessianPlan",
           "distributed_plan", "DistributedPlan", "DistributedPlanError", "global_rows",
           "DistributedHessianPlan"]
