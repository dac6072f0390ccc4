"""Command line: ``python -m trackjac demo`` and ``python -m trackjac spy module:function --shapes ...``.

``demo`` answers the forum question that started the project (a zero Jacobian
entry from "multiplied by zero" vs one from "never used"), then computes the
sparse Jacobian of the 2-D Brusselator and times it against ``torch.func.jacrev``.

``spy`` tracks a function of yours on random inputs of the given shapes and draws
its Jacobian's sparsity pattern: text in the terminal, a PNG with ``--png`` (needs
matplotlib). Stages and their timings go to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import threading
import time
from typing import Callable, List, Optional, Sequence

import torch

# ----------------------------------------------------------------------------
# Functions used by the demo (importable: ``trackjac.__main__:brusselator``)
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


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


def _engine():
    """``(jacobian, jacobian_plan)`` from trackjac, or ``None`` when the engine is not installed."""
    import trackjac
    jac = getattr(trackjac, "jacobian", None)
    plan = getattr(trackjac, "jacobian_plan", None)
    if jac is None or plan is None:
        return None
    return jac, plan


# ----------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------


def demo_seed(out=print) -> None:
    import trackjac
    from torch.autograd.functional import jacobian as ag_jacobian

    utf = _stdout_utf8()
    out("1. The forum question: which zeros of a Jacobian are structural?")
    out("")
    out("   def func(a0, a1, a2):")
    out("       return torch.cat((a0 * 0, a1 * 2, a2 * 4))")
    out("")
    torch.manual_seed(0)
    args = tuple(torch.rand(2, dtype=torch.float64) for _ in range(3))
    J = torch.cat([j for j in ag_jacobian(seed_func, args)], dim=1)            # (6, 6) values
    P = torch.cat([p.to_dense() for p in trackjac.jacobian_sparsity(seed_func, *args)], dim=1)

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


def _bench_row(N: int, eng, check: bool):
    from torch.func import jacrev

    x = torch.rand(2, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(N))
    n = x.numel()
    jacobian, jacobian_plan = eng
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
    eng = _engine()
    if eng is None:
        out("   (the sparse Jacobian engine, trackjac.jacobian, is not available in this install)")
        return
    from torch.func import jacrev
    # warm up both code paths on a tiny grid so one-time costs do not land in the table
    xw = torch.rand(2, 4, 4, dtype=torch.float64)
    jacrev(brusselator)(xw)
    eng[0](brusselator, xw)
    rows = []
    for N in sizes:
        t = time.perf_counter()
        rows.append(_bench_row(N, eng, check))
        print(f"   [N = {N} done in {time.perf_counter() - t:.1f} s]", file=sys.stderr, flush=True)
    out(_table(["N", "n", "nnz", "colors", "mode", "jacrev", "jacobian", "plan build",
                "plan(x)", "jacrev/plan", "max err"], rows))
    out("")
    out("   jacrev: torch.func.jacrev, dense (n x n); jacobian: trackjac.jacobian from scratch")
    out("   (detection + coloring + evaluation); plan(x): a warm plan's evaluation at a new point;")
    out("   max err: largest difference from jacrev. float64, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.")


def cmd_demo(a) -> int:
    t0 = time.perf_counter()
    print("trackjac demo: exact Jacobian sparsity and sparse Jacobians for PyTorch")
    print("")
    demo_seed()
    print("")
    if not a.no_bench:
        demo_brusselator(a.sizes)
        print("")
    print(f"Done in {time.perf_counter() - t0:.1f} s. Next: README.md, examples/, "
          "python -m trackjac spy --help")
    return 0


# ----------------------------------------------------------------------------
# spy
# ----------------------------------------------------------------------------


class _Progress:
    """Stages with timings on stderr; a heartbeat while a stage runs longer than ``every`` s."""

    def __init__(self, enabled: bool = True, every: float = 2.0):
        self.enabled = enabled
        self.every = every
        self.t0 = time.perf_counter()
        self.ops = 0  # torch calls seen while tracking (updated by _OpCounter)

    def log(self, msg: str) -> None:
        if self.enabled:
            print(f"[trackjac {time.perf_counter() - self.t0:6.2f} s] {msg}", file=sys.stderr, flush=True)

    def stage(self, name: str, fn: Callable, *, count_ops: bool = False):
        self.log(name + " ...")
        t = time.perf_counter()
        stop = threading.Event()

        def beat():
            while not stop.wait(self.every):
                extra = f", {self.ops:,} torch calls so far" if count_ops else ""
                self.log(f"  {name}: still running, {time.perf_counter() - t:.0f} s{extra}")

        th = threading.Thread(target=beat, daemon=True) if self.enabled else None
        if th:
            th.start()
        try:
            if count_ops:
                with _OpCounter(self):
                    res = fn()
            else:
                res = fn()
        finally:
            stop.set()
            if th:
                th.join()
        extra = f", {self.ops:,} torch calls" if count_ops else ""
        self.log(f"{name}: done in {_fmt_time(time.perf_counter() - t)}{extra}")
        return res


class _OpCounter(torch.overrides.TorchFunctionMode):
    def __init__(self, progress: _Progress):
        super().__init__()
        self.progress = progress

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.progress.ops += 1
        return func(*args, **(kwargs or {}))


def load_function(spec: str) -> Callable:
    """``module:function`` (dotted module or a ``.py`` path; ``function`` may be dotted).

    The current directory is importable, like ``python -m``. An ``nn.Module`` class is
    instantiated without arguments.
    """
    if ":" not in spec:
        raise SystemExit(f"spy: expected module:function, got {spec!r} "
                         "(for example mymodel:forward or path/to/file.py:residual)")
    mod_name, attr = spec.rsplit(":", 1)
    if mod_name.endswith(".py") or os.sep in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.exists(path):
            raise SystemExit(f"spy: no such file: {mod_name}")
        name = os.path.splitext(os.path.basename(path))[0]
        specobj = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(specobj)
        sys.modules[name] = module
        sys.path.insert(0, os.path.dirname(path))
        specobj.loader.exec_module(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise SystemExit(f"spy: cannot import module {mod_name!r}: {e}")
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"spy: {mod_name!r} has no attribute {attr!r}")
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        try:
            obj = obj()
        except TypeError as e:
            raise SystemExit(f"spy: cannot build {spec} without arguments ({e}); write a function "
                             "that builds the module and calls it, and pass that instead")
    if not callable(obj):
        raise SystemExit(f"spy: {spec} is not callable")
    return obj


def _parse_shape(s: str) -> tuple:
    s = s.strip().strip("()[]")
    if s in ("", "scalar"):
        return ()
    try:
        return tuple(int(p) for p in s.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {s!r}: use comma-separated sizes, e.g. 10,10")


def _dtype(s: str) -> torch.dtype:
    d = getattr(torch, s, None)
    if not isinstance(d, torch.dtype) or not d.is_floating_point:
        raise argparse.ArgumentTypeError(f"--dtype must be a floating dtype (float32, float64 ...), got {s}")
    return d


def cmd_spy(a) -> int:
    import trackjac
    from .spy import spy

    prog = _Progress(enabled=not a.quiet)
    f = prog.stage(f"import {a.function}", lambda: load_function(a.function))
    g = torch.Generator().manual_seed(a.seed)
    shapes = a.shapes or []
    if not shapes:
        raise SystemExit("spy: give one --shapes per tensor argument, e.g. --shapes 10,10")
    args = [torch.randn(s, generator=g, dtype=a.dtype) for s in shapes]
    desc = ", ".join(str(tuple(s)) for s in shapes)
    prog.log(f"inputs: {desc}, {str(a.dtype).replace('torch.', '')}, random (seed {a.seed}); "
             f"{'local' if a.local else 'global'} pattern")
    pattern = prog.stage(
        "tracking",
        lambda: trackjac.jacobian_sparsity(f, *args, local=a.local, strict=a.strict),
        count_ops=True)
    plot = prog.stage("assembling the pattern", lambda: spy(pattern, width=a.width, height=a.height,
                                                              ascii=True if a.ascii else None,
                                                              title=a.function))
    if not a.no_color:
        try:
            from .coloring import color_columns, color_rows
        except ImportError:  # pragma: no cover - engine not installed
            color_rows = None
        if color_rows is not None and plot.nnz:
            pat = (plot.rows, plot.cols, plot.shape)

            def colors():
                return color_rows(pat).num_colors, color_columns(pat).num_colors

            kr, kc = prog.stage("coloring (rows and columns)", colors)
            prog.log(f"a sparse Jacobian needs {kr} vjp(s) (row colors) or {kc} jvp(s) (column "
                     f"colors) instead of {plot.shape[0]:,} vjps or {plot.shape[1]:,} jvps")
    text = prog.stage("rendering text", lambda: plot.text())
    print(text)
    if a.png:
        try:
            prog.stage(f"writing {a.png}", lambda: plot.save(a.png))
        except ImportError as e:
            print(str(e), file=sys.stderr)
            return 2
    return 0


# ----------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------


def _sizes(s: str) -> List[int]:
    try:
        return [int(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad sizes {s!r}: use e.g. 16,32,48")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trackjac",
        description="trackjac: exact Jacobian sparsity and sparse Jacobians for PyTorch.")
    sub = p.add_subparsers(dest="command", metavar="{demo,spy}")
    d = sub.add_parser("demo", help="the seed question answered, then a sparse Jacobian benchmark",
                       description="Answer the forum question (multiplied by zero vs never used), then "
                                   "compute the Brusselator's sparse Jacobian and time it against "
                                   "torch.func.jacrev.")
    d.add_argument("--sizes", type=_sizes, default=[24, 48],
                   help="Brusselator grid sizes N (n = 2 N^2 unknowns), default 24,48")
    d.add_argument("--no-bench", action="store_true", help="only the forum question, no timing table")
    d.set_defaults(run=cmd_demo)
    s = sub.add_parser(
        "spy", help="draw the Jacobian sparsity pattern of module:function",
        description="Track FUNCTION on random inputs of the given shapes (one --shapes per tensor "
                    "argument) and draw its Jacobian sparsity pattern. Stages go to stderr.",
        epilog="examples:\n"
               "  python -m trackjac spy trackjac.__main__:brusselator --shapes 2,16,16\n"
               "  python -m trackjac spy mymodel.py:residual --shapes 100,9 --shapes 1000,3 --png J.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("function", help="module:function, or path/to/file.py:function")
    s.add_argument("--shapes", action="append", type=_parse_shape, metavar="D1,D2,...",
                   help="shape of one tensor argument (repeat for each argument, in order)")
    s.add_argument("--dtype", type=_dtype, default=torch.float64, help="input dtype (default float64)")
    s.add_argument("--local", action="store_true",
                   help="local pattern at this random point (branches taken, constant zeros "
                        "dropped), not the global one")
    s.add_argument("--strict", action="store_true",
                   help="fail on ops without a rule and on Python control flow over tracked values")
    s.add_argument("--png", metavar="FILE", help="also write a PNG (needs matplotlib)")
    s.add_argument("--ascii", action="store_true", help="ASCII characters instead of Unicode braille")
    s.add_argument("--width", type=int, default=80, help="text width in characters (default 80)")
    s.add_argument("--height", type=int, default=None, help="text height in lines")
    s.add_argument("--seed", type=int, default=0, help="random seed of the inputs")
    s.add_argument("--no-color", action="store_true", help="skip the coloring summary")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(run=cmd_spy)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if getattr(a, "run", None) is None:
        parser.print_help()
        return 0
    return a.run(a)


if __name__ == "__main__":
    sys.exit(main())
