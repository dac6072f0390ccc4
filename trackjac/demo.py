"""The demo's functions and sections: the forum question answered, and the Brusselator's
sparse Jacobian timed against ``torch.func.jacrev`` (``python -m trackjac demo``)."""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, Sequence

import torch
from torch.autograd.functional import jacobian as ag_jacobian
from torch.func import jacrev

from .evaluate import jacobian, jacobian_plan
from .tracer import jacobian_sparsity


def seed_func(a0, a1, a2):
    """The forum question's function: ``a0`` is multiplied by zero, yet participates."""
    a0 = a0 * 0
    a1 = a1 * 2
    a2 = a2 * 4
    return torch.cat((a0, a1, a2))


def _laplacian(a):
    return (torch.roll(a, 1, -2) + torch.roll(a, -1, -2)
            + torch.roll(a, 1, -1) + torch.roll(a, -1, -1) - 4.0 * a)


def brusselator(x):
    """2-D Brusselator right-hand side on a periodic N x N grid: ``x`` (2, N, N) -> (2, N, N)."""
    u, v = x[0], x[1]
    uuv = u * u * v
    du = 1.0 + uuv - 4.4 * u + 10.0 * _laplacian(u)
    dv = 3.4 * u - uuv + 10.0 * _laplacian(v)
    return torch.stack([du, dv])


def _stdout_utf8() -> bool:
    enc = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return enc == "utf8"


def _fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def _timed(fn: Callable, repeat: int = 1):
    """(result, best time over ``repeat`` runs)."""
    best, res = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
    return res, best


def demo_seed(out=print) -> None:
    utf = _stdout_utf8()
    out("1. The forum question: which zeros of a Jacobian are structural?")
    out("")
    out("   def func(a0, a1, a2):")
    out("       return torch.cat((a0 * 0, a1 * 2, a2 * 4))")
    out("")
    torch.manual_seed(0)
    args = tuple(torch.rand(2, dtype=torch.float64) for _ in range(3))
    J = torch.cat([j for j in ag_jacobian(seed_func, args)], dim=1)            # (6, 6) values
    P = torch.cat([p.to_dense() for p in jacobian_sparsity(seed_func, *args)], dim=1)

    # soundness, the promise: every nonzero of autograd's Jacobian is in the pattern
    assert bool((P | (J == 0)).all()), "pattern misses a nonzero of the Jacobian"
    dot, yes, mz = ("\u00b7", "\u25cf", "0*") if utf else (".", "#", "0*")
    cols = ["a0[0]", "a0[1]", "a1[0]", "a1[1]", "a2[0]", "a2[1]"]
    w = 6
    block = w * 6
    out("   " + "autograd: jacobian(func, (a0, a1, a2))".ljust(8 + block) + "  | trackjac.jacobian_sparsity")
    out("   " + " " * 8 + "".join(c.rjust(w) for c in cols) + "  |" + "".join(c.rjust(w) for c in cols))
    for i in range(6):
        vals = "".join(f"{float(J[i, j]):{w}.1f}" for j in range(6))
        pats = "".join((yes if P[i, j] else dot).rjust(w) for j in range(6))
        out(f"   out[{i}]  " + vals + "  |" + pats)
    out("")
    out("   autograd prints 0.0 in the a0 columns whether a0 was used or not; trackjac tells them")
    out("   apart. Combined:")
    out(f"   (value = nonzero derivative, {mz} = participates but multiplied by zero, "
        f"{dot} = never used)")
    out("")
    out("   " + " " * 8 + "".join(c.rjust(w) for c in cols))
    for i in range(6):
        cells = []
        for j in range(6):
            if J[i, j] != 0:
                cells.append(f"{float(J[i, j]):{w}.1f}")
            elif P[i, j]:
                cells.append(mz.rjust(w))
            else:
                cells.append(dot.rjust(w))
        out(f"   out[{i}]  " + "".join(cells))
    out("")
    n_mz = int((P & (J == 0)).sum())
    out(f"   a0 participates in out[0] and out[1] ({n_mz} entries multiplied by zero: they go "
        "into the block-sparse")
    out("   matrix); every other zero is 'never used', and nothing else leaks in.")
    out("   The pattern is structural: it holds for any input values, and x * 0 counts as")
    out("   participation even though the 0 is a known constant. See docs/concepts.md.")


def _bench_row(N: int, check: bool):
    x = torch.rand(2, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(N))
    n = x.numel()
    J, t_scratch = _timed(lambda: jacobian(brusselator, x))
    plan, t_plan = _timed(lambda: jacobian_plan(brusselator, x))
    x2 = x + 0.1
    plan(x2)  # warm
    J2, t_eval = _timed(lambda: plan(x2), repeat=5)
    D, t_rev = _timed(lambda: jacrev(brusselator)(x2).reshape(n, n))
    err = float((J2.to_dense() - D).abs().max())
    if check:
        assert err < 1e-10, f"sparse Jacobian differs from jacrev by {err}"
    nnz = J2._nnz() if J2.layout == torch.sparse_coo else J2.values().numel()
    return [str(N), f"{n:,}", f"{nnz:,}", str(plan.num_colors), str(plan.mode), _fmt_time(t_rev),
            _fmt_time(t_scratch), _fmt_time(t_plan), _fmt_time(t_eval),
            f"{t_rev / t_eval:,.0f}x", f"{err:.0e}"]


def demo_brusselator(sizes: Sequence[int], out=print, check: bool = True) -> None:
    out("2. A sparse Jacobian: the 2-D Brusselator (reaction-diffusion, periodic 5-point stencil)")
    out("")
    out("   x = torch.rand(2, N, N, dtype=torch.float64)      # n = 2 N^2 unknowns")
    out("   J = trackjac.jacobian(brusselator, x)             # sparse COO (n, n)")
    out("   plan = trackjac.jacobian_plan(brusselator, x)     # detection + coloring once")
    out("   J = plan(x_new)                                   # then a few vjps per point")
    out("")
    # warm up both code paths on a tiny grid so one-time costs do not land in the table
    xw = torch.rand(2, 4, 4, dtype=torch.float64)
    jacrev(brusselator)(xw)
    jacobian(brusselator, xw)
    rows = []
    for N in sizes:
        t = time.perf_counter()
        rows.append(_bench_row(N, check))
        print(f"   [N = {N} done in {time.perf_counter() - t:.1f} s]", file=sys.stderr, flush=True)
    out(_table(["N", "n", "nnz", "colors", "mode", "jacrev", "jacobian", "plan build",
                "plan(x)", "jacrev/plan", "max err"], rows))
    out("")
    out("   jacrev: torch.func.jacrev, dense (n x n); jacobian: trackjac.jacobian from scratch")
    out("   (detection + coloring + evaluation); plan(x): a warm plan's evaluation at a new point;")
    out("   max err: largest difference from jacrev. float64, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.")
