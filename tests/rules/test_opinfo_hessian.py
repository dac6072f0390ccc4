"""Hessian sparsity against PyTorch's OpInfo database (second order).

For every op of ``op_db`` with float64 autograd on CPU and second derivatives
(``op.supports_gradgrad``), on up to ``MAX_SAMPLES`` of the samples the first-order sweep
(``tests/rules/test_opinfo.py``) picks, with at most ``MAX_IN`` elements in the tracked tensor
(its first floating tensor; the other arguments are constants), the scalar
``f(x) = (op(x, ...) * w).sum()`` with a fixed random ``w`` in [0.5, 1.5) over the op's flattened
float outputs is traced by :func:`trackjac.hessian_sparsity` and compared with
``torch.autograd.functional.hessian`` at the sample:

* sound (asserted): the pattern contains every nonzero of the dense Hessian, in global and in
  local mode.  ``nan`` and round-off residue (below ``NOISE`` relative to the largest entry)
  are no evidence either way, as in the first-order sweep;
* tight (reported, and asserted against ``NOT_TIGHT``, which gives each exception's reason): in
  local mode, the pattern lies inside the union of the dense Hessian's nonzeros (and ``nan``)
  over the sample and ``N_PERTURB`` small random perturbations of it.  Global tightness (the
  global pattern against the same union) is reported in ``docs/op_coverage.md`` only: a choice
  by value (``relu``, ``max``) keeps every branch there by design.

Ops where ``torch.func.grad`` itself fails on plain tensors (the Hessian is traced through it)
are listed in ``NO_FUNC_GRAD``.  The sweep runs on ``TRACKJAC_OPINFO_WORKERS`` processes, like
the first-order one; set ``TRACKJAC_OPINFO_HESSIAN=0`` (or deselect ``-k "not opinfo_hessian"``)
to skip it.  ``scripts/op_coverage.py`` runs it and writes the "Second order" section of
``docs/op_coverage.md``.
"""
from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import pytest
import torch
from torch.autograd.functional import hessian

import trackjac
from trackjac import UnsupportedOpWarning

import test_opinfo as first_order   # the first-order sweep: op database, samples, flattening

MAX_SAMPLES = 3          # samples checked per op
MAX_IN = 64              # preferred samples: tracked tensor at most this large (a double backward per row)
MAX_ROWS = 48            # an op with no such sample: its smallest one, this many Hessian rows checked
N_PERTURB = 2            # perturbed points for the tightness union
PERTURB_SCALE = 1e-3     # perturbation: PERTURB_SCALE * (1 + |x|) * N(0, 1)
NOISE = 1e-10            # |H| below NOISE * max(max|H|, 1): cancellation residue, not evidence

# -- ops whose local Hessian pattern is larger than the union of the dense Hessians, and why ---
_READS_FACTORS = ("the backward formula grad * result / self reads every factor, but a product is "
                  "multilinear: no factor interacts with itself")
_FACTORIZATION = ("the backward formula (triangular solves, products with the factors) reads all of "
                  "the factors, though parts of them are linear in the input (a wide matrix's "
                  "trailing columns)")
_ONE_ELEMENT = "arithmetic: over one element (a 0-d input, a dimension of size 1) it is the identity"
NOT_TIGHT: Dict[str, str] = {
    "copysign": "the backward formula grad * result / self reads self, but copysign is piecewise "
                "linear in it (no second derivative)",
    "index_reduce.prod": _READS_FACTORS,
    "scatter_reduce.prod": _READS_FACTORS,
    "linalg.det": "det is linear in each entry (zero diagonal of the Hessian), its backward "
                  "(det * inverse) reads every entry",
    "linalg.lu": _FACTORIZATION, "linalg.lu_factor": _FACTORIZATION,
    "linalg.lu_factor_ex": _FACTORIZATION, "lu": _FACTORIZATION,
    "linalg.qr": _FACTORIZATION, "qr": _FACTORIZATION,
    "logsumexp": _ONE_ELEMENT, "masked.logsumexp": _ONE_ELEMENT,
    "native_layer_norm": "arithmetic: normalizing one element gives the constant 0",
    "nn.functional.layer_norm": "arithmetic: normalizing one element gives the constant 0",
    "masked.logaddexp": "masked-out elements are x itself (linear), but the backward of the "
                        "masked op still reads x there",
    "polar": "polar(abs, angle) is linear in abs, but its backward formula reads result / abs",
}
# -- ops whose backward reaches an op without a rule: the conservative pattern, sound -----------
CONSERVATIVE: Dict[str, str] = {
    "grid_sampler_2d": "aten.grid_sampler_2d_backward", "nn.functional.grid_sample": "aten.grid_sampler_2d_backward",
    "grid_sampler_3d": "aten.grid_sampler_3d_backward",
    "nn.functional.fractional_max_pool2d": "aten.fractional_max_pool2d_backward",
    "nn.functional.fractional_max_pool3d": "aten.fractional_max_pool3d_backward",
    "_upsample_bilinear2d_aa": "aten._upsample_bilinear2d_aa_backward",
    "nn.functional.interpolate.bicubic": "aten.upsample_bicubic2d_backward",
    "nn.functional.interpolate.bilinear": "aten.upsample_bilinear2d_backward",
    "nn.functional.upsample_bilinear": "aten.upsample_bilinear2d_backward",
    "nn.functional.interpolate.linear": "aten.upsample_linear1d_backward",
    "nn.functional.interpolate.trilinear": "aten.upsample_trilinear3d_backward",
}

# -- ops whose samples autograd has no Hessian for (its double backward raises) -------------------
NO_REFERENCE: Dict[str, str] = {
    "nn.functional.ctc_loss": "torch.autograd.functional.hessian raises on its only sample",
}

# -- ops where torch.func.grad fails on plain tensors (the error, a regular expression; why) ---
_NO_SETUP_CONTEXT = ("setup_context", "an autograd.Function without setup_context cannot run "
                     "under torch.func transforms")
NO_FUNC_GRAD: Dict[str, tuple] = {
    "nn.functional.linear_cross_entropy.chunked": _NO_SETUP_CONTEXT,
    "nn.functional.linear_cross_entropy.chunked_none": _NO_SETUP_CONTEXT,
    "tensor_split": ("data pointer", "tensor indices are read as numbers (.tolist()), which "
                                     "torch.func.grad's wrapped tensors refuse"),
}


def hessian_ops() -> Dict[str, object]:
    """Op id -> OpInfo for the ops swept: ``op_db`` ops with second derivatives, strided inputs."""
    return {name: op for name, op in first_order.all_ops().items()
            if not name.startswith("_foreach_") and op.supports_gradgrad
            and name not in first_order.UNSUPPORTED}


@dataclass
class Result:
    name: str
    n_samples: int = 0
    sound: bool = True
    tight: bool = True            # local pattern inside the union
    tight_global: bool = True     # global pattern inside the union (reported only)
    nnz_pattern: int = 0          # local pattern entries, over the samples
    nnz_extra: int = 0            # of which outside the union
    error: Optional[str] = None
    detail: List[str] = field(default_factory=list)
    conservative: List[str] = field(default_factory=list)
    seconds: float = 0.0


def _cases(op) -> list:
    """``(case, rows)``: up to ``MAX_SAMPLES`` primary cases of the first-order sweep with a small
    tracked tensor, spread over the sample list, all Hessian rows; if there is none, the one
    with the smallest tracked tensor and ``MAX_ROWS`` rows of it."""
    # a case's rows (first order's subset of a large output) do not matter: f sums every output
    every = [c for c in first_order.make_cases(op, limit=4 * MAX_SAMPLES, others=0) if c.primary]
    cases = [(c, None) for c in every if c.x.numel() <= MAX_IN]
    if not cases and every:
        c = min(every, key=lambda c: c.x.numel())
        return [(c, torch.linspace(0, c.x.numel() - 1, MAX_ROWS).round().long().unique())]
    if len(cases) <= MAX_SAMPLES:
        return cases
    picks = sorted({round(j * (len(cases) - 1) / (MAX_SAMPLES - 1)) for j in range(MAX_SAMPLES)})
    return [cases[i] for i in picks]


def _scalar(case) -> Callable:
    """``(op(x) * w).sum()`` over the op's flattened float outputs, ``w`` fixed."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = case.fn(case.x.clone()).numel()
    w = torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    return lambda x: (case.fn(x) * w).sum()


def dense_hessian(f, x, rows=None) -> Optional[torch.Tensor]:
    """``(x.numel(), x.numel())`` Hessian by autograd (``rows``: only those rows, one double
    backward each), or ``None`` where autograd has none."""
    x = x.detach().clone()
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if rows is None:
                return hessian(f, x).reshape(x.numel(), x.numel())
            x.requires_grad_()
            (g,) = torch.autograd.grad(f(x), x, create_graph=True)
            g = g.reshape(-1)
            out = []
            for i in rows.tolist():
                (h,) = torch.autograd.grad(g[i], x, retain_graph=True, allow_unused=True) \
                    if g.requires_grad else (None,)
                out.append(torch.zeros_like(x) if h is None else h)
            return torch.stack(out).reshape(len(out), x.numel()).detach()
    except Exception:
        return None


def nonzero(H: torch.Tensor) -> torch.Tensor:
    """Entries autograd proves nonzero (``nan`` and round-off residue excluded)."""
    finite = H[torch.isfinite(H)]
    tol = NOISE * max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0)
    return (H.abs() > tol) & ~torch.isnan(H)


def _possible(H: torch.Tensor) -> torch.Tensor:
    return (H != 0) | torch.isnan(H)


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:240]


def check_op(op) -> Result:
    res = Result(first_order.op_id(op))
    t0 = time.perf_counter()
    try:
        _check(op, res)
    except Exception as e:   # the harness itself (sample generation ...)
        res.sound = res.tight = False
        res.error = "harness: " + _short(e)
    res.seconds = time.perf_counter() - t0
    return res


def _check(op, res: Result) -> None:
    cases = _cases(op)
    if not cases:
        res.detail.append("no sample with a tracked tensor")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for c, rows in cases:
            f = _scalar(c)
            H = dense_hessian(f, c.x, rows)
            if H is None:
                res.detail.append(f"{c.desc}: autograd has no Hessian here")
                continue
            nz = nonzero(H)
            pats = {}
            for local in (False, True):
                try:
                    P = trackjac.hessian_sparsity(f, c.x.clone(), local=local).to_dense()
                    P = P if rows is None else P[rows]
                except Exception as e:
                    try:   # is it the gradient transform itself, without trackjac?
                        torch.func.grad(f)(c.x.clone())
                    except Exception as e2:
                        res.error = f"torch.func.grad: {_short(e2)}"
                        return
                    res.sound = res.tight = False
                    res.error = f"{c.desc}: " + _short(e)
                    return
                pats[local] = P
                miss = nz & ~P
                if miss.any():
                    res.sound = False
                    i, j = miss.nonzero()[0].tolist()
                    res.detail.append(f"{c.desc} ({'local' if local else 'global'}): misses "
                                      f"{int(miss.sum())} nonzeros, e.g. H[{i}, {j}] = {float(H[i, j]):.3g}")
            res.n_samples += 1
            U = _possible(H)
            gen = torch.Generator().manual_seed(1)
            for _ in range(N_PERTURB):
                xp = c.x + PERTURB_SCALE * (1 + c.x.abs()) * torch.randn(c.x.shape, generator=gen,
                                                                         dtype=c.x.dtype)
                Hp = dense_hessian(f, xp, rows)
                # a perturbation that leaves the op's domain (new nan) is not used
                if Hp is not None and not (torch.isnan(Hp) & ~torch.isnan(H)).any():
                    U |= _possible(Hp)
            extra = pats[True] & ~U
            res.nnz_pattern += int(pats[True].sum())
            res.nnz_extra += int(extra.sum())
            if extra.any():
                res.tight = False
                res.detail.append(f"{c.desc}: {int(extra.sum())} of {int(pats[True].sum())} local "
                                  "pattern entries are zero at every point tried")
            if (pats[False] & ~U).any():
                res.tight_global = False
    res.conservative = sorted({str(w.message).split(";")[0] for w in caught
                               if issubclass(w.category, UnsupportedOpWarning)})


# -- the sweep, on several processes ---------------------------------------------------------------
def _init_worker():
    torch.set_num_threads(1)
    hessian_ops()


def _work(name):
    return check_op(hessian_ops()[name])


def sweep(names, workers: Optional[int] = None, progress: Optional[Callable] = None) -> List[Result]:
    """Check the ops ``names`` on ``workers`` spawned processes (see ``test_opinfo.sweep``)."""
    names = list(names)
    if workers is None:
        workers = int(os.environ.get("TRACKJAC_OPINFO_WORKERS", min(2, os.cpu_count() or 1)))
    results = []
    if workers > 1 and len(names) > 8:
        import multiprocessing as mp   # only the parallel sweep needs it
        from concurrent.futures import ProcessPoolExecutor, as_completed   # likewise
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for fut in as_completed([pool.submit(_work, n) for n in names]):
                results.append(fut.result())
                if progress:
                    progress(results[-1])
        return results
    for n in names:
        results.append(_work(n))
        if progress:
            progress(results[-1])
    return results


# -- pytest ----------------------------------------------------------------------------------------
_SKIP = os.environ.get("TRACKJAC_OPINFO_HESSIAN", "1") == "0"


def _op_names():
    if _SKIP:
        return []
    try:
        return sorted(hessian_ops())
    except Exception:  # pragma: no cover - the database itself does not load
        return []


_results: Dict[str, Result] = {}


@pytest.fixture(scope="session")
def hessian_swept(request):
    """Results of every selected op, computed at once on several processes."""
    wanted = [item.callspec.params["name"] for item in request.session.items
              if item.originalname == "test_opinfo_hessian" and hasattr(item, "callspec")]
    for r in sweep([w for w in wanted if w not in _results]):
        _results[r.name] = r
    return _results


def verdict(r: Result) -> None:
    if r.name in NO_FUNC_GRAD:
        pat = NO_FUNC_GRAD[r.name][0]
        assert r.error is not None and re.search(pat, r.error), \
            f"{r.name}: torch.func.grad should fail matching {pat!r}, got: {r.error}"
        return
    assert r.error is None, f"{r.name}: {r.error}"
    if r.name in NO_REFERENCE:
        assert r.n_samples == 0, f"{r.name} has a reference now: remove it from NO_REFERENCE"
        return
    assert r.n_samples > 0, f"{r.name}: no sample could be checked: " + "; ".join(r.detail)
    assert r.sound, f"{r.name} is not sound: " + "; ".join(r.detail)
    if r.name in CONSERVATIVE:   # sound, and dense where the Hessian is (listed in op_coverage.md)
        assert any(CONSERVATIVE[r.name] in c for c in r.conservative), \
            f"{r.name} no longer reaches {CONSERVATIVE[r.name]} without a rule: remove it from CONSERVATIVE"
        return
    assert not r.conservative, f"{r.name} used the conservative fallback: {r.conservative}"
    if r.name in NOT_TIGHT:
        assert not r.tight, f"{r.name} is tight now: remove it from NOT_TIGHT"
    else:
        assert r.tight, f"{r.name} is not tight: " + "; ".join(r.detail)


@pytest.mark.parametrize("name", _op_names())
def test_opinfo_hessian(name, hessian_swept):
    verdict(hessian_swept[name])


@pytest.mark.skipif(_SKIP, reason="TRACKJAC_OPINFO_HESSIAN=0")
def test_hessian_lists_name_real_ops():
    ops = hessian_ops()
    listed = set(NOT_TIGHT) | set(NO_FUNC_GRAD) | set(CONSERVATIVE) | set(NO_REFERENCE)
    assert listed <= set(ops), sorted(listed - set(ops))
    assert len(ops) > 300
