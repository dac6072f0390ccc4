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

from .coloring import color_columns, color_rows
from .demo import _fmt_time, brusselator, demo_brusselator, demo_seed, seed_func  # noqa: F401  (spec "trackjac.__main__:brusselator")
from .spy_plot import spy
from .tracer import jacobian_sparsity

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


def _track(f: Callable, args: list, a) -> object:
    try:
        return jacobian_sparsity(f, *args, local=a.local, strict=a.strict, result="pattern")
    except RuntimeError as e:
        if "dtype" not in str(e):
            raise
        # a module or tensor inside f at another dtype than the random inputs
        raise SystemExit(f"spy: {a.function} failed on {str(a.dtype).replace('torch.', '')} inputs: {e}\n"
                         "pass --dtype with the dtype of its parameters and constants (e.g. --dtype float32)")


def cmd_spy(a) -> int:
    prog = _Progress(enabled=not a.quiet)
    f = prog.stage(f"import {a.function}", lambda: load_function(a.function))
    if isinstance(f, torch.nn.Module):  # its parameters must match the inputs' dtype
        f = f.to(a.dtype)
        prog.log(f"module {type(f).__name__} converted to {str(a.dtype).replace('torch.', '')}")
    g = torch.Generator().manual_seed(a.seed)
    shapes = a.shapes or []
    if not shapes:
        raise SystemExit("spy: give one --shapes per tensor argument, e.g. --shapes 10,10")
    args = [torch.randn(s, generator=g, dtype=a.dtype) for s in shapes]
    desc = ", ".join(str(tuple(s)) for s in shapes)
    prog.log(f"inputs: {desc}, {str(a.dtype).replace('torch.', '')}, random (seed {a.seed}); "
             f"{'local' if a.local else 'global'} pattern")
    pattern = prog.stage("tracking", lambda: _track(f, args, a), count_ops=True)
    # a SparsityPattern knows which blocks are outputs and inputs, and the arguments' names
    plot = prog.stage("assembling the pattern", lambda: spy(pattern, width=a.width, height=a.height,
                                                              ascii=True if a.ascii else None,
                                                              title=a.function))
    if not a.no_color:
        if plot.nnz:
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
    d = sub.add_parser("demo", help="why a Jacobian entry is zero (multiplied by zero or never used), then a "
                       "sparse Jacobian benchmark",
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
    # Run the copy imported as trackjac.__main__: frames of a module named "__main__" are not
    # recognized as trackjac's, and warnings would point at this file instead of the user's line.
    from trackjac.__main__ import main as _main
    sys.exit(_main())
