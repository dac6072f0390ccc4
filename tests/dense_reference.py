"""Dense references for the tests: Jacobians, their nonzero masks and the union of those over
points, from PyTorch's own autograd (``torch.autograd.functional.jacobian``; ``torch.func.jacfwd``
where asked; selected rows by ``torch.autograd.grad`` for the OpInfo sweep; central differences
where autograd is wrong), and the two pattern checks built on them.

Every test that compares trackjac with a dense Jacobian takes it from here.  ``tests/`` is on
``sys.path`` (``pythonpath`` in pyproject's pytest options): ``from dense_reference import ...``.
"""
from __future__ import annotations

import warnings

import torch
from torch.autograd.functional import jacobian


def dense_jacobian(f, *args):
    """``torch.autograd.functional.jacobian`` reshaped to 2-D blocks ``(out.numel(), arg.numel())``,
    nested as :func:`trackjac.jacobian` nests its result: one block for one output and one argument,
    a tuple over arguments, a tuple over outputs (of tuples over arguments)."""
    J = jacobian(f, args if len(args) > 1 else args[0])
    out = f(*args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    rows = J if isinstance(out, (tuple, list)) else (J,)
    table = []
    for o, r in zip(outs, rows):
        r = r if len(args) > 1 else (r,)
        table.append(tuple(b.reshape(o.numel(), a.numel()) for b, a in zip(r, args)))
    table = [t if len(args) > 1 else t[0] for t in table]
    return tuple(table) if isinstance(out, (tuple, list)) else table[0]


def rows_jacobian(fn, x, rows=None, loop_rows=200):
    """``(out rows, x.numel())`` Jacobian of ``fn`` at ``x`` by reverse mode, or ``None`` where
    autograd has none; ``rows``: only those (flat) output rows.  Up to ``loop_rows`` rows: one
    backward per row (batched backward can take vmap fallbacks); more: one batched backward,
    row by row where that fails."""
    x = x.detach().clone().requires_grad_()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = fn(x)
            n = y.numel() if rows is None else rows.numel()
            if not y.requires_grad:
                return torch.zeros(n, x.numel(), dtype=y.dtype)
            seeds = torch.eye(y.numel(), dtype=y.dtype) if rows is None else \
                torch.zeros(n, y.numel(), dtype=y.dtype).scatter_(1, rows.unsqueeze(1), 1.0)
            try:
                if n <= loop_rows:   # row by row: batched backward can take vmap fallbacks
                    raise RuntimeError
                (g,) = torch.autograd.grad(y, x, seeds, is_grads_batched=True, allow_unused=True,
                                           retain_graph=True)
                g = _zero_if_none(g, x, n)
            except Exception:
                g = torch.stack([_zero_if_none(torch.autograd.grad(y, x, s, allow_unused=True,
                                                                   retain_graph=True)[0], x)
                                 for s in seeds])
    except Exception:
        return None
    return g.reshape(n, x.numel()).detach()


def finite_differences(fn, x, rows=None, h: float = 1e-6) -> torch.Tensor:
    """Central differences, as :func:`rows_jacobian` lays them out, for ops whose autograd
    formula is wrong."""
    cols = []
    with torch.no_grad():
        for j in range(x.numel()):
            e = torch.zeros(x.numel(), dtype=x.dtype)
            e[j] = h
            e = e.reshape(x.shape)
            cols.append((fn(x + e) - fn(x - e)) / (2 * h))
    J = torch.stack(cols, 1)
    return J if rows is None else J[rows]


def _zero_if_none(g, x, batch=None):
    if g is not None:
        return g
    return torch.zeros(((batch,) if batch is not None else ()) + tuple(x.shape), dtype=x.dtype)


def dense_nonzeros(f, args, out_index=None, *, forward=False, reverse_too=False):
    """Boolean ``(out.numel(), arg.numel())`` nonzero masks of the dense Jacobian at float64 copies
    of ``args``, one per argument.  Outputs are flattened and concatenated (``out_index``: that
    output only).

    Reverse mode by default; ``forward``: ``torch.func.jacfwd`` (vmapped forward mode), falling
    back to reverse mode where an op has no forward rule; ``reverse_too`` (with ``forward``):
    united with reverse mode's masks, for ops whose backward disagrees with their forward."""
    args = tuple(a.detach().clone().double() for a in args)
    fl = lambda *a: _flat(f(*a), out_index)  # noqa: E731
    if not forward:
        return [_mask(j) for j in jacobian(fl, args)]
    try:
        jac = torch.func.jacfwd(fl, argnums=tuple(range(len(args))))(*args)
    except (RuntimeError, NotImplementedError):
        jac, reverse_too = jacobian(fl, args), False
    nz = [_mask(j) for j in jac]
    if reverse_too:
        nz = [a | _mask(r) for a, r in zip(nz, jacobian(fl, args))]
    return nz


def union_nonzeros(f, make_args, points=3, out_index=None, **options):
    """Union of the :func:`dense_nonzeros` masks over several random points (``make_args(seed)``
    gives the arguments, for seeds ``0 .. points - 1``); ``options`` go to :func:`dense_nonzeros`."""
    acc = None
    for s in range(points):
        nz = dense_nonzeros(f, make_args(s), out_index, **options)
        acc = nz if acc is None else [a | b for a, b in zip(acc, nz)]
    return acc


def random_points(shapes, seed):
    """``make_args`` for :func:`union_nonzeros`: standard normal float64 tensors of ``shapes``,
    point ``s`` drawn from a generator seeded with ``seed + s``."""
    def make(s):
        g = torch.Generator().manual_seed(seed + s)
        return tuple(torch.randn(shape, generator=g, dtype=torch.double) for shape in shapes)
    return make


def _mask(j):
    return j.reshape(j.shape[0], -1) != 0


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
