"""scipy.sparse conversions of 2-D torch tensors (scipy optional: imported when one runs).

A leaf module (torch only), shared by :mod:`trackjac.interop` and the pattern object.
"""
from __future__ import annotations

import torch
from torch import Tensor


def scipy_sparse():
    try:
        import scipy.sparse  # optional dependency: only these conversions need it
    except ImportError as e:
        raise ImportError("trackjac.interop needs scipy: pip install scipy") from e
    return scipy.sparse


def coo_matrix_of(t: Tensor, sp):
    """One 2-D tensor as a scipy COO matrix; stored entries stay (a stored 0 is structural), except
    stored ``False`` of a boolean pattern; a dense tensor gives its nonzeros."""
    if not isinstance(t, Tensor):
        raise TypeError(f"to_scipy: expected tensors; got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"to_scipy: blocks must be 2-D, got shape {tuple(t.shape)} (reshape to "
                         "(out.numel(), arg.numel()); trackjac.jacobian_sparsity returns 2-D blocks)")
    if t.is_complex():
        raise TypeError("to_scipy: complex tensors are not supported")
    t = t.detach().cpu()
    if t.layout == torch.strided:
        r, c = torch.nonzero(t, as_tuple=True)
        vals = t[r, c]
    else:
        q = (t if t.layout == torch.sparse_coo else t.to_sparse_coo()).coalesce()
        if q.values().dim() != 1:
            raise ValueError("to_scipy: hybrid sparse tensors (dense dimensions in the values) are not supported")
        (r, c), vals = q.indices(), q.values()
        if vals.dtype == torch.bool:
            r, c, vals = r[vals], c[vals], vals[vals]
    dtype = torch.float64 if vals.dtype in (torch.float16, torch.bfloat16) else vals.dtype  # numpy has no bfloat16
    return sp.coo_matrix((vals.to(dtype).numpy(), (r.numpy(), c.numpy())), shape=tuple(t.shape))
