"""Sparse Hessians of scalar functions: symmetric pattern, coloring, batched Hessian-vector products.

``hessian(f, *args)`` = ``hessian_plan(f, *args)(*args)``:

1. the pattern (``trackjac.hessian_sparsity``, or one you pass as ``pattern=``), over all
   floating tensor arguments flattened into one vector (offsets), symmetric;
2. one coloring of that pattern (symmetric coloring where available, else a column coloring:
   both seed columns, ``C[c, i] = sum_{j: color(j) = c} H[i, j]``);
3. per chunk of colors one ``torch.func.vmap`` of forward-over-reverse
   ``torch.func.jvp(grad_and_value(f), x, v)``: the tangents are the products ``H v``, the
   primal is the gradient and the value, so a Newton step needs a single evaluation;
4. the coloring's decompression, then the blocks ``H[a][b]`` cut from the global values.

Peak memory is about ``nnz + chunk x 2n`` values plus what the batched products of ``f``
need; nothing of size ``n x n``.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import coloring as _coloring
from .._nesting import Nesting
from ..coloring import color_columns
from ..tracer import hessian_sparsity
from ..tracer.hessian import scalar_output
from ..tracer.signature import Signature, flat_call
from .api import EFFORT, _symmetric
from .assemble import Block, blocksize_of, check_layout, placement
from .state import hessian_parts, hessian_state
from .products import (check_compile, chunk_of, CompileOption, ControlFlowChanged, SameDraws, try_compile,
                       user_stacklevel, vectorized, vjp_rows)
from .verify import _TOL, _basis, _compare, _extract
from .structure import check_args, Spec, Structure, _grid, diff_positions, with_reads

__all__ = ["HessianPlan"]

COLORINGS = ("auto", "star", "acyclic", "columns")


# ----------------------------------------------------------------------------
# Structure: the arguments and the symmetric pattern
# ----------------------------------------------------------------------------


def _scalar_specs(f: Callable, args: Sequence[Any]) -> None:
    """Run ``f`` once on copies: a clear error unless it returns a scalar."""
    with torch.no_grad():   # copies: an f that writes into its arguments must not change the caller's
        out = f(*[a.clone() if isinstance(a, Tensor) else a for a in args])
    scalar_output(out, "hessian")
    if not out.is_floating_point():
        raise TypeError(f"hessian: f returns dtype {out.dtype}; only real floating-point values have a Hessian")


def _check_symmetric(st: Structure) -> None:
    rows, cols, (n, _) = st.global_coo()
    if not _symmetric(rows, cols, n):
        raise ValueError("pattern must be symmetric (a Hessian pattern): H[i, j] is in it iff H[j, i] is")


def build_hessian_structure(f: Callable, args: Sequence[Any], pattern: Any, strict: bool, local: bool,
                            constant_zeros: Optional[str], sig: Optional[Signature] = None) -> Structure:
    """A :class:`Structure` whose outputs are the gradients (one per differentiated argument);
    ``sig``: ``f`` and ``args`` are its flat call, differentiated at ``sig.diff_pos``."""
    pos = diff_positions(args) if sig is None else list(sig.diff_pos)
    _scalar_specs(f, args)
    traced: List[Any] = []
    if sig is not None and pattern is not None:   # nested like the Hessian: to H[a][b] over leaves
        pattern = tuple(tuple(r) for r in sig.hessian_nesting().grid(pattern, "pattern"))
    if pattern is None:
        argnums = None if sig is None else tuple(pos) if len(pos) > 1 else pos[0]   # nested as _grid reads it
        pattern, traced = with_reads(lambda: hessian_sparsity(
            f, *args, argnums=argnums, local=local, strict=strict, constant_zeros=constant_zeros))
    arg_specs = [Spec.of(a) if isinstance(a, Tensor) else None for a in args]
    in_specs = [arg_specs[p] for p in pos]
    several = len(pos) > 1
    blocks = _grid(pattern, in_specs, in_specs, several)
    st = Structure(len(args), pos, arg_specs, list(in_specs), several, blocks, traced)
    if sig is not None:
        st.nesting = sig.hessian_nesting()
    _check_symmetric(st)
    return st


def _call(f: Callable, args: Sequence[Any], kwargs: dict, argnums, has_aux: bool,
          where: str) -> Tuple[Callable, Tuple[Any, ...], Optional[Signature]]:
    """``f`` and ``args`` as the engine sees them: as they are for plain positional tensors, else
    the flat call of a :class:`Signature` (pytrees, ``argnums``, keyword arguments, ``has_aux``)."""
    if argnums is None and not has_aux and not kwargs and not any(isinstance(a, (list, tuple, dict)) for a in args):
        return f, tuple(args), None
    sig = Signature(f, args, kwargs, argnums, has_aux, where, scalar=True)
    return sig.call, tuple(sig.leaves), sig


def _color(st: Structure, method: str, effort: str):
    """Symmetric coloring of the global pattern, or a column coloring (a valid symmetric
    evaluation too, with more colors) where that is not available or fails; ``effort`` is the
    column coloring's ("fast" for a one-shot Hessian, "best" for a plan)."""
    if method not in COLORINGS:
        raise ValueError(f"coloring must be one of {COLORINGS}; got {method!r}")
    rows, cols, (n, _) = st.global_coo()
    coo = (rows, cols, (n, n))
    symmetric = getattr(_coloring, "color_symmetric", None)
    if method == "columns":
        return color_columns(coo, **EFFORT[effort])
    if symmetric is None:
        if method != "auto":
            raise ValueError(f"coloring={method!r} needs trackjac.coloring.color_symmetric, not available here")
        return color_columns(coo, **EFFORT[effort])
    try:
        return symmetric(coo, method=method)
    except Exception as err:
        if method != "auto":
            raise
        warnings.warn(f"trackjac: symmetric coloring failed ({type(err).__name__}: {err}); "
                      "using a column coloring", RuntimeWarning, stacklevel=user_stacklevel())
        return color_columns(coo, **EFFORT[effort])


# ----------------------------------------------------------------------------
# Products
# ----------------------------------------------------------------------------


def _value_and_grad_fn(f: Callable, args: Sequence[Any], pos: Sequence[int]) -> Callable:
    """``h(*dargs) -> (*gradients, value)`` by ``torch.func.grad_and_value``."""
    full = list(args)

    def scalar(*dargs):
        for p, a in zip(pos, dargs):
            full[p] = a
        return scalar_output(f(*full), "hessian")

    gv = torch.func.grad_and_value(scalar, argnums=tuple(range(len(pos))))

    def h(*dargs):
        grads, value = gv(*dargs)
        return (*grads, value)

    return h


def _autograd_products(f: Callable, args: Sequence[Any], pos: Sequence[int],
                       seeds, draws: Optional[Callable] = None):
    """Plain torch.autograd: the gradient by backward with ``create_graph``, then one double
    backward per seed (``H`` is symmetric, so ``v^T H = (H v)^T``). Returns what
    :func:`~.products.vectorized` returns for ``_value_and_grad_fn``."""
    if draws is not None:
        draws()
    with torch.enable_grad():
        full = list(args)
        leaves = [args[p].detach().requires_grad_() for p in pos]
        for p, a in zip(pos, leaves):
            full[p] = a
        value = scalar_output(f(*full), "hessian")
        if value.requires_grad:
            grads = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
        else:
            grads = (None,) * len(leaves)
        grads = tuple(torch.zeros_like(a) if g is None else g for a, g in zip(leaves, grads))
        comps = [(*vjp_rows(grads, leaves, s), None) for s in seeds]
    return (*(g.detach() for g in grads), value.detach()), comps


# ----------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------


class HessianPlan:
    """A prepared sparse Hessian of scalar ``f``: call it at new points of the same specs.

    Build it with :func:`trackjac.hessian_plan`. ``plan(*args, **kwargs)`` returns the Hessian
    (nested like ``torch.autograd.functional.hessian``, or ``torch.func.hessian`` for pytrees and
    ``argnums``); ``plan.value_and_hessian(*args, **kwargs)`` returns ``(value, gradient, hessian)``
    from the same evaluation; with ``has_aux`` both also return ``aux``. Attributes: ``pattern``,
    ``num_colors``, ``coloring``, ``nnz``, ``layout``, ``blocksize``, ``chunk_size``.
    """

    # colors of the batched product compared with unbatched autograd on the first call
    AUDIT_COLORS = 2
    _AUDIT_TOL = {torch.float64: (1e-6, 1e-9), torch.float32: (1e-3, 1e-5)}
    # torch.func-style call (pytrees, argnums, kwargs, has_aux) that ``f`` flattens; None: positional
    signature: Optional[Signature] = None

    def __init__(self, f: Callable, structure: Structure, coloring, layout=torch.sparse_coo,
                 blocksize: Optional[Tuple[int, int]] = None, chunk_size: Optional[int] = None,
                 compile: CompileOption = False, memory_budget: Optional[int] = None):
        check_layout(layout)
        chunk_size = chunk_of(chunk_size, memory_budget, structure)
        self.device, blocksize = placement(structure, layout, blocksize)
        self.f, self.structure, self.coloring = f, structure, coloring
        self.layout, self.blocksize = layout, blocksize
        # an empty pattern needs no product, whatever the coloring says
        self.num_colors = k = coloring.num_colors if structure.global_coo()[0].numel() else 0
        self.chunk_size = max(k, 1) if chunk_size is None else min(chunk_size, max(k, 1))
        self._fallback = False   # torch.func cannot transform f: one double backward per color
        self._audited = False
        self._build()
        self.compile = compile
        check_compile(compile)
        self._compiled = try_compile(self._pure_compressed, compile) if compile else None

    def _build(self) -> None:
        st, dev, k = self.structure, self.device, self.num_colors
        _, co = st.offsets()
        self._offsets = co
        rows, cols, (n, _) = st.global_coo()
        self.n = n
        bounds = list(range(0, k, self.chunk_size)) + [k]
        self._chunks = list(zip(bounds[:-1], bounds[1:]))
        self._seed_colors = self.coloring.seed_colors(rows, cols).to(dev)
        self._seed_cache = [self._seed_chunk(c0, c1) for c0, c1 in self._chunks] if len(self._chunks) <= 1 else None
        self._decompress = self.coloring.decompression(rows, cols, dev)
        # global values are row-major over (rows, cols); block (a, b) takes a row-major subsequence
        ra = torch.bucketize(rows, torch.tensor(co[1:]), right=True)
        cb = torch.bucketize(cols, torch.tensor(co[1:]), right=True)
        self._blocks: List[List[Tuple[Tensor, Block]]] = []
        for a, sa in enumerate(st.in_specs):
            row = []
            for b, sb in enumerate(st.in_specs):
                sel = ((ra == a) & (cb == b)).nonzero().squeeze(1)
                r, c = st.blocks[a][b]
                row.append((sel.to(dev), Block(r, c, (sa.shape.numel(), sb.shape.numel()), self.layout,
                                               blocksize_of(self.blocksize, a, b), dev)))
            self._blocks.append(row)
        self.nnz = rows.numel()

    def _seed_chunk(self, c0: int, c1: int) -> Tuple[Tensor, ...]:
        """One-hot seeds of colors ``c0 .. c1 - 1``, one tensor ``(c1 - c0, *shape)`` per argument."""
        return self._seed_ids(torch.arange(c0, c1))

    def _seed_ids(self, ids: Tensor) -> Tuple[Tensor, ...]:
        onehot = self._seed_colors.unsqueeze(0) == ids.to(self.device).unsqueeze(1)
        co = self._offsets
        return tuple(onehot[:, co[a]:co[a + 1]].to(s.dtype).view(ids.numel(), *s.shape)
                     for a, s in enumerate(self.structure.in_specs))

    @property
    def _seeds(self):
        if self._seed_cache is not None:
            return self._seed_cache
        return (self._seed_chunk(c0, c1) for c0, c1 in self._chunks)

    # -- evaluation ---------------------------------------------------------------

    def _dargs(self, args: Sequence[Any]) -> Tuple[Tensor, ...]:
        return tuple(args[p] for p in self.structure.diff_pos)

    def _check_outputs(self, outs: Sequence[Tensor]) -> None:
        specs = self.structure.in_specs
        if any(o.shape != s.shape for o, s in zip(outs, specs)) or outs[-1].numel() != 1:
            raise ControlFlowChanged("f's gradient changed shape since the plan was built: build a new plan")

    def _compressed(self, args: Sequence[Any]):
        """(gradients + value, per chunk the products ``H v`` per argument)."""
        pos = self.structure.diff_pos
        draws = SameDraws(self.device)
        if self._fallback:
            return _autograd_products(self.f, args, pos, self._seeds, draws)
        h = _value_and_grad_fn(self.f, args, pos)
        try:
            res = vectorized(h, self._dargs(args), "fwd", self._seeds, self._check_outputs, draws)
        except ControlFlowChanged:
            raise
        except Exception as err:  # torch.func may not support f (old-style autograd.Function, ...)
            res = _autograd_products(self.f, args, pos, self._seeds, draws)
            warnings.warn(f"trackjac: torch.func could not transform f ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200]}); evaluating one Hessian-vector product "
                          "per color with torch.autograd double backward instead",
                          RuntimeWarning, stacklevel=user_stacklevel())
            self._fallback = True
            return res
        if not self._audited:
            self._audited = True
            res = self._audit(args, res, draws)
        return res

    def _audit(self, args: Sequence[Any], res, draws: SameDraws):
        """Compare a few random colors of the batched products with plain double backward;
        where they disagree (a torch.func batching bug), warn and loop over colors from now on."""
        k = self.num_colors
        if k == 0:
            return res
        gen = torch.Generator().manual_seed(0)
        ids = torch.randperm(k, generator=gen)[: self.AUDIT_COLORS].sort().values
        try:
            _, ref = _autograd_products(self.f, args, self.structure.diff_pos, [self._seed_ids(ids)], draws)
        except Exception:  # plain autograd cannot run f where torch.func can: nothing to compare with
            return res
        cs, comps = self.chunk_size, res[1]
        for a in range(len(self.structure.in_specs)):
            want = ref[0][a]
            got = torch.stack([comps[int(c) // cs][a][int(c) % cs] for c in ids])
            rtol, atol = self._AUDIT_TOL.get(want.dtype, (1e-1, 1e-2))
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            err = (got - want).abs()
            if bool((err > atol * scale + rtol * want.abs()).any()):
                warnings.warn(f"trackjac: the batched Hessian-vector products (torch.func.vmap) disagree with "
                              f"plain double backward (max difference {float(err.max()):.3g}, scale {scale:.3g}); "
                              "this plan evaluates one color at a time with torch.autograd from now on.",
                              RuntimeWarning, stacklevel=user_stacklevel())
                self._fallback = True
                return _autograd_products(self.f, args, self.structure.diff_pos, self._seeds, draws)
        return res

    def _pure_compressed(self, *args):
        """The batched products alone, without fallbacks: what ``compile=True`` compiles."""
        h = _value_and_grad_fn(self.f, args, self.structure.diff_pos)
        return vectorized(h, self._dargs(args), "fwd", self._seeds, lambda outs: None)

    def _values(self, comps) -> Tensor:
        """Global values of the pattern from the compressed products of every chunk."""
        spec = self.structure.in_specs[0]
        if not comps:
            return torch.zeros(0, dtype=spec.dtype, device=self.device)
        nargs = len(self.structure.in_specs)
        flat = [torch.cat([t.reshape(t.shape[0], -1) for t in chunk[:nargs]], 1) for chunk in comps]
        return self._decompress(torch.cat(flat, 0) if len(flat) > 1 else flat[0])

    def _run(self, args: Sequence[Any]):
        self._validate(args)
        if self.structure.path is not None:  # f branched on a tracked value at build time
            self.structure.path.check(args)
        res = None
        if self._compiled is not None:
            try:
                draws = SameDraws(self.device)
                res = self._compiled(*args)
                self._check_outputs(res[0])
                if not self._audited:
                    self._audited = True
                    res = self._audit(args, res, draws)
                    if self._fallback:
                        self._compiled = None
            except Exception as err:
                res = None
                warnings.warn(f"trackjac: compiled Hessian plan failed ({type(err).__name__}: {err}); using eager",
                              RuntimeWarning, stacklevel=user_stacklevel())
                self._compiled = None
        if res is None:
            res = self._compressed(args)
        outs, comps = res
        values = self._values(comps)
        table = [[blk.assemble(values.index_select(0, sel)) for sel, blk in row] for row in self._blocks]
        return outs, self.structure.nest(table)

    def _flat(self, args: Sequence[Any], kwargs: dict) -> Sequence[Any]:
        """The positional arguments of ``f`` for a call ``plan(*args, **kwargs)``."""
        return flat_call(self.signature, args, kwargs)

    def __call__(self, *args, **kwargs):
        """The Hessian at ``args`` (same structure, shapes, dtypes and devices as at build time);
        ``(hessian, aux)`` for a plan built with ``has_aux=True``."""
        return self._hessian_result(self._run(self._flat(args, kwargs))[1])

    def value_and_hessian(self, *args, **kwargs):
        """``(value, gradient, hessian)`` at ``args`` from one forward-over-reverse evaluation
        (``(value, gradient, hessian, aux)`` with ``has_aux=True``).

        ``value`` is 0-d; ``gradient`` has the argument's shape (a tuple over several arguments;
        the arguments' structure for pytrees or ``argnums``, as ``torch.func.grad``)."""
        return self._value_result(*self._run(self._flat(args, kwargs)))

    def _hessian_result(self, hess):
        """What a call returns: the Hessian, with aux when built with ``has_aux=True``."""
        sig = self.signature
        return (hess, sig.aux) if sig is not None and sig.has_aux else hess

    def _value_result(self, outs, hess):
        """What ``value_and_hessian`` returns, from the products' outputs (gradients, then the value)."""
        grads = [o.detach() for o in outs[:-1]]
        value, sig = outs[-1].detach().reshape(()), self.signature
        if sig is None:
            return value, tuple(grads) if self.structure.in_tuple else grads[0], hess
        grad = sig.hessian_nesting().inputs(grads) if not sig.legacy_in else (
            tuple(grads) if self.structure.in_tuple else grads[0])
        return (value, grad, hess, sig.aux) if sig.has_aux else (value, grad, hess)

    def check(self, *args, hess: Any = None, rows: int = 8, rtol: Optional[float] = None,
              atol: Optional[float] = None, seed: int = 0, **kwargs) -> None:
        """Compare random rows of the Hessian at ``args`` with plain double backward (``kwargs``
        go to ``f``).

        Raises :class:`trackjac.JacobianCheckError` naming the first disagreeing entry: a
        nonzero outside the pattern (a missed interaction, another control-flow path) or a
        wrong value inside it."""
        flat = self._flat(args, kwargs)
        if hess is None:
            hess = self._run(flat)[1]
        _compare_rows(self.f, flat, self.structure.diff_pos, _hessian_grid(hess, self.structure.nesting,
                      len(self.structure.diff_pos)), rows, rtol, atol, seed)

    @property
    def pattern(self):
        """The structural pattern, sparse COO bool, nested like the Hessian."""
        return self.structure.nest(self.structure.patterns(self.device))

    @property
    def sparsity(self):
        """The structural pattern as a :class:`~trackjac.SparsityPattern` (shapes, names, conversions)."""
        return self.structure.sparsity(self.f, self.device, hessian=True)

    def _validate(self, args: Sequence[Any]) -> None:
        check_args(self.structure, args)

    def state_dict(self) -> dict:
        """Pattern, coloring, layout, blocksize, chunk size, specs (and path reads) as CPU tensors
        and plain values, for ``torch.save``; :meth:`from_state` rebuilds the plan from it."""
        return hessian_state(self)

    @classmethod
    def from_state(cls, f: Callable, state: dict, *, compile: bool = False) -> "HessianPlan":
        """The plan saved as ``state``, without detection or coloring; as :meth:`trackjac.Plan.from_state`."""
        st, coloring, opts = hessian_parts(f, state)
        _check_symmetric(st)
        return cls(f, st, coloring, compile=compile, **opts)

    def __repr__(self) -> str:
        return (f"HessianPlan(num_colors={self.num_colors}, nnz={self.nnz}, shape=({self.n}, {self.n}), "
                f"layout={self.layout}, chunk_size={self.chunk_size}, compiled={self._compiled is not None})")


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def _hessian_grid(hess: Any, nesting: Optional[Nesting], k: int) -> List[List[Any]]:
    """``hess`` as blocks ``[a][b]`` over the differentiated leaves."""
    if nesting is not None:
        return nesting.grid(hess, "hess")
    blocks = [list(r) for r in hess] if k > 1 else [[hess]]
    if len(blocks) != k or any(len(r) != k for r in blocks):
        raise ValueError(f"hess must be nested like the Hessian of {k} argument(s)")
    return blocks


def _compare_rows(f: Callable, args: Sequence[Any], pos: Sequence[int], blocks: List[List[Any]], rows: int,
                  rtol: Optional[float], atol: Optional[float], seed: int) -> None:
    """Random rows of the Hessian blocks ``[a][b]`` of ``f`` at ``args`` (arguments ``pos``) against
    double backward."""
    specs = [Spec.of(args[p]) for p in pos]
    co = [0]
    for s in specs:
        co.append(co[-1] + s.shape.numel())
    n = co[-1]
    rt, at = _TOL.get(specs[0].dtype, (1e-2, 1e-3))
    rtol = rt if rtol is None else rtol
    atol = at if atol is None else atol
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(rows, n)]
    if not idx.numel():
        return
    _, comps = _autograd_products(f, args, pos, [_basis(idx, co, specs, specs[0].device)])
    want = torch.cat([t.reshape(idx.numel(), -1) for t in comps[0][: len(pos)]], 1).cpu()
    got, inpat = _extract(blocks, co, co, idx, axis=0)
    _compare(want, got, inpat, idx, co, co, rtol, atol, axis=0)
