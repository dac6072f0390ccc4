"""Complex values and Fourier transforms.

A complex element carries one provenance row for both its parts: it depends on
``x[j]`` when its real or its imaginary part does.  ``view_as_real`` gives both
parts of an element that row; ``view_as_complex`` merges the two rows of a pair.
A transform over ``dim`` makes every output element depend on the whole line
along ``dim`` of its input (the output length may differ: one-sided spectra,
``irfft``'s ``last_dim_size``).
"""
from __future__ import annotations

import torch

from . import pointwise
from .registry import register, rule
from .shapes import bcast, codes, keep_shape, norm_dims, reduce

aten = torch.ops.aten

# a complex number from its parts (``complex(re, im)``, ``polar(abs, angle)``): pointwise
register([aten.complex, aten.polar], pointwise.generic, kind="table:spectral")


@rule(aten.view_as_real)
def view_as_real(call):
    z, o = call.bound["self"], call.outs[0]
    p = call.prov(z)
    if p is None:
        return None
    return p.gather(codes(z.shape, p.device).unsqueeze(-1).expand(o.shape).reshape(-1))


@rule(aten.view_as_complex)
def view_as_complex(call):
    x = call.bound["self"]
    return reduce(call.prov(x), x.shape, [x.dim() - 1])


@rule(aten._fft_r2c, aten._fft_c2r, aten._fft_c2c)
def transform(call):
    """``_fft_r2c``/``_fft_c2r``/``_fft_c2c``: each output depends on its input line along ``dim``."""
    x, o = call.bound["self"], call.outs[0]
    p = call.prov(x)
    if p is None:
        return None
    dims = norm_dims(call.bound["dim"], x.dim())
    mask = None
    if "last_dim_size" in call.bound:   # c2r reads the first n // 2 + 1 bins of the last dim only
        last = dims[-1]
        used = torch.arange(x.shape[last], device=o.device) < call.bound["last_dim_size"] // 2 + 1
        if not bool(used.all()):
            mask = used.reshape((-1,) + (1,) * (x.dim() - last - 1)).expand(x.shape)
    return bcast(reduce(p, x.shape, dims, mask), keep_shape(x.shape, dims), o.shape)


@rule(aten.angle, aten.sgn)
def _real_input_zero(call):
    """``angle``/``sgn`` of a real tensor are piecewise constant; of a complex one, pointwise."""
    if call.bound["self"].dtype.is_complex:
        return pointwise.generic(call)
    return pointwise.zero_derivative(call)
