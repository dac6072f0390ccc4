"""Hypothesis strategies for tensors of given shapes and for perturbations of given tensors."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

try:
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("trackjac.testing's strategies need hypothesis: pip install hypothesis "
                      "(or pip install 'trackjac[test]')") from e

__all__ = ["tensors", "perturbations"]

# float width hypothesis draws in, so that every drawn value is exactly representable
_WIDTH = {torch.float16: 16, torch.float32: 32, torch.float64: 64}
_SUPPORTED = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

ShapeLike = Union[Sequence[int], torch.Size, "st.SearchStrategy"]


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _SUPPORTED:
        raise ValueError(f"tensors: dtype must be a real floating dtype {_SUPPORTED}; got {dtype}")


def _floats(dtype: torch.dtype, min_value: Optional[float], max_value: Optional[float]) -> "st.SearchStrategy":
    width = _WIDTH.get(dtype, 32)   # bfloat16: drawn as float32, rounded below
    return st.floats(min_value=min_value, max_value=max_value, allow_nan=False, allow_infinity=False,
                     allow_subnormal=dtype == torch.float64, width=width)


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def tensors(shape: ShapeLike, dtype: torch.dtype = torch.float64, *, elements: Optional["st.SearchStrategy"] = None,
            min_value: Optional[float] = None, max_value: Optional[float] = None) -> "st.SearchStrategy":
    """Tensors of ``shape`` (a tuple, or a strategy of tuples) and ``dtype`` with finite elements.

    ``elements`` (a strategy of Python floats) replaces the default: any finite float of the
    dtype within ``[min_value, max_value]`` (bounds optional). Values that round to a
    non-finite number of ``dtype`` (bfloat16 near its range) are filtered out.
    """
    _check_dtype(dtype)
    if elements is not None and (min_value is not None or max_value is not None):
        raise ValueError("tensors: give elements= or min_value/max_value, not both")
    if min_value is not None and max_value is not None and min_value > max_value:
        raise ValueError(f"tensors: min_value {min_value} > max_value {max_value}")
    elems = elements if elements is not None else _floats(dtype, min_value, max_value)
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(int(s) for s in shape))

    def of_shape(shp):
        shp = tuple(int(s) for s in shp)
        n = 1
        for s in shp:
            n *= s
        return st.lists(elems, min_size=n, max_size=n).map(
            lambda v: torch.tensor(v, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
            .to(dtype).reshape(shp))

    return shapes.flatmap(of_shape).filter(_finite)


def perturbations(x: Union[torch.Tensor, Sequence[torch.Tensor]], scale: float = 1e-3,
                  relative: bool = False) -> "st.SearchStrategy":
    """Points near ``x``: ``x + d`` with every ``|d| <= scale`` (``relative=True``:
    ``|d| <= scale * max(1, |x|)`` element by element), same shape, dtype and device.

    Up to the rounding of ``x + d`` in ``x``'s dtype. ``x`` may be a tuple of tensors (then a
    tuple of perturbed tensors is drawn).
    """
    if not scale >= 0:
        raise ValueError(f"perturbations: scale must be >= 0; got {scale}")
    if isinstance(x, (tuple, list)):
        return st.tuples(*(perturbations(t, scale, relative) for t in x))
    if not isinstance(x, torch.Tensor) or x.dtype not in _SUPPORTED:
        raise TypeError(f"perturbations: expected a real floating tensor; got {type(x).__name__}"
                        + (f" of {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    base = x.detach()

    def apply(unit: torch.Tensor) -> torch.Tensor:
        step = unit.to(base.device) * scale
        if relative:
            step = step * base.abs().clamp_min(1.0)
        return base + step.to(base.dtype)

    return tensors(tuple(base.shape), torch.float64, min_value=-1.0, max_value=1.0).map(apply).filter(_finite)
