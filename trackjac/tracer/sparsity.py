"""``jacobian_sparsity``: the Jacobian's structural pattern, nested like ``torch.autograd.functional.jacobian``."""
from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.utils._pytree import MappingKey, keystr, tree_flatten, tree_flatten_with_path, tree_map, tree_unflatten

from .._nesting import Nesting, argnums_of, nesting_of, single_of
from .._sparse import bool_coo, empty_coo
from .._threads import intra_op_threads
from ..dtypes import DIFFERENTIABLE, FLOATING
from ..pattern import SparsityPattern, argument_names
from .context import tracking
from .state import config
from .tensor import Tracked, untrack


def _track_leaf(a: Any, where: str) -> Any:
    if isinstance(a, Tracked):
        raise TypeError(f"jacobian_sparsity: {where} is already a Tracked tensor; pass the plain "
                        "tensor (its .value): the function's floating arguments are tracked for you")
    if isinstance(a, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(a):
        raise TypeError(
            f"{where} is inside a torch.func transform (vmap, grad, jacrev ...): trackjac traces "
            "concrete tensors. Call jacobian_sparsity / jacobian / jacobian_plan outside the transform "
            "(a plan built once can then be evaluated per sample), or use torch.func inside f instead.")
    return a


class Tracking(NamedTuple):
    """Which arguments were tracked: the new args, the tracked leaves and how to nest over them."""

    args: list
    sources: List[Tracked]
    legacy: bool           # plain tensor arguments only: nest like torch.autograd.functional.jacobian
    groups: list           # per differentiated argument: (its pytree spec, indices into sources or None)
    single: Optional[bool]  # argnums an int: no tuple over arguments; a tuple: always one (Nesting)


def track_args(args, argnums=None) -> Tracking:
    """Wrap the floating tensors of the differentiated arguments (``argnums``, default all) as
    sources; arguments may be pytrees (dicts, lists, tuples of tensors), as in ``torch.func``.

    The sources refuse in-place writes (``f`` must not change its caller's tensors)."""
    nums = argnums_of(argnums, len(args))
    chosen = range(len(args)) if nums is None else nums
    legacy = nums is None and all(not isinstance(a, (list, tuple, dict)) for a in args)
    new, srcs, groups = list(args), [], []
    for i in chosen:
        leaves, spec = tree_flatten(args[i])
        idx: List[Optional[int]] = []
        for k, leaf in enumerate(leaves):
            leaf = _track_leaf(leaf, f"argument {i}" if len(leaves) == 1 else f"argument {i}, leaf {k}")
            if isinstance(leaf, torch.Tensor) and leaf.dtype in FLOATING:
                t = Tracked(leaf)
                t._store.argument = i
                leaves[k] = t
                idx.append(len(srcs))
                srcs.append(t)
            else:
                idx.append(None)
        if nums is not None and all(j is None for j in idx):
            raise TypeError(f"jacobian_sparsity: argnums selects argument {i}, which holds no floating-point "
                            f"tensor (got {type(args[i]).__name__})")
        new[i] = tree_unflatten(leaves, spec)
        if any(j is not None for j in idx):
            groups.append((spec, idx))
    if not srcs:
        raise TypeError("jacobian_sparsity: no floating-point tensor among the arguments to track "
                        f"(got {', '.join(type(a).__name__ for a in args) or 'no arguments'})")
    return Tracking(new, srcs, legacy, groups, single_of(argnums))


def _nesting(out: Any, tr: Tracking) -> Nesting:
    """Like ``torch.autograd.functional.jacobian`` (plain tensor arguments, a tensor or tuple
    output) or else like ``torch.func.jacrev``."""
    return nesting_of(out, tr.legacy, tr.groups, tr.single, len(tr.sources))


def _nest(table: List[List[Any]], out: Any, tr: Tracking) -> Any:
    """``table[output leaf][source]`` nested as :func:`_nesting` says."""
    return _nesting(out, tr).nest(table)


def _source_names(f: Callable, args: Sequence[Any], tr: Tracking) -> List[str]:
    """Per source: its argument's name, with the leaf's path for a pytree argument (``params['w']``)."""
    arg_names = argument_names(f, len(args))
    names = [""] * len(tr.sources)
    for spec, idx in tr.groups:
        tracked = [(k, j) for k, j in enumerate(idx) if j is not None]
        a = tr.sources[tracked[0][1]]._store.argument
        if spec.is_leaf():   # the argument is the tensor itself
            names[tracked[0][1]] = arg_names[a]
            continue
        paths = [p for p, _ in tree_flatten_with_path(args[a])[0]]
        for k, j in tracked:
            names[j] = arg_names[a] + keystr(paths[k])
    return names


def _output_names(out: Any) -> List[str]:
    """Per output leaf: ``output j`` for a tensor or a tuple's tensor, a dict output's key, else
    ``output`` and the leaf's path (``output[1]['u']``)."""
    def name(j: int, path) -> str:
        if len(path) == 1 and isinstance(path[0], MappingKey) and isinstance(path[0].key, str):
            return path[0].key
        return f"output {j}" if len(path) <= 1 else "output" + keystr(path)
    return [name(j, p) for j, (p, _) in enumerate(tree_flatten_with_path(out)[0])]


def _as_pattern(table: List[List[torch.Tensor]], f: Callable, args: Sequence[Any], out: Any,
                outs: List[torch.Tensor], tr: Tracking) -> SparsityPattern:
    return SparsityPattern(table, [o.shape for o in outs], [x._source.shape for x in tr.sources],
                           out_names=_output_names(out), in_names=_source_names(f, args, tr),
                           nesting=_nesting(out, tr))


def _outputs(out: Any, has_aux: bool) -> Tuple[Any, List[torch.Tensor], Any]:
    """(the output pytree, its tensor leaves, aux as plain values)."""
    aux = None
    if has_aux:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("jacobian_sparsity: with has_aux=True, f must return a pair (output, aux)")
        out, aux = out
        aux = tree_map(lambda a: untrack(a) if isinstance(a, Tracked) else a, aux)
    if isinstance(out, (tuple, list)) and not isinstance(out, torch.Tensor) and not out:
        raise TypeError("jacobian_sparsity: f returned an empty sequence")
    leaves, _ = tree_flatten(out)
    if not leaves:
        raise TypeError("jacobian_sparsity: the function must return a tensor or a pytree of tensors; "
                        f"got {type(out).__name__}")
    for j, o in enumerate(leaves):
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"jacobian_sparsity: the function must return a tensor or a pytree of tensors; "
                            f"output leaf {j} is {type(o).__name__}")
    return out, leaves, aux


def pattern_of(y: torch.Tensor, x: Tracked, layout=torch.sparse_coo) -> torch.Tensor:
    """2-D boolean pattern ``(y.numel(), x.numel())``."""
    src = x._source
    if isinstance(y, Tracked) and y.dtype in DIFFERENTIABLE:
        return y._prov().to_coo(src.first, src.numel, layout=layout)
    empty = empty_coo((y.numel(), src.numel), y.device)
    return empty.to_dense() if layout == torch.strided else empty


class JacobianClassification(NamedTuple):
    """``jacobian_sparsity(..., classify=True)``: the pattern split into entries whose derivative is
    the same at every point (``constant``) and the others (``variable``), each nested like the
    pattern; disjoint, their union is the pattern."""

    constant: Any
    variable: Any


def _split(y: torch.Tensor, x: Tracked, layout, unsure: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(constant, variable)`` 2-D patterns of ``y`` w.r.t. ``x`` (``unsure``: all variable)."""
    src = x._source
    d = pattern_of(y, x)
    nl = y._nonlinear() if isinstance(y, Tracked) and y.dtype in DIFFERENTIABLE else None
    if unsure:
        nl = y._prov()
    shape = (y.numel(), src.numel)
    if nl is None:
        const, var = d, empty_coo(shape, y.device)
    else:
        di = d.indices()
        ni = nl.to_coo(src.first, src.numel).indices()
        # both coalesced: row-major keys ascending.  N is within D by construction; matching keys
        # (not assuming it) keeps the split exactly a partition of D
        dk, nk = di[0] * shape[1] + di[1], ni[0] * shape[1] + ni[1]
        at = torch.searchsorted(dk, nk).clamp_(max=max(dk.numel() - 1, 0))
        hit = torch.zeros(dk.numel(), dtype=torch.bool, device=dk.device)
        if dk.numel():
            hit[at[dk[at] == nk]] = True
        const = bool_coo(di[0][~hit], di[1][~hit], shape, y.device)
        var = bool_coo(di[0][hit], di[1][hit], shape, y.device)
    if layout == torch.strided:
        return const.to_dense(), var.to_dense()
    return const, var


def jacobian_sparsity(f: Callable, *args, argnums: Union[None, int, Sequence[int]] = None,
                      has_aux: bool = False, local: bool = False, strict: bool = False,
                      layout=torch.sparse_coo, representation: Optional[str] = None,
                      constant_zeros: Optional[str] = None, classify: bool = False, result: str = "nested",
                      **kwargs):
    """Structural sparsity pattern of the Jacobian of ``f`` at ``args``.

    The floating tensors of the arguments ``argnums`` (an int or a tuple, as in ``torch.func``;
    default: every argument) are tracked; arguments may be pytrees (dicts, lists, tuples of
    tensors); other arguments and ``kwargs`` are passed to ``f`` as they are.
    ``has_aux=True``: ``f`` returns ``(output, aux)`` and the result is ``(pattern, aux)``.
    ``(i, j)`` is in the pattern when data flows from ``arg.flatten()[j]`` into
    ``out.flatten()[i]`` through differentiable ops, whatever the values (an input
    multiplied by zero still participates).  In global mode (default) the pattern holds
    at every point that takes the same Python control-flow path; ``local=True`` resolves
    value-dependent choices (``where``, ``max``, ``relu`` ...) at this point only and,
    unless ``constant_zeros="keep"``, makes products value-aware.
    ``constant_zeros="drop"`` (the default with ``local=True``) makes products value-aware:
    an exact zero that depends on nothing (``x * 0``, an ``eye`` mask, causal attention's
    masked weights, a dropped dropout channel) no longer connects the other factor (see
    :func:`~trackjac.tracking`).

    Returns:
        A coalesced sparse COO boolean matrix ``(out.numel(), arg.numel())`` (dense with
        ``layout=torch.strided``) per (output tensor, input tensor). With plain tensor
        arguments, no ``argnums`` and a tensor or tuple output, nested like
        ``torch.autograd.functional.jacobian``: a tuple over tracked inputs when there are
        several, inside a tuple over outputs when ``f`` returns a tuple. Otherwise nested
        like ``torch.func.jacrev``: the output's pytree, each leaf holding the inputs'
        structure (the pytree of the argument ``argnums`` names, a tuple over arguments for
        a tuple ``argnums``). Blocks are always 2-D; ``depends_on`` gives the
        ``out.shape + in.shape`` view of one block.

    Cost: time and memory proportional to the number of (element, input) dependencies
    of the intermediate tensors, not to ``outputs x inputs`` (``representation="sets"``);
    with few inputs packed bitmasks are faster (``"bits"``: ``numel x n_inputs`` bits per
    intermediate).  ``"auto"`` (the default, see :func:`~trackjac.tracking`) picks bitmasks
    up to ``trackjac.provenance.policy.AUTO_MAX_INPUTS`` tracked input elements.  The pattern is the same.

    ``classify=True`` returns a :class:`JacobianClassification` ``(constant, variable)``: an entry
    is *constant* when ``arg[j]`` reaches ``out[i]`` only through ops linear in their tracked
    arguments (``A @ x``, stencils, sums, indexing with fixed indices, ``x * c`` with ``c`` not
    computed from tracked values), so its value is the same at every point; every other entry
    (``x * x``, ``sin``, ``where`` on a condition computed from ``x``, an index computed from
    ``x``, dropout) is *variable*.  Linearity comes from PyTorch's ``derivatives.yaml``; where it
    is unsure an entry is variable.  Not with ``local=True`` (constancy is about all points).

    ``result="pattern"`` returns a :class:`~trackjac.SparsityPattern` instead of nested blocks
    (for ``classify=True``, one per part): the same blocks with their shapes, names and nesting
    (its ``nested()`` is the default result). Only with the default ``layout``.
    """
    if result not in ("nested", "pattern"):
        raise ValueError(f"jacobian_sparsity: result must be 'nested' or 'pattern'; got {result!r}")
    if result == "pattern" and layout != torch.sparse_coo:
        raise ValueError("jacobian_sparsity: result='pattern' holds sparse COO blocks; layout= applies to "
                         "result='nested' (use the pattern's to_dense(), view() or nested(torch.strided))")
    if classify and local:
        raise ValueError("jacobian_sparsity: classify=True needs local=False (an entry is constant when its "
                         "value is the same at every point, which a pattern at one point cannot say)")
    with tracking(local=local, strict=strict, representation=representation,
                  constant_zeros=constant_zeros) as cfg:
        saved, cfg.n_inputs = cfg.n_inputs, sum(
            a.numel() for a in tree_flatten(list(args))[0] if isinstance(a, torch.Tensor) and a.dtype in FLOATING)
        saved_classify = cfg.classify, cfg.read_varying
        cfg.classify, cfg.read_varying = classify, False
        try:
            try:
                tr = track_args(args, argnums)
            finally:
                cfg.n_inputs = saved
            out = f(*tr.args, **kwargs)
            unsure = cfg.read_varying
        finally:
            cfg.classify, cfg.read_varying = saved_classify
    out, outs, aux = _outputs(out, has_aux)
    srcs = tr.sources
    with intra_op_threads(config().threads), torch._C.DisableTorchFunction():
        if result == "pattern":
            def make(table):
                return _as_pattern(table, f, args, out, outs, tr)
        else:
            def make(table):
                return _nest(table, out, tr)
        if not classify:
            res = make([[pattern_of(o, x, layout) for x in srcs] for o in outs])
        else:
            split = [[_split(o, x, layout, unsure) for x in srcs] for o in outs]
            res = JacobianClassification(*(make([[s[k] for s in row] for row in split]) for k in range(2)))
    return (res, aux) if has_aux else res
