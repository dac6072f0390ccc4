"""Writes through views that reinterpret the element type (complex <-> real) keep their dependencies."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from dense_reference import assert_sound, dense_nonzeros

import trackjac


def _assert_sound(f, x):
    assert_sound(trackjac.jacobian_sparsity(f, x), dense_nonzeros(f, (x,))[0])


WRITES = {
    "real": lambda z: z.real,
    "imag": lambda z: z.imag,
    "view_as_real[..., 0]": lambda z: torch.view_as_real(z)[..., 0],
    "view_as_real[..., 1]": lambda z: torch.view_as_real(z)[..., 1],
    "real of a slice": lambda z: z[1:].real,
    "imag of a transpose": lambda z: z.t().imag,
}


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(WRITES)), n=st.integers(2, 4), m=st.integers(2, 4),
       read=st.sampled_from(["view_as_real", "abs", "angle_free"]))
def test_write_through_a_real_view_of_complex(kind, n, m, read):
    x = torch.rand(n, m, dtype=torch.float64) + 0.5

    def f(x):
        z = torch.zeros(n, m, dtype=torch.complex128)
        target = WRITES[kind](z)
        target.copy_(x.reshape(-1)[: target.numel()].reshape(target.shape))
        if read == "view_as_real":
            return torch.view_as_real(z).reshape(-1)
        if read == "abs":
            return (z * (1 + 2j)).abs().reshape(-1)
        return torch.view_as_real(z * 3).sum(-1).reshape(-1)

    _assert_sound(f, x)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), part=st.sampled_from([0, 1, None]), complex_write=st.booleans())
def test_view_as_complex_of_a_real_buffer_aliases_it(n, part, complex_write):
    x = torch.rand(n, dtype=torch.float64)

    def f(x):
        buf = torch.zeros(n, 2, dtype=torch.float64)
        c = torch.view_as_complex(buf)
        if complex_write:
            c.copy_(x.to(torch.complex128) * (1 + 1j))   # through the complex view into buf
            return buf.reshape(-1)
        if part is None:
            buf.copy_(torch.stack([x, 2 * x], -1))
        else:
            buf[:, part].copy_(x)                         # through buf into the complex view
        return torch.view_as_real(c * 1j).reshape(-1)

    _assert_sound(f, x)


def test_to_another_dtype_is_a_new_tensor_not_a_view():
    # ``to(dtype)`` may alias by its schema; with a new dtype it has storage of its own, and a
    # write into it must not reach the original
    x = torch.rand(3, dtype=torch.float64)

    def f(x):
        m = (x > 2).to(torch.float64)       # a new tensor
        m.copy_(x * 0 + 1)
        return x * 2 + 0 * m.sum()

    P = trackjac.jacobian_sparsity(f, x, layout=torch.strided)
    assert torch.equal(P, torch.ones(3, 3, dtype=torch.bool))   # 0 * sum(m): participation
