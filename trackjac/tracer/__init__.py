"""The tracking runtime: :class:`Tracked`, its dispatch, the resolver that picks each op's rule,
the ``tracking()`` context, the fallbacks that run Python on tracked values (decompositions,
``autograd.Function``, custom ops), and :func:`jacobian_sparsity` on top."""
from . import autograd_function  # noqa: F401  (installs the Function.apply hook)
from .context import tracking
from .hessian import hessian_sparsity
from .sparsity import JacobianClassification, jacobian_sparsity
from .tensor import Tracked, depends_on, untrack

__all__ = ["Tracked", "depends_on", "untrack", "tracking", "jacobian_sparsity", "hessian_sparsity",
           "JacobianClassification"]
