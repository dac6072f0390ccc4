"""Ops without a derivative: their outputs carry no provenance (and no warning).

PyTorch says which ops have no derivative in its autograd metadata,
``torchgen/packaged/autograd/derivatives.yaml`` (shipped with torch): an entry whose
outputs are all marked ``output_differentiability: False`` (``histc``), or whose every
input formula is ``not_implemented(...)`` or ``non_differentiable`` (``_unique2``,
``unique_consecutive``).  Autograd gives such outputs no gradient, so the Jacobian has no
entry for them.  Their values are still *derived* from tracked values: a choice made with
them (``where``, an index) is a choice made by tracked values.

Only packets that would otherwise get the conservative pattern get this rule: no registered
rule, no tag rule, no decomposition (so this module is imported after the other rule modules).
"""
from __future__ import annotations

import functools
import os
from typing import Iterable, List

import torch

from .registry import find_with_kind, register

aten = torch.ops.aten

# Used when torchgen's metadata is not installed.
_FALLBACK = ("_unique", "_unique2", "unique_dim", "unique_consecutive", "unique_dim_consecutive", "histc")
_NOT_FORMULAS = {"name", "output_differentiability", "dispatch", "result"}


def _no_derivative(entry: dict) -> bool:
    od = entry.get("output_differentiability")
    if od is not None and not any(od):
        return True
    if "result" in entry:   # a forward-mode formula: differentiable
        return False
    forms = [v for k, v in entry.items() if k not in _NOT_FORMULAS]
    disp = entry.get("dispatch")
    if isinstance(disp, dict):
        for d in disp.values():
            forms += [v for k, v in d.items() if k not in _NOT_FORMULAS]
    return bool(forms) and all(isinstance(f, str) and (f.startswith("not_implemented") or f == "non_differentiable")
                               for f in forms)


@functools.lru_cache(maxsize=None)
def derivative_entries() -> List[dict]:
    """The entries of torchgen's ``derivatives.yaml`` (empty when torchgen or PyYAML is missing)."""
    try:
        import torchgen  # optional here: only its packaged derivatives.yaml is read
        import yaml  # PyYAML (not a torch requirement: without it, the hand list)
        path = os.path.join(os.path.dirname(torchgen.__file__), "packaged", "autograd", "derivatives.yaml")
        with open(path) as fh:
            return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (ImportError, OSError):   # pragma: no cover - torch ships torchgen
        return []


def packets_without_derivative() -> List[str]:
    """Names of the ``aten`` packets all of whose ``derivatives.yaml`` entries have no derivative."""
    entries = derivative_entries()
    if not entries:   # pragma: no cover - torch ships torchgen
        return list(_FALLBACK)
    verdict: dict = {}
    for e in entries:
        base = e["name"].split("(")[0].split(".")[0]
        verdict[base] = verdict.get(base, True) and _no_derivative(e)
    return sorted(b for b, ok in verdict.items() if ok)


def _uncovered(names: Iterable[str]) -> list:
    """The packets among ``names`` that have no rule and no decomposition."""
    table = torch._decomp.decomposition_table
    out = []
    for n in names:
        packet = getattr(aten, n, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        ops = [getattr(packet, o) for o in packet.overloads()]
        if not ops or find_with_kind(ops[0])[0] is not None or any(op in table for op in ops):
            continue
        out.append(packet)
    return out


def no_derivative(call):
    """An op without a derivative: no output carries provenance (the values stay derived)."""
    return [None] * len(call.outs)


register(_uncovered(packets_without_derivative()), no_derivative)
