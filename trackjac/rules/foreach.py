"""``_foreach_*`` ops: the rule of the per-tensor op, applied to each list position.

``_foreach_add(xs, ys, alpha=a)[i]`` is ``add(xs[i], ys[i], alpha=a)``: list
arguments (tensor lists and scalar lists) are indexed, everything else is passed
as it is, and the per-tensor op's own rule (pointwise, selection, reduction,
product ...) gives the provenance of output ``i``.  In-place variants
(``_foreach_add_``) reach the same rule through the registry.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from .registry import find, register

aten = torch.ops.aten

# per-tensor overload and the names its rule reads, in the foreach op's argument order
_BASE: Dict[str, tuple] = {
    "add": (aten.add.Tensor, ("self", "other", "alpha")),
    "sub": (aten.sub.Tensor, ("self", "other", "alpha")),
    "mul": (aten.mul.Tensor, ("self", "other")),
    "div": (aten.div.Tensor, ("self", "other")),
    "pow": (aten.pow.Tensor_Tensor, ("self", "exponent")),
    "maximum": (aten.maximum.default, ("self", "other")),
    "minimum": (aten.minimum.default, ("self", "other")),
    "clamp_min": (aten.clamp_min.Tensor, ("self", "min")),
    "clamp_max": (aten.clamp_max.Tensor, ("self", "max")),
    "addcmul": (aten.addcmul.default, ("self", "tensor1", "tensor2", "value")),
    "addcdiv": (aten.addcdiv.default, ("self", "tensor1", "tensor2", "value")),
    "lerp": (aten.lerp.Tensor, ("self", "end", "weight")),
    "norm": (aten.linalg_vector_norm.default, ("self", "ord", "dtype")),
    "powsum": (aten.linalg_vector_norm.default, ("self", "ord", "dtype")),
    "max": (aten.max.default, ("self",)),
    "mm": (aten.mm.default, ("self", "mat2")),
    "copy": (aten.copy.default, ("self", "src", "non_blocking")),
    "clone": (aten.clone.default, ("self", "memory_format")),
    "zero": (aten.zero.default, ("self",)),
}


def _base(name: str):
    if name in _BASE:
        return _BASE[name]
    return getattr(aten, name).default, ("self",)   # unary pointwise ops


def _length(values: Sequence) -> int:
    return next(len(v) for v in values if isinstance(v, (list, tuple)))


def foreach(call) -> list:
    """Output ``i``: the per-tensor op's rule on position ``i``.  Registered with ``always``: the
    per-tensor rules decide ``call.derived`` (``_foreach_zero_`` makes fresh constants), even
    when no input carries provenance."""
    name = call.func._schema.name.split("::")[1][len("_foreach_"):].rstrip("_")
    base, names = _base(name)
    rule = find(base)
    values = [call.bound[a.name] for a in call.func._schema.arguments
              if a.name in call.bound and not (a.kwarg_only and a.alias_info is not None
                                                 and a.alias_info.is_write)]
    n = _length(values)
    if name == "pow" and not isinstance(values[0], (list, tuple)):   # pow(Scalar, Tensor[])
        base, names = aten.pow.Scalar, ("self", "exponent")
        rule = find(base)
    res: list = []
    derived = False
    for i in range(n):
        bound = {}
        for nm, v in zip(names, values):
            if isinstance(v, (list, tuple)):
                v = v[i]
            elif isinstance(v, torch.Tensor) and v.dim() == 1 and v.numel() == n and nm == "value":
                v = v[i]   # ``scalars`` given as one tensor of per-position values
            bound[nm] = v
        sub = call.sub(base, bound, [call.outs[i]])
        out: Optional[object] = rule(sub)[0] if rule is not None else None
        derived = derived or sub.derived
        res.append(out)
    call.derived = derived
    return res


def _all_foreach():
    names = set()
    for s in torch._C._jit_get_all_schemas():
        if s.name.startswith("aten::_foreach_"):
            name = s.name.split("::")[1]
            if not name.endswith("_"):
                names.add(name)
    return sorted(names)


register([getattr(aten, n) for n in _all_foreach()], foreach, always=True)
