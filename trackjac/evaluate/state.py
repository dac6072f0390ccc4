"""Saving and loading a plan's pattern and coloring, so that a later run skips detection.

``plan.state_dict()`` is a dict of CPU tensors and plain Python values (what
``torch.load(..., weights_only=True)`` reads back): the argument and output specs, the
pattern blocks, the coloring, the layout and blocksize, the chunk size, the path guard's
reads where ``f`` branched on a tracked value, and for ``constant_entries="reuse"`` the
constant entries' values. ``Plan.from_state(f, state)`` / ``HessianPlan.from_state(f, state)``
rebuild the plan from it without running detection or coloring.

What a state cannot hold is ``f``: the caller asserts it is the same function (its code,
closures and parameters' roles). The state checks what it can: its format version, that
the coloring is valid for the saved pattern, and, at each call, the argument specs and the
output shapes. ``plan.check(*args)`` compares random rows and columns with autograd: the
cheap way to verify a loaded plan.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor

from ..coloring import Coloring, color_rows
from .assemble import blocksize_lists, blocksize_tuples, describe, layout_named
from .paths import PathGuard
from .structure import Spec, Structure

FORMAT = "trackjac.plan"
VERSION = 1
KINDS = ("jacobian", "hessian")


# ----------------------------------------------------------------------------
# Pieces: specs, structure, coloring
# ----------------------------------------------------------------------------


def _spec(s: Optional[Spec]) -> Optional[Dict[str, Any]]:
    if s is None:
        return None
    return {"shape": list(s.shape), "dtype": str(s.dtype).replace("torch.", ""), "device": str(s.device)}


def _unspec(d: Optional[Dict[str, Any]]) -> Optional[Spec]:
    if d is None:
        return None
    dtype = getattr(torch, str(d["dtype"]), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"plan state: unknown dtype {d['dtype']!r}")
    return Spec(torch.Size(int(x) for x in d["shape"]), dtype, torch.device(d["device"]))


def _reads(reads: List[Any]) -> List[List[Any]]:
    return [[op, v] for op, v in reads]


def structure_state(st: Structure) -> Dict[str, Any]:
    return {
        "n_args": st.n_args,
        "diff_pos": list(st.diff_pos),
        "arg_specs": [_spec(s) for s in st.arg_specs],
        "out_specs": [_spec(s) for s in st.out_specs],
        "out_tuple": bool(st.out_tuple),
        "blocks": [[[r.cpu().clone(), c.cpu().clone()] for r, c in row] for row in st.blocks],
        "traced_reads": _reads(st.traced_reads),
        "path": None if st.path is None else {"reads": _reads(st.path.reads), "traced": _reads(st.path.traced)},
    }


def _check_block(r: Any, c: Any, m: int, n: int, where: str) -> None:
    """The row-major, in-range, duplicate-free (rows, cols) a :class:`~.assemble.Block` relies on."""
    ok = (isinstance(r, Tensor) and isinstance(c, Tensor) and r.dim() == c.dim() == 1 and r.numel() == c.numel()
          and r.dtype == c.dtype == torch.long)
    if not ok:
        raise ValueError(f"plan state: block {where} must hold two 1-D int64 tensors of one length")
    if r.numel() == 0:
        return
    if int(r.min()) < 0 or int(c.min()) < 0 or int(r.max()) >= m or int(c.max()) >= n:
        raise ValueError(f"plan state: block {where} has indices outside its shape ({m}, {n})")
    key = r * n + c
    if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
        raise ValueError(f"plan state: block {where} is not sorted row-major without duplicates")


def structure_from(d: Dict[str, Any], f: Callable) -> Structure:
    arg_specs = [_unspec(s) for s in d["arg_specs"]]
    out_specs = [_unspec(s) for s in d["out_specs"]]
    pos = [int(p) for p in d["diff_pos"]]
    if len(arg_specs) != int(d["n_args"]) or any(p >= len(arg_specs) or arg_specs[p] is None for p in pos):
        raise ValueError("plan state: the differentiated positions do not match the argument specs")
    in_specs = [arg_specs[p] for p in pos]
    blocks = [[(r, c) for r, c in row] for row in d["blocks"]]
    if len(blocks) != len(out_specs) or any(len(row) != len(in_specs) for row in blocks):
        raise ValueError(f"plan state: {len(blocks)} block rows for {len(out_specs)} outputs and "
                         f"{len(in_specs)} inputs")
    for j, row in enumerate(blocks):
        for i, (r, c) in enumerate(row):
            _check_block(r, c, out_specs[j].shape.numel(), in_specs[i].shape.numel(), f"[{j}][{i}]")
    st = Structure(len(arg_specs), pos, arg_specs, out_specs, bool(d["out_tuple"]), blocks,  # type: ignore[arg-type]
                   [tuple(r) for r in d["traced_reads"]])
    if d["path"] is not None:
        st.path = PathGuard.restore(f, d["path"]["reads"], d["path"]["traced"])
    return st


def coloring_state(cl: Coloring) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for fd in dataclasses.fields(cl):  # not __dataclass_fields__: that lists the ClassVars too
        v = getattr(cl, fd.name)
        out[fd.name] = [t.cpu() for t in v] if isinstance(v, tuple) else v.cpu() if isinstance(v, Tensor) else v
    return out


def coloring_from(d: Dict[str, Any]) -> Coloring:
    from .. import coloring as _coloring  # noqa: F401  (registers every axis, symmetric included)

    fields = dict(d)
    if isinstance(fields.get("pattern"), list):
        fields["pattern"] = tuple(fields["pattern"])
    try:
        return Coloring(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"plan state: not a coloring this trackjac can rebuild ({err})") from None


def check_coloring(cl: Coloring, st: Structure, symmetric_pattern: bool = False) -> None:
    """A ValueError unless ``cl`` colors the global pattern of ``st`` validly: a wrong coloring
    would mix entries into each other's compressed slots, silently."""
    rows, cols, (M, N) = st.global_coo()
    colors, k = cl.colors, cl.num_colors
    if colors.dim() != 1 or colors.dtype != torch.long or (colors.numel() and (
            int(colors.min()) < 0 or int(colors.max()) >= max(k, 1))):
        raise ValueError("plan state: the coloring's colors must be int64 in [0, num_colors)")
    if cl.axis == "symmetric":
        from ..coloring.symmetric import is_acyclic_coloring, is_star_coloring  # only symmetric states need it
        r, c = cl.pattern if cl.pattern is not None else (rows, cols)  # type: ignore[attr-defined]
        key = torch.sort(rows * N + cols).values
        if colors.numel() != N or not torch.equal(torch.sort(r * N + c).values, key):
            raise ValueError("plan state: the symmetric coloring is not of the saved pattern")
        valid = is_star_coloring if cl.method == "star" else is_acyclic_coloring  # type: ignore[attr-defined]
        if rows.numel() and not valid((rows, cols, (N, N)), colors):
            raise ValueError(f"plan state: not a valid {cl.method} coloring of the saved pattern")  # type: ignore[attr-defined]
        return
    seeded, other = cl.seeded(rows, cols), cl.compressed(rows, cols)
    if colors.numel() != cl.seeded(M, N):
        raise ValueError(f"plan state: a coloring of {colors.numel()} {cl.axis} for a pattern with "
                         f"{cl.seeded(M, N)}")
    # two seeded vertices of one color must not share a compressed slot (row or column)
    slots = other * max(k, 1) + colors.index_select(0, seeded)
    if torch.unique(slots).numel() != slots.numel():
        raise ValueError(f"plan state: not a valid coloring of the saved pattern's {cl.axis}")


# ----------------------------------------------------------------------------
# Whole plans
# ----------------------------------------------------------------------------


def _header(kind: str, plan: Any) -> Dict[str, Any]:
    if getattr(plan, "signature", None) is not None:
        # the pytree structure, argnums, has_aux and kwargs are not in the saved format (yet): refuse
        # rather than save a plan that would come back expecting other arguments
        raise NotImplementedError(
            "state_dict() saves plans built with plain positional tensor arguments; this plan was built "
            "with pytree arguments, argnums, has_aux or keyword arguments. Wrap f in a function of the "
            "flat tensors (e.g. lambda w, b: f({'w': w, 'b': b})) to save it")
    return {"format": FORMAT, "version": VERSION, "kind": kind, "layout": describe(plan.layout),
            "blocksize": blocksize_lists(plan.blocksize)}


def check_header(state: Any, kind: str) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError("not a trackjac plan state (a dict from plan.state_dict())")
    if state.get("version") != VERSION:
        raise ValueError(f"plan state of trackjac format version {state.get('version')!r}; this trackjac reads "
                         f"version {VERSION}: build the plan again (trackjac.jacobian_plan / hessian_plan) "
                         "and save its state")
    if state.get("kind") != kind:
        other = {"jacobian": "trackjac.Plan", "hessian": "trackjac.HessianPlan"}.get(state.get("kind"), "?")
        raise ValueError(f"a {state.get('kind')!r} plan state: load it with {other}.from_state")


def jacobian_state(plan: Any) -> Dict[str, Any]:
    state = _header("jacobian", plan)
    state.update(structure=structure_state(plan.structure), coloring=coloring_state(plan.coloring),
                 mode=plan.mode, chunk_size=plan._chunk_arg, auto=plan._rev_coloring is not None,
                 constant=plan._constant_state())
    return state


#: how to rebuild a plan whose state has constant entries: set by the module that defines that plan
#: (constant_part), which imports the plan module; this module imports neither
CONSTANT_LOADERS: Dict[str, Callable] = {}


def jacobian_from_state(cls: type, f: Callable, state: Dict[str, Any], compile: bool = False,
                        threads: Optional[int] = None):
    """A ``cls`` (:class:`~trackjac.Plan`) from ``state``, or the constant-entry plan it saved."""
    check_header(state, "jacobian")
    st = structure_from(state["structure"], f)
    coloring = coloring_from(state["coloring"])
    check_coloring(coloring, st)
    opts = dict(layout=layout_named(state["layout"]), blocksize=blocksize_tuples(state["blocksize"]),
                chunk_size=state["chunk_size"], compile=compile, threads=threads)
    const = state["constant"]
    if const is None:
        plan = cls(f, st, state["mode"], coloring, **opts)
    else:
        full = structure_from({**state["structure"], "blocks": const["full_blocks"]}, f)
        full.path = st.path
        split = [[(cp, vp) for cp, vp in row] for row in const["split"]]
        _check_split(full, st, split, const["values"])
        args: List[Any] = [None] * st.n_args
        for p, v in const["guard"]:
            args[int(p)] = v
        plan = CONSTANT_LOADERS["reuse"](f, full, st, state["mode"], coloring, split, const["values"], args, opts)
    if state["auto"] and plan.mode == "fwd":   # mode="auto": reverse mode if f has no forward derivative
        plan._rev_coloring = lambda: color_rows(st.global_coo())
    return plan


def _check_split(full: Structure, var: Structure, split: List[List[Any]], values: List[List[Tensor]]) -> None:
    """The constant / variable positions partition each full block, and pick the variable block."""
    for j, row in enumerate(split):
        for i, (cp, vp) in enumerate(row):
            r, c = full.blocks[j][i]
            nnz = r.numel()
            both = torch.cat([cp, vp])
            if both.numel() != nnz or not torch.equal(torch.sort(both).values, torch.arange(nnz)) \
                    or values[j][i].shape != (nnz,):
                raise ValueError(f"plan state: the constant entries of block [{j}][{i}] do not fit its pattern")
            vr, vc = var.blocks[j][i]
            if not (torch.equal(r[vp], vr) and torch.equal(c[vp], vc)):
                raise ValueError(f"plan state: the variable entries of block [{j}][{i}] do not fit its pattern")


def hessian_state(plan: Any) -> Dict[str, Any]:
    state = _header("hessian", plan)
    state.update(structure=structure_state(plan.structure), coloring=coloring_state(plan.coloring),
                 chunk_size=plan.chunk_size)
    return state


def hessian_parts(f: Callable, state: Dict[str, Any]):
    """``(structure, coloring, plan options)`` of a saved Hessian plan, checked."""
    check_header(state, "hessian")
    st = structure_from(state["structure"], f)
    if st.out_specs != st.in_specs:
        raise ValueError("plan state: a Hessian's outputs are the gradients of its inputs")
    coloring = coloring_from(state["coloring"])
    if coloring.axis not in ("symmetric", "columns"):
        raise ValueError(f"plan state: a Hessian plan needs a symmetric or column coloring; got {coloring.axis}")
    check_coloring(coloring, st)
    return st, coloring, dict(layout=layout_named(state["layout"]), blocksize=blocksize_tuples(state["blocksize"]),
                              chunk_size=state["chunk_size"])
