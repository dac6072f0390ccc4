"""Linear algebra.

Products contract first and broadcast second: ``(A @ B)[i, j]`` depends on the
union of row ``i`` of ``A`` and column ``j`` of ``B``, so the work is
proportional to the result's pattern, never to ``m * n * k`` pairs.
Factorizations and solvers are dense within each batch matrix.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from .._prov import Prov
from ..tracked import DIFFERENTIABLE
from ._util import bcast, codes, reduce, slice_union, union_opt

aten = torch.ops.aten


def _contract(prov: Optional[Prov], shape, dims, as_shape, out_shape) -> Optional[Prov]:
    """Reduce ``dims`` of an operand, view the result as ``as_shape``, broadcast to ``out_shape``."""
    if prov is None:
        return None
    return bcast(reduce(prov, shape, dims), as_shape, out_shape)


def _product(call, a_name, b_name, add_name=None):
    a, b = call.bound[a_name], call.bound[b_name]
    o = call.outs[0]
    out = tuple(o.shape)
    if a.dim() == 1 and b.dim() == 1:                       # dot
        parts = [_contract(call.prov(a), a.shape, [0], (), out),
                 _contract(call.prov(b), b.shape, [0], (), out)]
    elif b.dim() == 1:                                       # mv
        parts = [_contract(call.prov(a), a.shape, [a.dim() - 1], a.shape[:-1], out),
                 _contract(call.prov(b), b.shape, [0], (), out)]
    else:                                                    # mm / bmm (batch dims already equal)
        nb = a.dim() - 2
        parts = [_contract(call.prov(a), a.shape, [a.dim() - 1], tuple(a.shape[:-1]) + (1,), out),
                 _contract(call.prov(b), b.shape, [b.dim() - 2], tuple(b.shape[:nb]) + (1, b.shape[-1]), out)]
    if add_name is not None:
        c = call.bound[add_name]
        if isinstance(c, torch.Tensor):
            parts.append(bcast(call.prov(c), c.shape, out))
    return [union_opt(parts, o.numel(), o.device)] + [None] * (len(call.outs) - 1)


def addbmm(call):
    """``self + sum_b batch1[b] @ batch2[b]``."""
    a, b, c = call.bound["batch1"], call.bound["batch2"], call.bound["self"]
    o = call.outs[0]
    out = tuple(o.shape)
    parts = [_contract(call.prov(a), a.shape, [0, 2], (a.shape[1], 1), out),
             _contract(call.prov(b), b.shape, [0, 1], (1, b.shape[2]), out),
             bcast(call.prov(c), c.shape, out)]
    return [union_opt(parts, o.numel(), o.device)]


def addr(call):
    """``self + outer(vec1, vec2)``."""
    v1, v2, c = call.bound["vec1"], call.bound["vec2"], call.bound["self"]
    o = call.outs[0]
    out = tuple(o.shape)
    parts = [bcast(call.prov(v1), (v1.shape[0], 1), out), bcast(call.prov(v2), (1, v2.shape[0]), out),
             bcast(call.prov(c), c.shape, out)]
    return [union_opt(parts, o.numel(), o.device)]


def batch_dense(call):
    """Each output element depends on every element of the same batch matrix of every input."""
    tensors = [a for a in call.tensor_args() if a.dtype in DIFFERENTIABLE]
    if not tensors:
        return [None] * len(call.outs)
    first = tensors[0]
    nbatch = max(first.dim() - 2, 0)
    res = []
    for o in call.outs:
        if o.dtype not in DIFFERENTIABLE or o.numel() == 0:
            res.append(None)
            continue
        ob = min(nbatch, o.dim())
        parts = []
        for a in tensors:
            p = call.prov(a)
            if p is None:
                continue
            ab = min(nbatch, a.dim())
            red = reduce(p, a.shape, list(range(ab, a.dim())))
            bshape = tuple(a.shape[:ab])
            # align batch dims to the output's (right-aligned), core dims broadcast
            as_shape = (1,) * (ob - ab) + bshape + (1,) * (o.dim() - ob)
            parts.append(bcast(red, as_shape, tuple(o.shape)))
        res.append(union_opt(parts, o.numel(), o.device))
    return res


def trace(call):
    x = call.bound["self"]
    p = call.prov(x)
    if p is None:
        return [None]
    diag = codes(x.shape, p.device).diagonal().reshape(-1)
    return [p.scatter(torch.zeros_like(diag), 1, diag)]


def cross(call):
    """Cross product along ``dim``: each component depends on the whole 3-vector of both inputs."""
    o = call.outs[0]
    dim = call.bound.get("dim")
    if dim is None:
        dim = next(i for i, s in enumerate(o.shape) if s == 3)
    dim %= o.dim()
    parts = [slice_union(bcast(call.prov(a), a.shape, o.shape), o.shape, [dim])
             for a in (call.bound["self"], call.bound["other"])]
    return [union_opt(parts, o.numel(), o.device)]


TABLE: Dict[object, Callable] = {
    aten.mm: lambda c: _product(c, "self", "mat2"),
    aten.bmm: lambda c: _product(c, "self", "mat2"),
    aten.mv: lambda c: _product(c, "self", "vec"),
    aten.dot: lambda c: _product(c, "self", "tensor"),
    aten.vdot: lambda c: _product(c, "self", "other"),
    aten.addmm: lambda c: _product(c, "mat1", "mat2", "self"),
    aten._addmm_activation: lambda c: _product(c, "mat1", "mat2", "self"),
    aten.baddbmm: lambda c: _product(c, "batch1", "batch2", "self"),
    aten.addmv: lambda c: _product(c, "mat", "vec", "self"),
    aten.addbmm: addbmm,
    aten.addr: addr,
    aten.trace: trace,
    **{op: batch_dense for op in (
        aten.linalg_inv_ex, aten._linalg_det, aten._linalg_slogdet, aten._linalg_solve_ex,
        aten.linalg_solve, aten.linalg_cholesky_ex, aten.linalg_qr, aten._linalg_svd,
        aten._linalg_eigh, aten.linalg_lu_factor_ex, aten.linalg_lu, aten.lu_unpack,
        aten.linalg_matrix_exp, aten.triangular_solve, aten.linalg_solve_triangular,
        aten.cholesky_solve, aten.cholesky_inverse, aten.linalg_householder_product,
        aten.geqrf, aten.ormqr, aten.logdet, aten.det, aten.linalg_eig, aten.linalg_lstsq,
        aten._linalg_eigvals, aten.linalg_ldl_factor_ex, aten.linalg_ldl_solve,
        aten.linalg_lu_solve, aten.cholesky, aten.inverse, aten.linalg_pinv,
    )},
    aten.linalg_cross: cross,
    aten.cross: cross,
}
