"""Random programs for the tests (``tracer/test_programs.py``, ``provenance/test_representations.py``).

A program is a random sequence of steps on an ``(m, n)`` state built from up to three
sources ``x`` (m, n), ``r`` (n,) and ``c`` (m,): pointwise maths with broadcasting, views,
in-place writes into buffers, reductions, scans, data movement and products.  Programs
have no zero constants, no value-dependent choices, asymmetric coefficients (so no
two entries cancel by symmetry) and a square root after softmax (no linear combination of
its outputs is constant).  ``CHOICES`` are value-dependent choices to append to one.
"""
import torch
from hypothesis import strategies as st


def _perm(n, seed):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


# Each step: (name, fn(h, x, r, c, k) -> new h of the same shape).
STEPS = {
    "sin": lambda h, x, r, c, k: torch.sin(h),
    "exp_atan": lambda h, x, r, c, k: torch.atan(h).exp(),  # tanh saturates: its derivative underflows
    "mul_row": lambda h, x, r, c, k: h * r,
    "div_col": lambda h, x, r, c, k: h / (2 + c[:, None]),
    "add_x": lambda h, x, r, c, k: 1.3 * h + x.roll(k, 0),
    "square": lambda h, x, r, c, k: h * h,
    "pow": lambda h, x, r, c, k: (h * h + 1) ** 1.5,
    "roll": lambda h, x, r, c, k: h.roll(k, 1),
    "flip": lambda h, x, r, c, k: h.flip(k % 2),
    "cumsum": lambda h, x, r, c, k: h.cumsum(k % 2),
    "softmax": lambda h, x, r, c, k: torch.softmax(h * _ramp(h, k % 2), k % 2).sqrt(),
    "rowsum": lambda h, x, r, c, k: h + h.sum(1, keepdim=True),
    "mean0": lambda h, x, r, c, k: h * h.mean(0),
    "matmul": lambda h, x, r, c, k: h @ (torch.linspace(0.5, 1.5, h.shape[1] ** 2, dtype=h.dtype).reshape(h.shape[1], -1)),
    "transpose_view": lambda h, x, r, c, k: h.t().contiguous().t() * 2,
    "reshape_view": lambda h, x, r, c, k: h.reshape(-1).flip(0).reshape(h.shape),
    "slice_cat": lambda h, x, r, c, k: torch.cat([h[:, k % h.shape[1]:], h[:, :k % h.shape[1]]], 1),
    "gather_const": lambda h, x, r, c, k: h.gather(1, _perm(h.shape[1], k).expand(h.shape[0], -1)),
    "index_rows": lambda h, x, r, c, k: h[_perm(h.shape[0], k)],
    "where_const": lambda h, x, r, c, k: torch.where(_perm(h.numel(), k).reshape(h.shape) % 2 == 0, h, x),
    "buffer_write": lambda h, x, r, c, k: _buffer(h, x, k),
    "inplace_view": lambda h, x, r, c, k: _inplace(h, r, c, k),
    "index_add": lambda h, x, r, c, k: h.index_add(0, _perm(h.shape[0], k), x),
    "scatter_add": lambda h, x, r, c, k: h.scatter_add(1, _perm(h.shape[1], k).expand(h.shape[0], -1), x),
    "stack_sum": lambda h, x, r, c, k: (torch.stack([h, x, h.flip(0)]) * torch.tensor([1.0, 2.0, 0.5], dtype=h.dtype)[:, None, None]).sum(0),
    "expand": lambda h, x, r, c, k: h + c.unsqueeze(1).expand(h.shape) * r.expand(h.shape),
}


def _ramp(h, dim):
    """Position-dependent weights: softmax of equal entries is constant."""
    shape = [1, 1]
    shape[dim] = h.shape[dim]
    return 1 + 0.25 * torch.arange(h.shape[dim], dtype=h.dtype).reshape(shape)


def _buffer(h, x, k):
    buf = torch.zeros(h.shape, dtype=h.dtype)
    buf[:, ::2] = h[:, ::2]
    buf[:, 1::2] = x[:, 1::2] * h[:, 1::2]
    return buf


def _inplace(h, r, c, k):
    z = h.clone()
    z[1:] += h[:-1]
    z.t()[0].mul_(c)            # write a column through a transposed view
    z[:, -1:].add_(r[:1])
    return z


def run_program(steps, x, r, c):
    h = x * 1.0
    for name, k in steps:
        h = STEPS[name](h, x, r, c, k)
    return h


programs = st.lists(st.tuples(st.sampled_from(sorted(STEPS)), st.integers(0, 5)), min_size=1, max_size=6)
shapes = st.tuples(st.integers(1, 4), st.integers(1, 4))


def program_args(shape, seed):
    """``[x, r, c]`` for a program on an ``(m, n)`` state, in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    m, n = shape
    return [torch.rand(m, n, generator=g, dtype=torch.float64) + 0.5,
            torch.rand(n, generator=g, dtype=torch.float64) + 0.5,
            torch.rand(m, generator=g, dtype=torch.float64) + 0.5]


# value-dependent choices appended to a program ("none": the program alone)
CHOICES = {
    "relu": lambda h: torch.relu(h - 1),
    "max": lambda h: h.max(1, keepdim=True).values * h,
    "where": lambda h: torch.where(h > 1, h, h.roll(1, 0)),
    "clamp": lambda h: h.clamp(0.8, 1.2),
    "sort": lambda h: h.sort(1).values,
    "none": lambda h: h,
}
