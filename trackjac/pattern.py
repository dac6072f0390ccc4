"""``SparsityPattern``: a Jacobian (or Hessian) pattern that knows its blocks' shapes, names and nesting.

Block shape convention: every block is a flat 2-D matrix ``(out.numel(), in.numel())``,
rows and columns in row-major order (what sparse layouts, coloring and scipy need);
``view(out, in)`` gives the ``out.shape + in.shape`` view that ``depends_on`` returns.
The stacked matrix has block rows = outputs and block columns = inputs.

This module is pattern algebra only: it imports nothing from the tracer or the engine.
"""
from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._nesting import Nesting, flat_nesting
from ._scipy import coo_matrix_of, scipy_sparse
from ._sparse import bool_coo, quiet_beta, structural_coo

__all__ = ["SparsityPattern", "Nesting", "argument_names"]

Key = Union[int, str]


def argument_names(f: Callable, count: int) -> List[str]:
    """Names of the first ``count`` positional parameters of ``f`` (of a module's ``forward``);
    ``input i`` for all when ``f`` has fewer (``*args``) or no signature."""
    if isinstance(f, torch.nn.Module):
        f = f.forward
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(names) < count:
        return [f"input {i}" for i in range(count)]
    return names[:count]


def _size(s: Any) -> torch.Size:
    return torch.Size(tuple(int(d) for d in s))


def _index(key: Key, names: Sequence[str], kind: str) -> int:
    """Position of a block row/column from an int (negative counts from the end) or a name."""
    n = len(names)
    if not isinstance(key, str):
        try:
            if isinstance(key, bool):
                raise TypeError
            key = operator.index(key)   # ints and integer scalars, not floats
        except TypeError:
            raise TypeError(f"SparsityPattern: {kind} must be an int or a name; got {type(key).__name__}") from None
        if not -n <= key < n:
            raise IndexError(f"SparsityPattern: {kind} {key} out of range for {n} {kind}(s)")
        return key % n
    hits = [k for k, name in enumerate(names) if name == key]
    if len(hits) != 1:
        why = "no" if not hits else "more than one"
        raise KeyError(f"SparsityPattern: {why} {kind} named {key!r}; the {kind}s are {list(names)}")
    return hits[0]


class SparsityPattern:
    """A Jacobian's structural pattern as a grid of blocks, one per (output, input).

    Attributes: ``blocks`` (``blocks[j][i]``: coalesced sparse COO bool ``(out_j.numel(),
    in_i.numel())``), ``out_shapes``, ``in_shapes``, ``out_names``, ``in_names``,
    ``nesting`` (a :class:`Nesting`), ``shape`` (of the stacked matrix), ``nnz``, ``density``.
    Built by ``jacobian_sparsity(..., result="pattern")`` and ``hessian_sparsity(...,
    result="pattern")``; ``spy``, ``to_scipy`` and the ``pattern=`` argument of the
    engine accept it.
    """

    def __init__(self, blocks: Sequence[Sequence[Tensor]], out_shapes: Sequence[Any], in_shapes: Sequence[Any],
                 *, out_names: Optional[Sequence[str]] = None, in_names: Optional[Sequence[str]] = None,
                 nesting: Optional[Nesting] = None):
        self.out_shapes = tuple(_size(s) for s in out_shapes)
        self.in_shapes = tuple(_size(s) for s in in_shapes)
        n_out, n_in = len(self.out_shapes), len(self.in_shapes)
        if not n_out or not n_in:
            raise ValueError("SparsityPattern: needs at least one output and one input")
        self.out_names = self._names(out_names, n_out, "output")
        self.in_names = self._names(in_names, n_in, "input")
        grid = [list(r) for r in blocks]
        if len(grid) != n_out or any(len(r) != n_in for r in grid):
            raise ValueError(f"SparsityPattern: expected {n_out} x {n_in} blocks (outputs x inputs); "
                             f"got {len(grid)} x {[len(r) for r in grid]}")
        self.blocks = tuple(tuple(self._block(grid[j][i], j, i) for i in range(n_in)) for j in range(n_out))
        self.nesting = nesting if nesting is not None else flat_nesting(n_out > 1, n_in)

    @staticmethod
    def _names(given: Optional[Sequence[str]], count: int, kind: str) -> Tuple[str, ...]:
        if given is None:
            return tuple(f"{kind} {k}" for k in range(count))
        names = tuple(str(g) for g in given)
        if len(names) != count:
            raise ValueError(f"SparsityPattern: {len(names)} {kind} names for {count} {kind}s")
        return names

    def _block(self, p: Any, j: int, i: int) -> Tensor:
        shape = (self.out_shapes[j].numel(), self.in_shapes[i].numel())
        if not isinstance(p, Tensor) or p.dim() != 2:
            raise TypeError(f"SparsityPattern: block ({j}, {i}) must be a 2-D tensor (out.numel(), in.numel()); "
                            f"got {type(p).__name__}{'' if not isinstance(p, Tensor) else tuple(p.shape)}")
        if tuple(p.shape) != shape:
            raise ValueError(f"SparsityPattern: block ({j}, {i}) has shape {tuple(p.shape)}; output "
                             f"{tuple(self.out_shapes[j])} and input {tuple(self.in_shapes[i])} need {shape}")
        if p.layout == torch.sparse_coo and p.dtype == torch.bool and p.is_coalesced() and bool(p.values().all()):
            return p   # already what jacobian_sparsity returns
        r, c, m, n = structural_coo(p)
        key = torch.unique(r * n + c)   # sorted and distinct, as a coalesced tensor needs
        return bool_coo(key // n, key % n, shape, p.device)

    # -- sizes ----------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, int]:
        """``(sum of out.numel(), sum of in.numel())``: the stacked matrix."""
        return (sum(s.numel() for s in self.out_shapes), sum(s.numel() for s in self.in_shapes))

    @property
    def nnz(self) -> int:
        return sum(b._nnz() for row in self.blocks for b in row)

    @property
    def density(self) -> float:
        m, n = self.shape
        return self.nnz / (m * n) if m * n else 0.0

    @property
    def device(self) -> torch.device:
        return self.blocks[0][0].device

    def offsets(self) -> Tuple[List[int], List[int]]:
        """First row of each output and first column of each input in the stacked matrix (and the ends)."""
        ro, co = [0], [0]
        for s in self.out_shapes:
            ro.append(ro[-1] + s.numel())
        for s in self.in_shapes:
            co.append(co[-1] + s.numel())
        return ro, co

    # -- blocks -----------------------------------------------------------------------
    def block(self, out: Key = 0, inp: Key = 0) -> Tensor:
        """Block ``(out.numel(), in.numel())`` of output ``out`` and input ``inp`` (index or name)."""
        return self.blocks[_index(out, self.out_names, "output")][_index(inp, self.in_names, "input")]

    def view(self, out: Key = 0, inp: Key = 0, layout=torch.strided) -> Tensor:
        """Block ``(out, inp)`` as a bool tensor of shape ``out.shape + in.shape``, as ``depends_on``
        gives it: dense by default, ``layout=torch.sparse_coo`` for the sparse one."""
        j, i = _index(out, self.out_names, "output"), _index(inp, self.in_names, "input")
        b, oshape, ishape = self.blocks[j][i], self.out_shapes[j], self.in_shapes[i]
        if layout == torch.strided:
            return b.to_dense().reshape(oshape + ishape)
        if layout != torch.sparse_coo:
            raise ValueError(f"SparsityPattern.view: layout must be torch.strided or torch.sparse_coo; got {layout}")
        idx = b.indices()
        parts = [torch.stack(torch.unravel_index(idx[k], s)) for k, s in ((0, oshape), (1, ishape)) if len(s)]
        ind = torch.cat(parts) if parts else idx.new_zeros(0, idx.shape[1])
        return torch.sparse_coo_tensor(ind, b.values(), oshape + ishape, is_coalesced=True, check_invariants=False)

    def nested(self, layout=torch.sparse_coo) -> Any:
        """The blocks nested exactly as ``jacobian_sparsity`` returns them (dense with
        ``layout=torch.strided``)."""
        if layout not in (torch.sparse_coo, torch.strided):
            raise ValueError(f"SparsityPattern.nested: layout must be torch.sparse_coo or torch.strided; got {layout}")
        dense = layout == torch.strided
        return self.nesting.nest([[b.to_dense() if dense else b for b in row] for row in self.blocks])

    # -- the stacked matrix -------------------------------------------------------------
    def _stacked(self) -> Tuple[Tensor, Tensor]:
        """Row-major (rows, cols) of the stacked matrix."""
        ro, co = self.offsets()
        n = co[-1]
        keys = [(b.indices()[0] + ro[j]) * n + b.indices()[1] + co[i]
                for j, row in enumerate(self.blocks) for i, b in enumerate(row)]
        key = torch.sort(torch.cat(keys)).values   # distinct: the blocks do not overlap
        return key // n if n else key, key % n if n else key

    def to_coo(self) -> Tensor:
        """The stacked matrix as a coalesced sparse COO bool tensor."""
        r, c = self._stacked()
        return bool_coo(r, c, self.shape)

    def to_csr(self) -> Tensor:
        """The stacked matrix as a sparse CSR bool tensor."""
        r, c = self._stacked()
        m = self.shape[0]
        crow = torch.zeros(m + 1, dtype=torch.int64, device=r.device)
        crow[1:] = torch.bincount(r, minlength=m).cumsum(0)
        with quiet_beta():
            return torch.sparse_csr_tensor(crow, c, torch.ones(c.numel(), dtype=torch.bool, device=c.device),
                                           self.shape, check_invariants=False)

    def to_dense(self) -> Tensor:
        """The stacked matrix as a dense bool tensor (``shape[0] * shape[1]`` bools: for small patterns)."""
        r, c = self._stacked()
        d = torch.zeros(self.shape, dtype=torch.bool, device=r.device)
        d[r, c] = True
        return d

    def to_scipy(self, format: str = "csr"):
        """The stacked matrix as a scipy sparse matrix (needs scipy), see :func:`trackjac.interop.to_scipy`."""
        if format not in ("csr", "csc", "coo"):
            raise ValueError(f"to_scipy: format must be one of ('csr', 'csc', 'coo'); got {format!r}")
        sp = scipy_sparse()
        return coo_matrix_of(self.to_coo(), sp).asformat(format)

    def __repr__(self) -> str:
        def side(names, shapes):
            return ", ".join(f"{n} {tuple(s)}" for n, s in zip(names, shapes))
        m, n = self.shape
        return (f"SparsityPattern({m} x {n}, nnz={self.nnz}, density={100 * self.density:.3g}%, "
                f"outputs=[{side(self.out_names, self.out_shapes)}], inputs=[{side(self.in_names, self.in_shapes)}])")
