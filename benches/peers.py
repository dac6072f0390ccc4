"""JAX twins of benches/problems.py for the peer benchmarks (asdex, benches/bench_peers.py).

Each twin computes the same formula as its torch original, op for op, so both
libraries differentiate the same function; the points come from problems.py's
torch generators, converted, so both also see the same point (tests/test_peers.py
checks the residuals agree). Needs ``jax`` (``pip install 'trackjac[peers]'``).
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import torch

import problems

# float64 like the torch problems; must be set before any array is created
jax.config.update("jax_enable_x64", True)

__all__ = [
    "brusselator",
    "laplacian3d_cubic",
    "kuramoto_sivashinsky",
    "bundle_adjustment_residual",
    "to_jax",
    "twin",
]


def to_jax(t: torch.Tensor) -> jax.Array:
    """A torch CPU tensor as a JAX array with the same values and dtype."""
    return jnp.asarray(t.detach().cpu().numpy())


def _laplacian(a: jax.Array) -> jax.Array:
    return (
        jnp.roll(a, 1, -2) + jnp.roll(a, -1, -2)
        + jnp.roll(a, 1, -1) + jnp.roll(a, -1, -1) - 4.0 * a
    )


def brusselator(x: jax.Array) -> jax.Array:
    """:func:`problems.brusselator`: ``x`` of shape (2, N, N) -> (2, N, N)."""
    u, v = x[0], x[1]
    uuv = u * u * v
    reaction = jnp.stack([1.0 + uuv - 4.4 * u, 3.4 * u - uuv])
    return reaction + problems.ALPHA * _laplacian(x)


def laplacian3d_cubic(u: jax.Array) -> jax.Array:
    """:func:`problems.laplacian3d_cubic`: ``u`` of shape (N, N, N)."""
    lap = (
        jnp.roll(u, 1, 0) + jnp.roll(u, -1, 0) + jnp.roll(u, 1, 1) + jnp.roll(u, -1, 1)
        + jnp.roll(u, 1, 2) + jnp.roll(u, -1, 2) - 6.0 * u
    )
    return problems.DIFFUSION_3D * lap + u - u * u * u


def kuramoto_sivashinsky(u: jax.Array) -> jax.Array:
    """:func:`problems.kuramoto_sivashinsky`: ``u`` of shape (n,)."""
    h = problems.KS_H
    um2, um1 = jnp.roll(u, 2), jnp.roll(u, 1)
    up1, up2 = jnp.roll(u, -1), jnp.roll(u, -2)
    ux = (up1 - um1) / (2.0 * h)
    uxx = (up1 - 2.0 * u + um1) / (h * h)
    uxxxx = (up2 - 4.0 * up1 + 6.0 * u - 4.0 * um1 + um2) / (h ** 4)
    return -u * ux - uxx - uxxxx


def _rotate(w: jax.Array, p: jax.Array) -> jax.Array:
    theta = jnp.sqrt((w * w).sum(-1, keepdims=True) + 1e-12)
    k = w / theta
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    kxp = jnp.cross(k, p)
    kdp = (k * p).sum(-1, keepdims=True)
    return p * cos + kxp * sin + k * kdp * (1.0 - cos)


def _project(cams: jax.Array, pts: jax.Array) -> jax.Array:
    P = _rotate(cams[..., 0:3], pts) + cams[..., 3:6]
    p = -P[..., 0:2] / P[..., 2:3]
    f, k1, k2 = cams[..., 6:7], cams[..., 7:8], cams[..., 8:9]
    r2 = (p * p).sum(-1, keepdims=True)
    return f * (1.0 + k1 * r2 + k2 * r2 * r2) * p


def bundle_adjustment_residual(ba: problems.BundleAdjustment) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """:meth:`problems.BundleAdjustment.residual` of ``ba``: ``(cams, pts) -> (O, 2)``."""
    cam_idx = np.asarray(ba.cam_idx.cpu().numpy())
    pt_idx = np.asarray(ba.pt_idx.cpu().numpy())
    observed = to_jax(ba.observed)

    def residual(cams: jax.Array, pts: jax.Array) -> jax.Array:
        return _project(cams[cam_idx], pts[pt_idx]) - observed

    return residual


TWINS = {
    "brusselator": brusselator,
    "laplacian3d_cubic": laplacian3d_cubic,
    "kuramoto_sivashinsky": kuramoto_sivashinsky,
}


def twin(problem: str, args: Sequence[torch.Tensor], ba: problems.BundleAdjustment | None = None
         ) -> Tuple[Callable, Tuple[jax.Array, ...]]:
    """``(f, args)`` in JAX for the torch problem ``problem`` at the torch point ``args``."""
    jargs = tuple(to_jax(a) for a in args)
    if problem == "bundle_adjustment":
        if ba is None:
            raise ValueError("bundle_adjustment needs its BundleAdjustment instance (ba=)")
        return bundle_adjustment_residual(ba), jargs
    if problem not in TWINS:
        raise ValueError(f"no JAX twin for problem {problem!r}; known: {sorted(TWINS) + ['bundle_adjustment']}")
    return TWINS[problem], jargs
