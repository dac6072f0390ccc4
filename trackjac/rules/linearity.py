"""Whether an op is linear in its tracked arguments at one call, from PyTorch's autograd formulas.

``torchgen/packaged/autograd/derivatives.yaml`` gives, per overload, the backward formula of
each differentiable argument.  The derivative of the output w.r.t. an argument ``a`` is a
constant (the same at every point) when ``a``'s formula reads no argument that *varies*
(computed from tracked values, or drawn at random) and not the op's ``result``; reads of
metadata only (``self.sym_sizes()``, ``to_args_scalartypes(tensors)`` ...) do not count.  An
entry marked ``result: auto_linear`` is linear in all its differentiable arguments jointly, so
only its non-differentiable arguments (indices, masks) may not vary.

A formula shared by several arguments (``input, weight, bias: convolution_backward(...)``) is
split with the forward-mode formulas of the backward function it calls: its output ``i`` (the
gradient of the ``i``-th argument) reads the values of those of its parameters whose tangent
(``weight_t``) appears in its ``result{i}`` formula.  Where that is not possible, every name
the formula mentions counts.

The answer is used to decide which Jacobian entries are constant, so it errs on "not linear".
"""
from __future__ import annotations

import functools
import re
from typing import Dict, List, Optional, Set, Tuple

import torch

from .api import Call, Carrier
from .nondiff import derivative_entries
from .registry import INDICES, derived_index

aten = torch.ops.aten

# Tensor methods that read metadata (shape, dtype, device ...), never values.
_METADATA = ("sym_sizes", "sizes", "sym_size", "size", "options", "scalar_type", "dim", "numel",
             "sym_numel", "strides", "sym_strides", "stride", "sym_stride", "layout", "device", "is_conj",
             "is_neg", "dtype", "suggest_memory_format", "is_contiguous", "requires_grad", "defined",
             "is_complex", "is_floating_point", "ndimension", "storage_offset", "sym_storage_offset",
             "is_sparse", "is_nested", "_fw_grad")
_METHOD = re.compile(r"\b\w+\s*(?:\.|->)\s*(?:" + "|".join(_METADATA) + r")\s*\(([^()]*)\)")
# Helpers that read their arguments' metadata only.
_HELPERS = re.compile(r"(?<![.\w>:])(?:to_args_sizes|to_args_sizes_symint|to_args_scalartypes|zeros_like|ones_like"
                      r"|empty_like)\s*\(([^()]*)\)")
# Methods that read their argument's metadata only (``grad.expand_as(source)``).
_AS = re.compile(r"(\.\s*(?:expand_as|view_as|reshape_as|type_as)\s*\()\s*\w+\s*\)")
# A name used as a variable: not a member (``x.cos``), not qualified (``at::mm``).
_NAME = re.compile(r"(?<![.\w>:])([A-Za-z_]\w*)")
_RESULT = re.compile(r"^result\d*$")
_NOT_FORMULAS = {"name", "output_differentiability", "dispatch"}
# Registry kinds of pure data movement: linear without a formula.  (Not "indexing": its
# overloads without a formula include scatter(reduce="multiply") and embedding_renorm.)
_MOVEMENT = "table:movement"


def _strip_metadata(formula: str) -> str:
    prev = None
    while prev != formula:   # nested metadata reads (x.sizes() inside to_args_sizes(...))
        prev = formula
        formula = _METHOD.sub(" ", formula)
        formula = _HELPERS.sub(" ", formula)
        formula = _AS.sub(r"\1)", formula)
    return formula


def names_read(formula: str) -> Set[str]:
    """The variables a formula reads values of (metadata reads removed)."""
    return set(_NAME.findall(_strip_metadata(formula)))


class Entry:
    """One ``derivatives.yaml`` entry: per argument, the names its gradient formula reads."""

    __slots__ = ("auto_linear", "reads", "differentiable")

    def __init__(self, auto_linear: bool, reads: Dict[str, Optional[Set[str]]], differentiable: Set[str]):
        self.auto_linear = auto_linear
        self.reads = reads      # argument -> names read; None: no formula usable (not implemented)
        self.differentiable = differentiable  # the arguments with a gradient formula


def _overload_key(schema_name: str) -> str:
    """``"mul.Tensor(Tensor self, ...) -> Tensor"`` -> ``"mul.Tensor"`` (``"mm"`` for default)."""
    return schema_name.split("(")[0].strip()


def _params(schema_name: str) -> List[str]:
    sig = schema_name.split("(", 1)[1].rsplit(") ->", 1)[0]
    out = []
    for part in _top_level_split(sig):
        part = part.split("=")[0].strip()
        if part and part != "*":
            out.append(part.split()[-1])
    return out


def _returns(schema_name: str) -> List[str]:
    """Names of the outputs (``-> (Tensor values, Tensor indices)``); unnamed ones are ``result``
    (``result0``, ``result1`` ... in formulas)."""
    ret = schema_name.rsplit("->", 1)[1].strip()
    if ret.startswith("(") and ret.endswith(")"):
        ret = ret[1:-1]
    return [p.split()[-1] for p in _top_level_split(ret) if len(p.split()) > 1]


def _top_level_split(text: str) -> List[str]:
    """Split at commas outside brackets (``(``, ``[``, ``{``, ``<``)."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _formulas(e: dict) -> Dict[str, str]:
    disp = e.get("dispatch")
    forms = {k: v for k, v in e.items() if k not in _NOT_FORMULAS}
    if isinstance(disp, dict):   # the Default dispatch's formulas
        forms.update({k: v for k, v in disp.get("Default", {}).items() if k not in _NOT_FORMULAS})
    return {k: str(v) for k, v in forms.items()}


def _split_shared(formula: str, slot: int, n_grads: int, raw: Dict[str, dict]) -> Optional[Set[str]]:
    """Names the gradient in output ``slot`` of a shared formula reads, if the backward function
    it calls has forward-mode formulas that tell; else ``None``."""
    for m in re.finditer(r"(?<![.\w>:])(\w+?)(?:_symint)?\s*\(", formula):
        callee = raw.get(m.group(1))
        if callee is None:
            continue
        forms = _formulas(callee)
        jvp = forms.get(f"result{slot}")
        if jvp is None or len(_returns(callee["name"]) or _top_level_split(
                callee["name"].rsplit("->", 1)[1].strip().strip("()"))) != n_grads:
            continue   # no forward formula per output, or not one output per gradient
        args = _top_level_split(formula[m.end():_closing(formula, m.end())])
        params = _params(callee["name"])
        if len(args) > len(params):
            continue
        # the output changes with a parameter whose tangent (``weight_t``) the jvp takes; a primal
        # (``input_p``) read outside the backward function's own calls may select a branch
        # (prelu's ``where(self_p >= 0, ...)``) and counts too; the backward function's own use
        # of a primal inside those calls is the (bilinear) structure the jvp spells out
        outside = _without_calls(jvp, m.group(1))
        if any(_RESULT.match(n) for n in _NAME.findall(outside)):
            return None   # the jvp reads the output itself: unknown
        read = {n[:-2] for n in _NAME.findall(jvp) if n.endswith("_t")}
        read |= {n[:-2] if n.endswith("_p") else n for n in _NAME.findall(outside)}
        out: Set[str] = set()
        for p, a in zip(params, args):
            if p in read:
                out |= names_read(a)
        return out
    return None


def _closing(text: str, start: int) -> int:
    """Index of the parenthesis closing the one opened just before ``start``."""
    depth, i = 1, start
    while i < len(text) and depth:
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    return i - 1


def _without_calls(text: str, fn: str) -> str:
    """``text`` with every call of ``fn`` (or ``fn_symint``) removed, arguments included."""
    out, pos = [], 0
    for m in re.finditer(r"(?<![.\w>:])" + re.escape(fn) + r"(?:_symint)?\s*\(", text):
        if m.start() < pos:
            continue
        out.append(text[pos:m.start()])
        pos = _closing(text, m.end()) + 1
    out.append(text[pos:])
    return " ".join(out)


def _outputs_as_result(names: Set[str], outputs: Set[str]) -> Set[str]:
    """A formula reading an output by its name (``indices`` of ``sort``) reads ``result``."""
    return {"result" if n in outputs else n for n in names}


@functools.lru_cache(maxsize=None)
def _table() -> Dict[str, Entry]:
    entries = derivative_entries()
    raw = {_overload_key(e["name"]).split(".")[0]: e for e in entries if "." not in _overload_key(e["name"])}
    table = {}
    for e in entries:
        forms = _formulas(e)
        params = set(_params(e["name"]))
        outputs = set(_returns(e["name"])) - params
        reads: Dict[str, Optional[Set[str]]] = {}
        diff: Set[str] = set()
        for key, f in forms.items():
            if _RESULT.match(key) or key in outputs:
                continue   # a forward-mode formula (of the output named so)
            names = [n.strip() for n in key.split(",")]
            for slot, n in enumerate(names):
                if f.startswith("not_implemented"):
                    reads[n] = None
                elif f == "non_differentiable":
                    reads[n] = set()
                elif len(names) == 1:
                    reads[n] = _outputs_as_result(names_read(f), outputs)
                    diff.add(n)
                else:
                    split = _split_shared(f, slot, len(names), raw)
                    reads[n] = _outputs_as_result(split if split is not None else names_read(f), outputs)
                    diff.add(n)
        table[_overload_key(e["name"])] = Entry(forms.get("result") == "auto_linear", reads, diff)
    return table


# ``_foreach_<op>.<overload>`` -> the per-tensor overloads it may apply: the foreach entries are
# generated from those, not written in derivatives.yaml
_FOREACH = {"List": ("Tensor", "default"), "Tensor": ("Tensor", "default"), "Scalar": ("Scalar", "default"),
            "ScalarList": ("Scalar", "default"), "default": ("default",)}


def entry(func) -> Optional[Entry]:
    """The ``derivatives.yaml`` entry of an ATen overload (of the per-tensor op, for a
    ``_foreach_*`` op, in the foreach op's argument names), or ``None``."""
    if func.namespace != "aten":
        return None   # derivatives.yaml names ATen overloads only (prims' arguments are other ones)
    name = func.overloadpacket.__name__
    over = func._overloadname
    if name.startswith("_foreach_"):
        return _per_tensor_entry(func)
    return _table().get(name if over == "default" else f"{name}.{over}")


def _element_type(t: str) -> str:
    """``List[Tensor]`` -> ``Tensor``: the type of a list argument's elements."""
    return t[len("List["):-1] if t.startswith("List[") and t.endswith("]") else t


@functools.lru_cache(maxsize=None)
def _per_tensor_entry(func) -> Optional[Entry]:
    base = func.overloadpacket.__name__[len("_foreach_"):]
    packet = getattr(aten, base, None)
    args = func._schema.arguments
    for ov in _FOREACH.get(func._overloadname, ()):
        op = getattr(packet, ov, None) if packet is not None else None
        e = _table().get(base if ov == "default" else f"{base}.{ov}") if op is not None else None
        per = op._schema.arguments if op is not None else []
        # the same arguments in the same order, a list of each per-tensor type (names may differ)
        if e is None or len(per) != len(args) or any(
                _element_type(str(a.type)) != str(p.type) for a, p in zip(args, per)):
            continue
        to_foreach = {p.name: a.name for a, p in zip(args, per)}
        reads = {to_foreach.get(k, k): (None if r is None else {to_foreach.get(n, n) for n in r})
                 for k, r in e.reads.items()}
        return Entry(e.auto_linear, reads, {to_foreach.get(n, n) for n in e.differentiable})
    return None


def _tensors(v) -> list:
    return [t for t in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(t, torch.Tensor)]


def _argument_states(call: Call) -> Tuple[Set[str], Set[str]]:
    """``(carrying, varying)``: argument names with provenance, and those whose values vary."""
    carrying, varying = set(), set()
    for name, v in call.bound.items():
        ts = _tensors(v)
        if any(call.prov(t) is not None for t in ts):
            carrying.add(name)
        if any(isinstance(t, Carrier) and t._store.origin != 0 for t in ts):
            varying.add(name)
    return carrying, varying


def linear_at(call: Call, func, kind: Optional[str]) -> bool:
    """Whether ``func`` (a functional overload) at ``call`` is linear in the arguments that carry
    provenance, with a derivative that is the same at every point.  ``kind``: where its rule
    comes from (``table:<module>`` or ``<tag> tag``; anything else, or ``None``, is not linear:
    only a registered rule can be re-run on other provenance)."""
    if call.local or kind is None or not (kind.startswith("table:") or kind.endswith(" tag")):
        return False
    packet = func.overloadpacket
    if derived_index(call, INDICES.get(packet, ())):
        return False   # a varying index or mask: entries switch between 0 and 1
    carrying, varying = _argument_states(call)
    # an out= buffer's old values are overwritten: only the functional op's arguments count
    names = {a.name for a in func._schema.arguments}
    carrying, varying = carrying & names, varying & names
    e = entry(func)
    if e is None:
        # data movement; an argument that varies without carrying provenance (sizes, repeats,
        # indices given as tensors) could move the data elsewhere at another point
        return kind == _MOVEMENT and varying <= carrying
    if any(e.reads.get(a) is None for a in carrying):
        return False   # provenance through an argument without a usable formula: unknown
    if e.auto_linear:
        # linear in the differentiable arguments jointly: only a varying non-differentiable
        # argument (an index, a mask) can change the map
        return all(a in e.differentiable for a in varying - carrying)
    for a in carrying:
        reads = e.reads.get(a)
        if reads is None:   # no formula, or not implemented: unknown
            return False
        if reads & varying or any(_RESULT.match(n) for n in reads):
            return False
    return True
