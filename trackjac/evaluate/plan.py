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
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._threads import intra_op_threads
from ..coloring import IDENTITY, Coloring
from ..tracer.signature import Signature, flat_call
from .assemble import Block, blocksize_of, check_layout, placement, merge
from .state import jacobian_from_state, jacobian_state
from .products import (check_compile, chunk_of, CompileOption, ControlFlowChanged, SameDraws, per_color,
                       try_compile, user_stacklevel, vectorized)
from .structure import check_args, positional, Structure, bind
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


class _Slab:
    """Values of a full block under the identity coloring, read straight off the compressed
    product (k, ...): rows ``r0 .. r0 + m`` (rev: the product is ``J`` itself) or the transpose
    of columns ``c0 .. c0 + n`` (fwd: it is ``J^T``); no index arrays, no gather."""

    def __init__(self, mode: str, r0: int, c0: int, m: int, n: int):
        self.mode, self.r0, self.c0, self.m, self.n = mode, r0, c0, m, n

    def __call__(self, comp: Tensor) -> Tensor:
        m, n = self.m, self.n
        if self.mode == "rev":
            return comp.reshape(-1)[self.r0 * n:(self.r0 + m) * n]   # a view: row-major already
        return comp.reshape(-1, m)[self.c0:self.c0 + n].t().reshape(-1)


Source = Union[Tensor, _Slab]  # where a block's values sit in its compressed product


def take(comp: Tensor, src: Source) -> Tensor:
    """The values ``src`` selects from one compressed product ``comp``."""
    return comp.reshape(-1).index_select(0, src) if isinstance(src, Tensor) else src(comp)


class Plan:
    """A prepared sparse Jacobian of ``f``: call it at new points of the same specs.

    Build it with :func:`trackjac.jacobian_plan`. ``plan(*args, **kwargs)`` returns the
    Jacobian (nested like :func:`trackjac.jacobian_sparsity` nests the pattern: for plain
    positional tensors like ``torch.autograd.functional.jacobian``, for pytrees or ``argnums``
    like ``torch.func.jacrev``), ``plan.value_and_jacobian(*args, **kwargs)`` also returns
    ``f(*args, **kwargs)``; with ``has_aux`` both also return ``aux``.
    Attributes: ``pattern`` (sparse COO bool, nested), ``num_colors``, ``mode``
    ("rev": one vjp per row color; "fwd": one jvp per column color),
    ``layout``, ``blocksize``, ``chunk_size``, ``coloring``, ``nnz``;
    ``constant_entries`` ("recompute": every entry from the products, or "reuse"),
    ``constant_nnz`` and ``variable_nnz`` (None where the entries were not classified).

    With at most ``LOOP_TRIAL_COLORS`` colors, the first call after the first one that is not
    a thread trial (``threads``) also times one plain autograd call per color against the batched
    product (``torch.func.vmap``), on the CPU and eager, and later calls use the faster: at a
    few colors the vmap machinery can cost more than it saves (Brusselator with 2 colors).
    """

    constant_entries = "recompute"
    constant_nnz: Optional[int] = None
    variable_nnz: Optional[int] = None
    # torch.func-style call (pytrees, argnums, kwargs, has_aux) that ``f`` flattens; None: positional
    signature: Optional[Signature] = None

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
        # one autograd call per color measured faster than the batched product (few colors: the
        # vmap machinery costs more than it saves); None until timed (see _product_trial)
        self._looped: Optional[bool] = None
        self._time_products = False  # this call times both products
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
        grows, gcols, (M, N) = st.global_coo()
        bounds = list(range(0, k, self.chunk_size)) + [k]
        self._chunks = list(zip(bounds[:-1], bounds[1:]))
        # per seeded argument: each vertex's color, -1 where its row/column is empty (none is
        # when the pattern holds all M x N entries)
        seed_colors = cl.colors if grows.numel() == M * N else cl.seed_colors(grows, gcols)
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
        self._gather: List[List[Tuple[int, List[Tuple[Optional[Tensor], Source]]]]] = []
        # every vertex its own color, in order, in one chunk: compressed row v is vertex v's product
        full_identity = (len(self._chunks) == 1 and cl.order == IDENTITY
                         and torch.equal(cl.colors, torch.arange(k)))
        for j, row in enumerate(st.blocks):
            brow, grow = [], []
            for i, (r, c) in enumerate(row):
                m, n = st.out_specs[j].shape.numel(), st.in_specs[i].shape.numel()
                brow.append(Block(r, c, (m, n), self.layout, blocksize_of(self.blocksize, j, i), dev))
                if full_identity and r.numel() == m * n:  # the product holds this block as is
                    grow.append((cl.compressed(j, i), [(None, _Slab(cl.mode, ro[j], co[i], m, n))]))
                    continue
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
            # zeros and one write per seeded vertex: a (colors x vertices) compare and cast
            # cost several passes over what is 1M values for a dense 1024 x 1024 pattern
            seed = torch.zeros(c1 - c0, cv.numel(), dtype=s.dtype, device=cv.device)
            v = ((cv >= c0) & (cv < c1)).nonzero().squeeze(1)
            seed[cv.index_select(0, v) - c0, v] = 1
            out.append(seed.view(c1 - c0, *s.shape))
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
        if self._fallback or self._looped:
            return per_color(g, dargs, self.mode, self._seeds, check, draws)
        try:
            start = time.perf_counter()
            res = vectorized(g, dargs, self.mode, self._seeds, check, draws)
            if self._time_products:
                self._product_trial(g, dargs, draws, time.perf_counter() - start)
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

    # plans with at most this many colors time one autograd call per color against the batched
    # product once; with more, the per-color Python loop is not worth a trial
    LOOP_TRIAL_COLORS = 32

    def _product_trial(self, g: Callable, dargs: Tuple[Tensor, ...], draws: SameDraws, batched: float) -> None:
        """Time the per-color product on this call's arguments; keep it if it beat the batched one
        (measured just before, same thread count). The values returned are the batched ones."""
        self._time_products = False
        start = time.perf_counter()
        try:
            per_color(g, dargs, self.mode, self._seeds, lambda outs: None, draws)
        except Exception:  # plain autograd cannot run f where torch.func can: stay batched
            self._looped = False
            return
        self._looped = time.perf_counter() - start < batched

    def _wants_product_trial(self, thread_trial: Optional[int]) -> bool:
        """Once, on the first call after the first (it pays warm-up and the audit) that is not a
        thread trial, on the CPU, eager, batched, with few colors."""
        return (self._looped is None and thread_trial is None and self._calls >= 1 and self._audited
                and not self._fallback and self._compiled is None and self.device.type == "cpu"
                and 0 < self.num_colors <= self.LOOP_TRIAL_COLORS)

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
            # detached: the audit compares numbers and must not join the caller's graph
            got = torch.stack([comps[int(c) // cs][part][int(c) % cs] for c in ids]).detach()
            want = want.detach()
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
        values = []
        for j, row in enumerate(self._gather):
            vrow = []
            for i, (part, per_chunk) in enumerate(row):
                if len(per_chunk) == 1 and per_chunk[0][0] is None:  # one chunk: a gather, no merge
                    vrow.append(take(comps[0][part], per_chunk[0][1]))
                    continue
                parts = [(sel, take(comp[part], src)) for (sel, src), comp in zip(per_chunk, comps)]
                vrow.append(merge(parts, self._blocks[j][i].nnz, self._value_dtype(j, i), self.device))
            values.append(vrow)
        return outs, values

    def _value_dtype(self, j: int, i: int) -> torch.dtype:
        """The compressed products have the dtype of the side they run along."""
        st = self.structure
        return self.coloring.compressed(st.out_specs[j].dtype, st.in_specs[i].dtype)

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
        self._time_products = self._wants_product_trial(trial)
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

    def _flat(self, args: Sequence[Any], kwargs: dict) -> Sequence[Any]:
        """The positional arguments of ``f`` for a call ``plan(*args, **kwargs)``."""
        return flat_call(self.signature, args, kwargs)

    def _jacobian_result(self, jac):
        """What ``plan(...)`` returns: the Jacobian, with ``has_aux`` ``(jacobian, aux)``."""
        sig = self.signature
        return (jac, sig.aux) if sig is not None and sig.has_aux else jac

    def _value_result(self, outs: Sequence[Tensor], jac):
        """What ``value_and_jacobian`` returns: ``(value, jacobian)``, with ``has_aux`` ``(value, jacobian, aux)``."""
        sig = self.signature
        if sig is None:
            return (tuple(o.detach() for o in outs) if self.structure.out_tuple else outs[0].detach()), jac
        return (sig.value(outs), jac, sig.aux) if sig.has_aux else (sig.value(outs), jac)

    def __call__(self, *args, **kwargs):
        """The Jacobian at ``args`` (same structure, shapes, dtypes and devices as at build time);
        ``(jacobian, aux)`` for a plan built with ``has_aux=True``."""
        return self._jacobian_result(self._run(self._flat(args, kwargs))[1])

    def value_and_jacobian(self, *args, **kwargs):
        """``(f(*args, **kwargs), jacobian)`` from one evaluation; ``(value, jacobian, aux)``
        with ``has_aux=True``."""
        return self._value_result(*self._run(self._flat(args, kwargs)))

    def check(self, *args, rows: int = 8, cols: int = 8, rtol: Optional[float] = None,
              atol: Optional[float] = None, seed: int = 0, **kwargs) -> None:
        """Compare random rows/columns at ``args`` with plain autograd; see :func:`trackjac.check_jacobian`
        (``kwargs`` go to ``f``).

        A random ``f`` (dropout) is compared with the draw the plan evaluated."""
        draws = SameDraws(self.device)
        flat = self._flat(args, kwargs)
        jac = positional(self.structure.nesting, self._run(flat)[1])
        compare(self.f, flat, jac, draws=draws, rows=rows, cols=cols, rtol=rtol, atol=atol, seed=seed,
                diff_pos=self.structure.diff_pos)

    @property
    def pattern(self):
        """The structural pattern, sparse COO bool, nested like the Jacobian."""
        return self.structure.nest(self.structure.patterns(self.device))

    # -- saving -------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Pattern, coloring, layout, blocksize, chunk size, specs (and path reads, constant
        entries) as CPU tensors and plain values: ``torch.save`` writes it, ``torch.load(...,
        weights_only=True)`` reads it, :meth:`from_state` rebuilds the plan from it."""
        return jacobian_state(self)

    def _constant_state(self) -> Optional[dict]:
        """The constant entries a ``state_dict`` saves (none: every entry comes from the products)."""
        return None

    @classmethod
    def from_state(cls, f: Callable, state: dict, *, compile: bool = False,
                   threads: Optional[int] = None) -> "Plan":
        """The plan saved as ``state`` (:meth:`state_dict`), without detection or coloring.

        You assert that ``f`` is the function the plan was built for (its code cannot be
        compared); ``plan.check(*args)`` verifies cheaply. A ValueError for a state of another
        format version, an invalid coloring, and (at each call) arguments of other specs."""
        return jacobian_from_state(cls, f, state, compile=compile, threads=threads)

    @property
    def sparsity(self):
        """The structural pattern as a :class:`~trackjac.SparsityPattern` (shapes, names, conversions)."""
        return self.structure.sparsity(self.f, self.device)

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
