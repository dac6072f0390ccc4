"""``trackjac.testing``: checks for a user's own test suite.

* :func:`assert_pattern_sound`: the detected (or a given) pattern contains every nonzero of
  the dense autograd Jacobian at the arguments and at random perturbations of them.
* :func:`assert_jacobian_close`: :func:`trackjac.jacobian` equals the dense Jacobian.
* :func:`tensors`, :func:`perturbations`: hypothesis strategies (in
  :mod:`trackjac.testing.strategies`; hypothesis is needed only when they are used).

Both assertions build the dense Jacobian (``outputs x inputs`` values): they are for test
sizes, not production ones. See docs/testing.md.
"""
from __future__ import annotations

from typing import Any

from .assertions import assert_jacobian_close, assert_pattern_sound

__all__ = ["assert_pattern_sound", "assert_jacobian_close", "tensors", "perturbations"]


def __getattr__(name: str) -> Any:
    if name in ("tensors", "perturbations"):
        from . import strategies  # hypothesis is a test dependency: imported on first use only
        return getattr(strategies, name)
    raise AttributeError(f"module 'trackjac.testing' has no attribute {name!r}")
