"""Reusable sparse-Jacobian plans: seeded batched vjp/jvp and decompression.

A :class:`Plan` holds everything that depends only on the sparsity pattern,
precomputed once and kept on the inputs' device:

- *seeds*: one 0/1 direction per color, (colors, outputs) for reverse mode
  (cotangents) or (colors, inputs) for forward mode (tangents);
- *decompression indices*: for every structural nonzero (i, j), where its value
  sits in the compressed product, ``C[color(i), j]`` (reverse) or
  ``C[color(j), i]`` (forward), as the coloring result says
  (:meth:`~trackjac.coloring.Coloring.compressed_index`);
- the index arrays of the requested layout (COO / CSR / BSR).

Evaluating it is one batched vjp (``torch.func.vmap`` over ``torch.func.vjp``)
or jvp per chunk of colors, a gather per block, and a sparse constructor. Peak
memory is about ``nnz + chunk x (outputs + inputs)`` values plus what the
batched vjp/jvp of ``f`` itself needs; nothing of size outputs x inputs.

The plan encodes the *global* pattern traced at build time, so it is exact at
every point where ``f`` takes the same Python control flow (same branches,
same shapes). Where ``f`` branched on a tracked value at build time, each call
replays the values Python reads and raises on another path (:mod:`.paths`);
otherwise ``check`` compares rows and columns with plain autograd.
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._threads import intra_op_threads
from ..coloring import Coloring
from .assemble import Block, check_layout, placement, merge
from .products import (check_compile, chunk_of, CompileOption, ControlFlowChanged, SameDraws, per_color,
                       try_compile, user_stacklevel, vectorized)
from .structure import check_args, Structure, bind
from .verify import compare

__all__ = ["Plan"]

# autograd nodes whose torch.func batching is known to give wrong derivatives, and their op
_SUSPECTS = {"CdistBackward0": "torch.cdist", "EuclideanDistBackward0": "torch.cdist"}


def _backward_ops(g: Callable, dargs: Tuple[Tensor, ...], draws: SameDraws) -> List[str]:
    """Names of the autograd nodes of ``g`` at ``dargs`` (first seen first), for messages."""
    try:
        draws()
        with torch.enable_grad():
            outs = g(*[a.detach().requires_grad_() for a in dargs])
        names: List[str] = []
        todo = [o.grad_fn for o in outs if o.grad_fn is not None]
        seen = set()
        while todo:
            node = todo.pop(0)
            if node is None or node in seen:
                continue
            seen.add(node)
            n = type(node).__name__
            if n != "AccumulateGrad" and n not in names:
                names.append(n)
            todo.extend(nf for nf, _ in node.next_functions)
        return names
    except Exception:
        return []


class Plan:
    """A prepared sparse Jacobian of ``f``: call it at new points of the same specs.

    Build it with :func:`trackjac.jacobian_plan`. ``plan(*args)`` returns the
    Jacobian (nested like ``torch.autograd.functional.jacobian``),
    ``plan.value_and_jacobian(*args)`` also returns ``f(*args)``.
    Attributes: ``pattern`` (sparse COO bool, nested), ``num_colors``, ``mode``
    ("rev": one vjp per row color; "fwd": one jvp per column color),
    ``layout``, ``blocksize``, ``chunk_size``, ``coloring``, ``nnz``;
    ``constant_entries`` ("recompute": every entry from the products, or "reuse"),
    ``constant_nnz`` and ``variable_nnz`` (None where the entries were not classified).
    """

    constant_entries = "recompute"
    constant_nnz: Optional[int] = None
    variable_nnz: Optional[int] = None

    def __init__(
        self,
        f: Callable,
        structure: Structure,
        mode: str,
        coloring: Coloring,
        layout=torch.sparse_coo,
        blocksize: Optional[Tuple[int, int]] = None,
        chunk_size: Optional[int] = None,
        compile: CompileOption = False,
        memory_budget: Optional[int] = None,
        threads: Optional[int] = None,
    ):
        check_layout(layout)
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise ValueError(f"threads must be None (measure), 0 (the caller's setting) or a positive int; "
                             f"got {threads!r}")
        self._threads = threads
        self._calls = 0
        self._timed: dict = {}   # intra-op thread count -> seconds of one evaluation (trial calls)
        if mode not in ("rev", "fwd"):
            raise ValueError(f"mode must be 'rev' or 'fwd' here; got {mode!r}")
        chunk_size = chunk_of(chunk_size, memory_budget, structure)
        st = structure
        self.device, blocksize = placement(st, layout, blocksize)
        self.f, self.structure = f, st
        self.layout, self.blocksize = layout, blocksize
        self._chunk_arg = chunk_size
        self._set_coloring(mode, coloring)
        self._fallback = False  # set when torch.func cannot transform f: loop over colors
        # the batched product has been compared with plain autograd on a few colors (first call)
        self._audited = False
        # mode="auto" picked fwd: how to get a row coloring if f has no forward-mode derivative
        self._rev_coloring: Optional[Callable[[], Coloring]] = None
        self._compiled: Optional[Callable] = None
        self.compile = compile
        check_compile(compile)
        if compile:
            self._compiled = try_compile(self._pure_compressed, compile)

    # -- construction -------------------------------------------------------------

    def _set_coloring(self, mode: str, coloring: Coloring) -> None:
        if coloring.mode != mode:
            raise ValueError(f"mode={mode!r} needs a {'row' if mode == 'rev' else 'column'} coloring; "
                             f"got one of the {coloring.axis}")
        self.mode, self.coloring = mode, coloring
        self.num_colors = k = coloring.num_colors
        cs = self._chunk_arg
        self.chunk_size = max(k, 1) if cs is None else min(cs, max(k, 1))
        self._build(self.structure)

    def _build(self, st: Structure) -> None:
        """Seeds and decompression indices; the coloring says which side is seeded and
        where each nonzero lands in the compressed product."""
        ro, co = st.offsets()
        cl, k, dev = self.coloring, self.num_colors, self.device
        grows, gcols, _ = st.global_coo()
        bounds = list(range(0, k, self.chunk_size)) + [k]
        self._chunks = list(zip(bounds[:-1], bounds[1:]))
        # per seeded argument: each vertex's color, -1 where its row/column is empty
        seed_colors = cl.seed_colors(grows, gcols)
        self._seed_colors = [
            (seed_colors[o : o + s.shape.numel()].to(dev), s)
            for s, o in zip(cl.seeded(st.out_specs, st.in_specs), cl.seeded(ro, co))
        ]
        # one chunk: seeds built once; several: built per chunk when used, so that at most
        # chunk_size x (outputs or inputs) seed values exist at a time
        self._seed_cache = [self._seed_chunk(c0, c1) for c0, c1 in self._chunks] if len(self._chunks) <= 1 else None
        # decompression: value of (r, c) in block (j, i) = compressed[part][color, position],
        # part being the block's output (column coloring) or input (row coloring)
        self._blocks: List[List[Block]] = []
        self._gather: List[List[Tuple[int, List[Tuple[Optional[Tensor], Tensor]]]]] = []
        for j, row in enumerate(st.blocks):
            brow, grow = [], []
            for i, (r, c) in enumerate(row):
                m, n = st.out_specs[j].shape.numel(), st.in_specs[i].shape.numel()
                brow.append(Block(r, c, (m, n), self.layout, self.blocksize, dev))
                col, pos = cl.compressed_index(r, c, (ro[j], co[i]))
                width = cl.compressed(m, n)
                per_chunk = []
                for c0, c1 in self._chunks:
                    if len(self._chunks) == 1:
                        per_chunk.append((None, (col * width + pos).to(dev)))
                    else:
                        sel = ((col >= c0) & (col < c1)).nonzero().squeeze(1)
                        src = (col.index_select(0, sel) - c0) * width + pos.index_select(0, sel)
                        per_chunk.append((sel.to(dev), src.to(dev)))
                grow.append((cl.compressed(j, i), per_chunk))
            self._blocks.append(brow)
            self._gather.append(grow)
        self.nnz = sum(b.nnz for row in self._blocks for b in row)

    def _seed_chunk(self, c0: int, c1: int) -> Tuple[Tensor, ...]:
        """One-hot seeds of colors ``c0 .. c1 - 1``, one tensor ``(c1 - c0, *shape)`` per argument."""
        out = []
        for cv, s in self._seed_colors:
            ids = torch.arange(c0, c1, device=cv.device).unsqueeze(1)
            out.append((cv.unsqueeze(0) == ids).to(s.dtype).view(c1 - c0, *s.shape))
        return tuple(out)

    @property
    def _seeds(self):
        if self._seed_cache is not None:
            return self._seed_cache
        return (self._seed_chunk(c0, c1) for c0, c1 in self._chunks)

    # -- evaluation ---------------------------------------------------------------

    def _bind(self, args: Sequence[Any]) -> Tuple[Callable, Tuple[Tensor, ...]]:
        """``f`` as a function of the differentiated arguments only, returning a tuple."""
        return bind(self.f, args, self.structure.diff_pos)

    def _compressed(self, g: Callable, dargs: Tuple[Tensor, ...]):
        """Outputs and, per chunk, the compressed product (tuple over the unseeded side)."""
        check = self._check_outputs
        # one random draw for every forward run of f in this evaluation (dropout, rand_like)
        draws = SameDraws(self.device)
        if self._fallback:
            return per_color(g, dargs, self.mode, self._seeds, check, draws)
        try:
            res = vectorized(g, dargs, self.mode, self._seeds, check, draws)
        except ControlFlowChanged:
            raise
        except Exception as err:  # torch.func may not support f (old-style autograd.Function, ...)
            try:
                res = per_color(g, dargs, self.mode, self._seeds, check, draws)
            except ControlFlowChanged:
                raise
            except Exception as loop_err:
                if self.mode == "fwd" and self._rev_coloring is not None:
                    return self._switch_to_rev(g, dargs, loop_err)
                if self.mode == "fwd":
                    raise RuntimeError(
                        f"trackjac: forward mode cannot differentiate f ({type(loop_err).__name__}: "
                        f"{str(loop_err).splitlines()[0][:200]}); use mode='rev'") from err
                raise err
            warnings.warn(
                f"trackjac: torch.func could not transform f ({type(err).__name__}: {err}); "
                "evaluating one color at a time with torch.autograd instead",
                RuntimeWarning,
                stacklevel=4,
            )
            self._fallback = True
            return res
        if not self._audited:
            self._audited = True
            res = self._audit(g, dargs, res, draws)
        return res

    # colors of the batched product compared with unbatched autograd on the first call
    AUDIT_COLORS = 2
    _AUDIT_TOL = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-3, 1e-5)}

    def _audit(self, g: Callable, dargs: Tuple[Tensor, ...], res, draws: SameDraws):
        """Compare a few random colors of the batched product with one plain torch.autograd
        call each (``per_color`` on those seeds). ``torch.func.vmap`` over vjp/jvp is wrong
        for some ops in torch itself (``torch.cdist`` on small inputs); where the two
        disagree, warn and evaluate this plan one color at a time from now on."""
        outs, comps = res
        k = self.num_colors
        if k == 0:
            return res
        gen = torch.Generator().manual_seed(0)
        ids = torch.randperm(k, generator=gen)[: self.AUDIT_COLORS].sort().values
        seeds = self._seed_ids(ids)
        try:
            _, ref = per_color(g, dargs, self.mode, [seeds], lambda o: None, draws)
        except Exception:  # plain autograd cannot run f where torch.func can: nothing to compare with
            return res
        cs = self.chunk_size
        for part, want in enumerate(ref[0]):
            got = torch.stack([comps[int(c) // cs][part][int(c) % cs] for c in ids])
            rtol, atol = self._AUDIT_TOL.get(want.dtype, (1e-1, 1e-2))
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            err = (got - want).abs()
            if bool((err > atol * scale + rtol * want.abs()).any()):
                self._warn_batched_wrong(g, dargs, draws, float(err.max()), scale)
                self._fallback = True
                return per_color(g, dargs, self.mode, self._seeds, self._check_outputs, draws)
        return res

    def _seed_ids(self, ids: Tensor) -> Tuple[Tensor, ...]:
        """One-hot seeds of the colors ``ids``, one tensor ``(len(ids), *shape)`` per argument."""
        out = []
        for cv, s in self._seed_colors:
            sel = ids.to(cv.device).unsqueeze(1)
            out.append((cv.unsqueeze(0) == sel).to(s.dtype).view(ids.numel(), *s.shape))
        return tuple(out)

    def _warn_batched_wrong(self, g: Callable, dargs: Tuple[Tensor, ...], draws: SameDraws,
                            err: float, scale: float) -> None:
        name = getattr(self.f, "__qualname__", None) or type(self.f).__name__
        ops = _backward_ops(g, dargs, draws)
        known = sorted({_SUSPECTS[o] for o in ops if o in _SUSPECTS})
        where = (f"; the batched derivative of {', '.join(known)} is known to be wrong in torch.func"
                 if known else (f"; its autograd graph has {', '.join(ops[:8])}" if ops else ""))
        warnings.warn(
            f"trackjac: the batched {'vjp' if self.mode == 'rev' else 'jvp'} (torch.func.vmap) of {name} "
            f"disagrees with plain torch.autograd on the checked colors (max difference {err:.3g}, "
            f"scale {scale:.3g}){where}. This plan evaluates one color at a time with torch.autograd "
            "from now on.", RuntimeWarning, stacklevel=user_stacklevel())

    def _switch_to_rev(self, g: Callable, dargs: Tuple[Tensor, ...], err: Exception):
        """mode="auto" chose fwd, but f has no forward-mode derivative (a custom Function
        without ``jvp``): color rows and use reverse mode from now on."""
        warnings.warn(
            f"trackjac: forward mode cannot differentiate f ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120]}); mode='auto' switches this plan to reverse mode",
            RuntimeWarning, stacklevel=5)
        coloring, self._rev_coloring = self._rev_coloring(), None
        self._set_coloring("rev", coloring)
        return self._compressed(g, dargs)

    def _pure_compressed(self, *args, seeds=None):
        """The batched vjp/jvp alone, without fallbacks: what ``compile=True`` compiles.

        ``seeds``: one chunk's seeds (forward mode with several chunks), else every chunk.
        The decompression gather stays eager: fused into the compiled graph it
        made the whole kernel several times slower on CPU.
        """
        g, dargs = self._bind(args)
        return vectorized(g, dargs, self.mode, self._seeds if seeds is None else [seeds], lambda outs: None)

    def _compiled_products(self, args: Sequence[Any], draws: SameDraws):
        """The compiled products. Forward mode runs ``f`` once per chunk: each chunk is its own
        compiled call, the RNG rewound before it, so that every chunk sees the same draw."""
        assert self._compiled is not None
        if self.mode == "rev" or len(self._chunks) <= 1:
            return self._compiled(*args)
        outs, comps = None, []
        for s in self._seeds:
            draws()
            outs, c = self._compiled(*args, seeds=s)
            comps.extend(c)
        return outs, comps

    def _evaluate(self, args: Sequence[Any]):
        """Outputs and the values of every block (row-major, one tensor per block)."""
        g, dargs = self._bind(args)
        return self._decompress(*self._compressed(g, dargs))

    def _decompress(self, outs, comps):
        st, cl = self.structure, self.coloring
        values = []
        for j, row in enumerate(self._gather):
            vrow = []
            for i, (part, per_chunk) in enumerate(row):
                parts = []
                for (sel, src), comp in zip(per_chunk, comps):
                    parts.append((sel, comp[part].reshape(-1).index_select(0, src)))
                # the compressed products have the dtype of the side they run along
                dtype = cl.compressed(st.out_specs[j].dtype, st.in_specs[i].dtype)
                vrow.append(merge(parts, self._blocks[j][i].nnz, dtype, self.device))
            values.append(vrow)
        return outs, values

    # calls that time an evaluation with the caller's thread count, then with one thread (the
    # first call pays warm-up and the audit, so it is not a fair trial)
    _TRIALS = (1, 2)

    @property
    def threads(self) -> Optional[int]:
        """Intra-op threads used for evaluation: an int, 0 for the caller's setting, None while
        still measuring (``threads=None``: calls 2 and 3 time both, the faster wins)."""
        return self._threads

    def _threads_for_call(self) -> Tuple[int, Optional[int]]:
        """(threads for this call, the trial it times or None)."""
        if self._threads is not None:
            return self._threads, None
        caller = torch.get_num_threads()
        if caller == 1:
            return 0, None
        k = self._calls
        if k == self._TRIALS[0]:
            return caller, caller
        if k == self._TRIALS[1]:
            return 1, 1
        return 0, None

    def _run(self, args: Sequence[Any]):
        n, trial = self._threads_for_call()
        self._calls += 1
        start = time.perf_counter()
        with intra_op_threads(n):
            res = self._run_threads(args)
        if trial is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._timed[trial] = time.perf_counter() - start
            if len(self._timed) == 2:  # one thread only where it measured faster
                self._threads = 1 if self._timed[1] < min(t for k, t in self._timed.items() if k != 1) else 0
        return res

    def _run_threads(self, args: Sequence[Any]):
        self._validate(args)
        if self.structure.path is not None:  # f branched on a tracked value at build time
            start = SameDraws(self.device)
            self.structure.path.check(args)
            start()  # the replay must not use up the draw the evaluation (and ``check``) sees
        if self._compiled is not None:
            try:
                draws = SameDraws(self.device)
                outs, comps = self._compiled_products(args, draws)
                self._check_outputs(outs)
                if not self._audited:  # the compiled product is checked like the eager one
                    self._audited = True
                    outs, comps = self._audit(*self._bind(args), (outs, comps), draws)
                    if self._fallback:
                        self._compiled = None
                outs, values = self._decompress(outs, comps)
            except Exception as err:
                outs, values = self._evaluate(args)  # raises the user-facing error, if any
                warnings.warn(f"trackjac: compiled plan failed ({type(err).__name__}: {err}); using eager",
                              RuntimeWarning, stacklevel=3)
                self._compiled = None
        else:
            outs, values = self._evaluate(args)
            if self._fallback:
                self._compiled = None  # the batched product cannot be used for this f
        jac = self.structure.nest(
            [[self._blocks[j][i].assemble(v) for i, v in enumerate(row)] for j, row in enumerate(values)]
        )
        return outs, jac

    def __call__(self, *args):
        """The Jacobian at ``args`` (same shapes, dtypes and devices as at build time)."""
        return self._run(args)[1]

    def value_and_jacobian(self, *args):
        """``(f(*args), jacobian)`` from one evaluation."""
        outs, jac = self._run(args)
        value = tuple(o.detach() for o in outs) if self.structure.out_tuple else outs[0].detach()
        return value, jac

    def check(self, *args, **kwargs) -> None:
        """Compare random rows/columns at ``args`` with plain autograd; see :func:`trackjac.check_jacobian`.

        A random ``f`` (dropout) is compared with the draw the plan evaluated."""
        draws = SameDraws(self.device)
        jac = self(*args)
        compare(self.f, args, jac, draws=draws, **kwargs)

    @property
    def pattern(self):
        """The structural pattern, sparse COO bool, nested like the Jacobian."""
        return self.structure.nest(self.structure.patterns(self.device))

    # -- validation ---------------------------------------------------------------

    def _validate(self, args: Sequence[Any]) -> None:
        check_args(self.structure, args)

    def _check_outputs(self, outs: Sequence[Tensor]) -> None:
        specs = self.structure.out_specs
        if len(outs) != len(specs) or any(o.shape != s.shape for o, s in zip(outs, specs)):
            got = [tuple(o.shape) for o in outs]
            raise ControlFlowChanged(f"f returned outputs of shapes {got}, the plan was built for "
                             f"{[tuple(s.shape) for s in specs]}: the control flow changed, build a new plan")

    def __repr__(self) -> str:
        st = self.structure
        M, N = (lambda o, c: (o[-1], c[-1]))(*st.offsets())
        return (f"Plan(mode={self.mode!r}, num_colors={self.num_colors}, nnz={self.nnz}, "
                f"shape=({M}, {N}), layout={self.layout}, chunk_size={self.chunk_size}, "
                f"compiled={self._compiled is not None})")
