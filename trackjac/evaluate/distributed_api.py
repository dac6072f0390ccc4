"""``distributed_plan``: :func:`trackjac.jacobian_plan` with its colors split across a process group.

Kept apart from :mod:`.distributed` so that :mod:`.api` can import that module (to delegate
``jacobian_plan(..., process_group=g)``) without an import cycle.
"""
from __future__ import annotations

from typing import Any, Callable

from .api import jacobian_plan
from .distributed import DistributedPlan, distribute

__all__ = ["distributed_plan"]


def distributed_plan(f: Callable, *args: Any, process_group=None, output: str = "full",
                     **kwargs: Any) -> DistributedPlan:
    """:func:`trackjac.jacobian_plan` on every rank of ``process_group`` (default: the
    default group), colors split across the ranks; see :class:`~trackjac.DistributedPlan`.

    Every rank detects and colors the same pattern itself (both are deterministic for a
    given ``seed``); a hash of the pattern and coloring is compared, and a difference raises
    :class:`~trackjac.DistributedPlanError` on every rank, as does a build that fails on any
    rank. ``output``: "full" (the whole Jacobian on every rank) or "rows" (a row block per
    rank). ``kwargs`` are those of :func:`trackjac.jacobian_plan`. Call on every rank.
    """
    return distribute(lambda: jacobian_plan(f, *args, **kwargs), process_group, output)
