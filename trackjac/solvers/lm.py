"""Levenberg-Marquardt on a trackjac plan: the pattern is detected once, the sparse Jacobian
evaluated at each accepted point, each step solved by :func:`~trackjac.solvers.gauss_newton_step`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import torch
from torch import Tensor

from .operator import as_operator
from .step import solve_step


@dataclass
class LMResult:
    """What :func:`levenberg_marquardt` found.

    ``x``: the solution, shaped like ``x0`` (a tensor or a tuple of tensors); ``cost``:
    ``0.5 |r(x)|^2`` there; ``costs``: the cost at the start and after each iteration;
    ``dampings``: the damping after each iteration; ``iterations``; ``converged`` (a
    tolerance was met) and ``message`` (which one, or why it stopped); ``jacobians``: plan
    evaluations; ``cg_iterations``: CG iterations over all steps (0 for direct solves);
    ``plan``: the plan, reusable for another start.
    """

    x: Any
    cost: float
    costs: List[float] = field(default_factory=list)
    dampings: List[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    message: str = ""
    jacobians: int = 0
    cg_iterations: int = 0
    plan: Any = None


def _flat(xs: tuple) -> Tensor:
    return torch.cat([x.reshape(-1) for x in xs])


def _unflat(v: Tensor, like: tuple) -> tuple:
    out, i = [], 0
    for x in like:
        out.append(v[i:i + x.numel()].reshape(x.shape))
        i += x.numel()
    return tuple(out)


def levenberg_marquardt(f: Callable, x0: Any, plan: Any = None, *, max_iter: int = 50, ftol: float = 1e-10,
                        xtol: float = 1e-10, gtol: float = 1e-10, damping: float = 1e-3,
                        method: str = "cg", damping_diag: str = "jtj", max_tries: int = 10,
                        step_options: Optional[dict] = None, plan_options: Optional[dict] = None) -> LMResult:
    """Minimize ``0.5 |f(x)|^2`` from ``x0`` with Levenberg-Marquardt on sparse Jacobians.

    ``f`` maps ``x0`` (a tensor, or a tuple of tensors passed as ``f(*x0)``) to one tensor of
    residuals (any shape: flattened). ``plan``: a :func:`trackjac.jacobian_plan` of ``f``
    (built at ``x0`` with ``plan_options`` when None). Each iteration solves
    ``(J^T J + damping D) dx = -J^T r`` with ``method`` ("cg", "schur" or "dense", see
    :func:`gauss_newton_step`; ``step_options`` passed on, e.g. ``split``, ``block``, ``tol``);
    a step that lowers the cost is taken and the damping divided by 3, otherwise the damping is
    multiplied by 4 and the step solved again, at most ``max_tries`` times.

    Converged when the relative cost decrease is at most ``ftol``, the step at most
    ``xtol (|x| + xtol)``, or ``max|J^T r|`` at most ``gtol``; otherwise it stops after
    ``max_iter`` iterations (``converged=False``).
    """
    tensor_in = isinstance(x0, Tensor)
    xs = (x0,) if tensor_in else tuple(x0)
    if not xs or not all(isinstance(x, Tensor) and x.dtype.is_floating_point for x in xs):
        raise TypeError("levenberg_marquardt: x0 must be a floating-point tensor or a tuple of them")
    if not isinstance(max_iter, int) or max_iter < 0 or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError("levenberg_marquardt: max_iter must be an int >= 0 and max_tries an int >= 1")
    xs = tuple(x.detach() for x in xs)
    if sum(x.numel() for x in xs) == 0:
        raise ValueError("levenberg_marquardt: x0 is empty")
    step_options = dict(step_options or {})

    def residual(*a: Tensor) -> Tensor:
        r = f(*a)
        if not isinstance(r, Tensor):
            raise TypeError(f"levenberg_marquardt: f must return one tensor of residuals; got {type(r).__name__}")
        return r.reshape(-1)

    if plan is None:
        from ..evaluate import jacobian_plan   # the engine, only when this function builds the plan
        plan = jacobian_plan(residual, *xs, **(plan_options or {}))
    elif plan_options:
        raise ValueError("levenberg_marquardt: plan_options are for building a plan; a plan was given")

    def linearize(a: tuple) -> tuple:
        r, J = plan.value_and_jacobian(*a)
        return r.detach().reshape(-1), as_operator(J, "levenberg_marquardt")

    r, J = linearize(xs)
    cost = 0.5 * float(r @ r)
    if not math.isfinite(cost):
        raise ValueError(f"levenberg_marquardt: the residuals at x0 are not finite (cost {cost})")
    res = LMResult(x0, cost, [cost], [], plan=plan, jacobians=1)
    lam, x = float(damping), _flat(xs)
    it = 0
    while it < max_iter:
        g = J.rmv(r)
        if float(g.abs().max()) <= gtol:
            res.converged, res.message = True, f"gradient max|J^T r| <= gtol={gtol:g}"
            break
        it += 1
        for _ in range(max_tries):
            dx, info = solve_step(J, r, lam, method, damping_diag=damping_diag, where="levenberg_marquardt",
                                  **step_options)
            if info["cg"] is not None:
                res.cg_iterations += info["cg"].iterations
            x_new = x + dx
            r_new = residual(*_unflat(x_new, xs)).detach()
            new = 0.5 * float(r_new @ r_new)
            if math.isfinite(new) and new < cost:
                break
            lam *= 4
        else:
            res.message = f"no step lowered the cost in {max_tries} tries (damping {lam:.1e})"
            res.dampings.append(lam)
            break
        decrease = (cost - new) / cost if cost > 0 else 0.0
        small_step = float(dx.norm()) <= xtol * (float(x.norm()) + xtol)
        x, cost, lam = x_new, new, max(lam / 3, 1e-12)
        res.costs.append(cost)
        res.dampings.append(lam)
        if decrease <= ftol or small_step:
            res.converged = True
            res.message = f"relative cost decrease <= ftol={ftol:g}" if decrease <= ftol else \
                f"step <= xtol={xtol:g} (|x| + xtol)"
            break
        r, J = linearize(_unflat(x, xs))
        res.jacobians += 1
    else:
        res.message = f"max_iter={max_iter} iterations"
    out = _unflat(x, xs)
    res.x, res.cost, res.iterations = (out[0] if tensor_in else out), cost, it
    return res
