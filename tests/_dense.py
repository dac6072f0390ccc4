"""Reference patterns from dense autograd Jacobians."""
from __future__ import annotations

import torch
from torch.autograd.functional import jacobian


def dense_nonzeros(f, args, out_index=None):
    """Boolean ``(out.numel(), arg.numel())`` nonzero masks of the dense Jacobian, one per argument."""
    args = tuple(a.detach().clone().double() for a in args)
    jac = jacobian(lambda *a: _flat(f(*a), out_index), args)
    return [j.reshape(j.shape[0], -1) != 0 for j in jac]


def union_nonzeros(f, make_args, points=3, out_index=None, reference=None):
    """Union of nonzero masks over several random points (``make_args(seed)`` gives the arguments);
    ``reference(f, args)`` gives the masks at one point (default: :func:`dense_nonzeros`)."""
    acc = None
    for s in range(points):
        args = make_args(s)
        nz = dense_nonzeros(f, args, out_index) if reference is None else reference(f, args)
        acc = nz if acc is None else [a | b for a, b in zip(acc, nz)]
    return acc


def _flat(out, out_index):
    if isinstance(out, (tuple, list)):
        if out_index is None:
            return torch.cat([o.reshape(-1) for o in out])
        out = out[out_index]
    return out.reshape(-1)


def as_dense(p):
    return p.to_dense() if p.layout != torch.strided else p


def assert_sound(pattern, nonzero, msg=""):
    pattern = as_dense(pattern)
    missing = nonzero & ~pattern
    assert not missing.any(), f"unsound{msg}: {int(missing.sum())} Jacobian nonzeros missing at {missing.nonzero()[:5].tolist()}"


def assert_equal(pattern, expected, msg=""):
    pattern = as_dense(pattern)
    assert_sound(pattern, expected, msg)
    extra = pattern & ~expected
    assert not extra.any(), f"not tight{msg}: {int(extra.sum())} extra entries at {extra.nonzero()[:5].tolist()}"
