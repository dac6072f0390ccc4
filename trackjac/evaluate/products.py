"""Compressed products: one batched vjp (rows) or jvp (columns) per chunk of seeds."""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Tuple, Union

import sys
import warnings

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from .structure import Structure


def user_stacklevel() -> int:
    """Stack level of the first frame outside trackjac and torch, so warnings point at user code."""
    f, level = sys._getframe(1), 1
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if not (mod == "trackjac" or mod.startswith(("trackjac.", "torch"))):
            return level
        f, level = f.f_back, level + 1
    return 1


class ControlFlowChanged(ValueError):
    """The outputs no longer have the shapes the plan was built for."""


class SameDraws:
    """Every forward run of ``f`` in one evaluation starts from the same RNG state.

    An evaluation may run ``f`` several times (one jvp per chunk of colors, one
    per color in the loop, a recompute): with dropout or ``torch.rand_like`` in
    ``f``, each run would draw anew and the colors would belong to different
    functions. Calling the object before each run rewinds the generators of the
    CPU and of the inputs' CUDA device to the state captured at construction, so
    every run sees the draw of a single call of ``f``; afterwards the generators
    are where one call of ``f`` leaves them.
    """

    def __init__(self, device: torch.device):
        self.cuda = device if device.type == "cuda" else None
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(self.cuda) if self.cuda is not None else None

    def __call__(self) -> None:
        torch.set_rng_state(self.cpu_state)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.cuda)


def _rewind(draws: Optional[Callable]) -> None:
    if draws is not None:
        draws()


def vectorized(g: Callable, dargs: Tuple[Tensor, ...], mode: str, seeds: Iterable[Tuple[Tensor, ...]],
                check: Callable, draws: Optional[Callable] = None):
    """Batched vjp (rev) or jvp (fwd) over every chunk of seeds; ``check`` vets the outputs first.

    ``draws`` (a :class:`SameDraws`) is called before each forward run of ``g``; inside
    the batched jvp, random ops draw once for the whole batch (``randomness="same"``).
    """
    if mode == "rev":
        _rewind(draws)
        outs, vjp_fn = torch.func.vjp(g, *dargs)
        check(outs)
        comps = [torch.func.vmap(vjp_fn)(s) for s in seeds]
        return tuple(o.detach() for o in outs), comps

    def jv(*tangents):
        return torch.func.jvp(g, dargs, tangents)

    outs, comps = None, []
    for s in seeds:   # a list, or a generator building each chunk's seeds when it is used
        _rewind(draws)
        o, t = torch.func.vmap(jv, randomness="same")(*s)
        outs = tuple(x[0] for x in o)  # the primal is not batched: vmap broadcast it
        check(outs)
        comps.append(t)
    if outs is None:   # no colors: an empty pattern
        with torch.no_grad():
            outs = g(*dargs)
        check(outs)
    return outs, comps


def per_color(g: Callable, dargs: Tuple[Tensor, ...], mode: str, seeds: Iterable[Tuple[Tensor, ...]],
              check: Callable, draws: Optional[Callable] = None):
    """One torch.autograd call per color: slower, but works wherever autograd does.

    ``draws`` is called before each forward run of ``g`` (one in reverse mode, one
    per color in forward mode), so that every color sees the same random draws."""
    if mode == "rev":
        _rewind(draws)
        with torch.enable_grad():
            leaves = [a.detach().requires_grad_() for a in dargs]
            outs = g(*leaves)
            check(outs)
            comps = [vjp_rows(outs, leaves, s) for s in seeds]
        return tuple(o.detach() for o in outs), comps

    outs, comps = None, []
    for s in seeds:
        cols = []
        for c in range(s[0].shape[0]):
            _rewind(draws)
            with fwAD.dual_level():
                res = g(*[fwAD.make_dual(a, t[c]) for a, t in zip(dargs, s)])
                pairs = [fwAD.unpack_dual(o) for o in res]
                outs = tuple(p.primal.detach() for p in pairs)
                check(outs)
                cols.append([torch.zeros_like(p.primal) if p.tangent is None else p.tangent for p in pairs])
        comps.append(tuple(torch.stack([col[j] for col in cols]) for j in range(len(cols[0]))))
    if outs is None:
        with torch.no_grad():
            outs = g(*dargs)
        check(outs)
    return outs, comps


def vjp_rows(outs: Tuple[Tensor, ...], leaves, cotangents: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
    """One ``torch.autograd.grad`` per cotangent row ``cotangents[j][c]``; per leaf, the stacked
    ``(rows, *leaf.shape)`` vector-Jacobian products."""
    live = [j for j, o in enumerate(outs) if o.requires_grad]
    rows = []
    for c in range(cotangents[0].shape[0]) if cotangents else []:
        if live:
            gr = torch.autograd.grad([outs[j] for j in live], leaves, [cotangents[j][c] for j in live],
                                     retain_graph=True, allow_unused=True)
        else:
            gr = [None] * len(leaves)
        rows.append([torch.zeros_like(a) if x is None else x for a, x in zip(leaves, gr)])
    return tuple(torch.stack([r[i] for r in rows]) for i in range(len(leaves)))


def bytes_per_color(st: Structure) -> int:
    """Seed and compressed product of one color: ``outputs + inputs`` values."""
    specs = list(st.out_specs) + list(st.in_specs)
    return sum(s.shape.numel() * s.dtype.itemsize for s in specs)


def chunk_of(chunk_size: Optional[int], memory_budget: Optional[int], st: Structure) -> Optional[int]:
    """The colors per batched product: ``chunk_size``, or what ``memory_budget`` bytes allow."""
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
    if memory_budget is None:
        return chunk_size
    if not isinstance(memory_budget, int) or memory_budget < 1:
        raise ValueError(f"memory_budget must be a positive number of bytes or None; got {memory_budget!r}")
    if chunk_size is not None:
        raise ValueError("give chunk_size or memory_budget, not both")
    return max(1, memory_budget // bytes_per_color(st))


#: ``torch.compile`` modes a plan's ``compile=`` accepts besides True/False, passed through;
#: on CUDA, "reduce-overhead" and "max-autotune" capture the compiled products in CUDA graphs
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

CompileOption = Union[bool, str]


def check_compile(compile: CompileOption) -> None:
    """Reject a ``compile=`` that is neither a bool nor a ``torch.compile`` mode."""
    if isinstance(compile, bool) or compile in COMPILE_MODES:
        return
    raise ValueError(f"compile must be True, False or a torch.compile mode {COMPILE_MODES}; got {compile!r}")


#: inductor options of compiled products, where this torch has them. Inductor's CPU code generator
#: gives up vectorizing a loop where most loads are not contiguous in its innermost variable, and a
#: batched 1-D stencil (``roll`` lowers to modular indices) is that case: the Kuramoto-Sivashinsky
#: products at n = 32,768 ran 1.2 ms (forward) and 3.1 ms (reverse) as scalar loops, 0.29 and 0.43 ms
#: vectorized through gather buffers; 2-D and 3-D stencils measured the same either way.
INDUCTOR_OPTIONS = {"cpp.enable_tiling_heuristics": False}


def inductor_options(mode: Optional[str]) -> dict:
    """``INDUCTOR_OPTIONS`` this torch knows, on top of ``mode``'s; {} if it knows none."""
    from torch._inductor import config  # only when compiling: importing inductor takes seconds

    known = {}
    for key, value in INDUCTOR_OPTIONS.items():
        section, _, name = key.rpartition(".")
        if hasattr(getattr(config, section, None) if section else config, name):
            known[key] = value
    if not known:
        return {}
    base = dict(torch._inductor.list_mode_options(mode)) if mode not in (None, "default") else {}
    return {**base, **known}


def try_compile(fn: Callable, compile: CompileOption = True) -> Optional[Callable]:
    """``torch.compile(fn)`` in mode ``compile`` (True: the default mode), or None (with a
    warning) when compiling is unavailable.

    ``dynamic=False``: a plan's shapes never change, and static shapes let inductor fold
    every size and stride into the kernels (no recompiles, no symbolic-shape guards)."""
    check_compile(compile)
    mode = None if compile is True else compile
    try:
        options = inductor_options(mode)
        if options:   # torch.compile takes a mode or options, not both: the mode's options, amended
            return torch.compile(fn, dynamic=False, options=options)
        return torch.compile(fn, dynamic=False, mode=mode)
    except Exception as err:  # e.g. no compiler toolchain, unsupported platform
        warnings.warn(f"trackjac: torch.compile unavailable ({type(err).__name__}: {err}); using eager",
                      RuntimeWarning, stacklevel=3)
        return None
