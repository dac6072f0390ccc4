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
import hashlib
import json
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


def _derivatives_yaml() -> str:
    import torchgen  # optional here: only its packaged derivatives.yaml is read
    return os.path.join(os.path.dirname(torchgen.__file__), "packaged", "autograd", "derivatives.yaml")


@functools.lru_cache(maxsize=None)
def derivative_entries() -> List[dict]:
    """The entries of torchgen's ``derivatives.yaml`` (empty when torchgen or PyYAML is missing)."""
    try:
        import yaml  # PyYAML, a dependency of trackjac (not of torch): without it, the hand list
        with open(_derivatives_yaml()) as fh:
            return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (ImportError, OSError):   # pragma: no cover - torch ships torchgen
        return []


def _cache_path(path: str) -> str:
    """Where the verdict on ``path`` is kept: keyed by torch's version and the file's size and time."""
    st = os.stat(path)
    key = hashlib.sha1(f"{torch.__version__}|{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = os.environ.get("TRACKJAC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "trackjac")
    return os.path.join(root, f"nondiff-{key}.json")


def packets_without_derivative() -> List[str]:
    """Names of the ``aten`` packets all of whose ``derivatives.yaml`` entries have no derivative.

    Parsing the YAML is most of trackjac's import time, so the verdict is cached on disk
    (``$TRACKJAC_CACHE_DIR``, else ``~/.cache/trackjac``) for this torch and this file.
    """
    try:
        cache = _cache_path(_derivatives_yaml())
    except (ImportError, OSError):   # pragma: no cover - torch ships torchgen
        return list(_FALLBACK)
    try:
        with open(cache) as fh:
            names = json.load(fh)
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    except (OSError, ValueError):
        pass
    entries = derivative_entries()
    if not entries:   # pragma: no cover - no PyYAML: the hand list
        return list(_FALLBACK)
    verdict: dict = {}
    for e in entries:
        base = e["name"].split("(")[0].split(".")[0]
        verdict[base] = verdict.get(base, True) and _no_derivative(e)
    names = sorted(b for b, ok in verdict.items() if ok)
    try:  # atomically, so that a concurrent import never reads half a file
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(names, fh)
        os.replace(tmp, cache)
    except OSError:   # a read-only home only costs the parse next time
        pass
    return names


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
