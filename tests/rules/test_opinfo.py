"""Every ATen op against PyTorch's own OpInfo database.

For every op of ``op_db`` (and of the ``_foreach_*`` databases) that supports autograd in
float64 on CPU, for up to ``MAX_SAMPLES`` of its sample inputs (small ones, spread over the
sample list), the sample's first floating tensor is tracked, and the pattern of
:func:`trackjac.jacobian_sparsity` is compared with the dense Jacobian autograd computes at
that sample (reverse mode, one backward per output row):

* sound: the pattern contains every nonzero of the dense Jacobian, in global and in local
  mode.  Up to ``MAX_OTHERS`` further floating arguments of each sample are tracked too and
  checked for soundness.  Ops that cannot be supported are listed in ``UNSUPPORTED`` and
  must raise a clear error (the test checks the message);
* tight: in local mode, the pattern lies inside the union of the dense Jacobian's nonzeros
  over the sample and ``N_PERTURB`` small random perturbations of the tracked tensor.  Ops
  that are not are listed in ``NOT_TIGHT`` with the reason; a listed op that becomes tight
  fails too, so the list stays exact;
* no op falls back to the conservative pattern, and every op is checked on at least one
  sample: nothing is skipped silently.

Float outputs are flattened and concatenated.  A complex output enters as its real view,
and an element depends on ``x[j]`` when its real or its imaginary part does (trackjac's
provenance is per element).  Entries that are ``nan``, or below ``NOISE`` (the residue of
terms that cancel exactly in a factorization's backward formula), are no evidence either
way.  Random ops run with the same seed for the reference and for tracking.

In-place and ``out=`` variants of a representative set of ops (``INPLACE``, ``OUT``) are
swept the same way, and custom ``torch.autograd.Function`` s are tested at the end.
The sweep runs on ``TRACKJAC_OPINFO_WORKERS`` processes (default: the cores, at most 2).
``scripts/op_coverage.py`` runs it and writes ``docs/op_coverage.md``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

import trackjac
from trackjac import StrictModeError, UnsupportedOpWarning
from trackjac.tracer import resolve

from dense_reference import dense_jacobian, finite_differences, rows_jacobian

FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COMPLEX = (torch.complex32, torch.complex64, torch.complex128)

MAX_SAMPLES = 4          # samples checked per op
MAX_OTHERS = 2           # further floating arguments of a sample tracked (soundness only)
MAX_IN = 800             # preferred samples: tracked tensor at most this large ...
MAX_OUT = 800            # ... and flattened output at most this large
MAX_ROWS = 256           # an op with no such sample: its smallest one, this many output rows
N_PERTURB = 3            # perturbed points for the tightness union
PERTURB_SCALE = 1e-3     # perturbation: PERTURB_SCALE * (1 + |x|) * N(0, 1)
NOISE = 1e-12            # |J| below NOISE * max(max|J|, 1): cancellation residue, not evidence
LOOP_ROWS = 200          # outputs up to this size: one backward per row, larger: batched

# -- ops that cannot be supported: the error each raises (a regular expression) --------------
_SPARSE = "sparse|strided"
UNSUPPORTED: Dict[str, str] = {
    "to_sparse": _SPARSE,                 # the result is a sparse tensor
    "sparse.sampled_addmm": _SPARSE,      # sparse CSR input (the first floating tensor)
    "sparse.mm.reduce": _SPARSE,          # sparse CSR input (the first floating tensor)
}
UNSUPPORTED_REASON = "trackjac tracks strided (dense) tensors only, not sparse layouts"

# -- ops whose autograd formula is wrong in this torch: the reference is central differences --
FD_REFERENCE: Dict[str, str] = {
    "as_strided_scatter": "autograd's derivative for `input` is nonzero on the scattered region "
                          "and zero elsewhere, the complement of the right one",
}

# -- ops whose local pattern is larger than the union of the dense Jacobians, and why --------
_DFT = ("arithmetic zeros of the DFT matrix: the real input feeds only the real part of the "
        "complex spectrum and cos(2 pi k n / N) = 0 for some (k, n); trackjac tracks a complex "
        "element (both parts) as one")
NOT_TIGHT: Dict[str, str] = {
    "corrcoef": "arithmetic: the correlation of a single variable with itself is c / sqrt(c * c) = 1",
    "nn.functional.cosine_similarity": "arithmetic: for 0-d inputs x1 * x2 / (|x1| |x2|) = +-1",
    "nn.functional.normalize": "arithmetic: normalizing over a dimension of size 1 gives x / |x| = +-1",
    "masked.normalize": "arithmetic: x / max|x| is +-1 at the maximum, and x / |x| for 0-d input",
    "nn.functional.hinge_embedding_loss": "arithmetic: with a target that is neither 1 nor -1 the "
                                          "loss is (margin - x) + x",
    "fft.irfft2": _DFT, "fft.irfftn": _DFT, "fft.hfft2": _DFT, "fft.hfftn": _DFT,
    "stft": "return_complex=False: the imaginary parts of the DC and Nyquist bins of a real "
            "signal's spectrum are identically 0, but trackjac tracks a complex element as one",
}

# -- known unsound uses, listed so the test fails when they change: "op[variant]" -> why -------
KNOWN_UNSOUND: Dict[str, str] = {}   # torch._foreach_add_(xs, t) with a 0-d tracked t: see
# context._foreach_scalar_tensor (PyTorch's parser would read t as a number) and its test

# -- variants that raise a clear error: "op[variant]" -> (the error, a regular expression; why) --
_PLAIN_BUFFER = ("plain tensor", "the out= overload of this composite op writes the result's "
                 "by-products (LU, info) into temporaries it allocates itself, which cannot be "
                 "trackable; the functional op works")
VARIANT_ERRORS: Dict[str, tuple] = {
    "linalg.solve[out]": _PLAIN_BUFFER,
    "linalg.cholesky[out]": _PLAIN_BUFFER,
}

# -- variants swept too: op ids whose inplace_variant / out= is tested -------------------------
INPLACE = [
    "add", "sub", "mul", "div.no_rounding_mode", "div.floor_rounding", "clamp", "clamp_min",
    "addcmul", "addcdiv", "lerp", "pow", "exp", "sigmoid", "tanh", "abs", "floor", "remainder",
    "hypot", "atan2", "copysign", "nan_to_num", "masked_fill", "masked_scatter", "index_put",
    "index_add", "index_copy", "index_fill", "scatter", "scatter_add", "tril", "triu", "fill",
    "renorm", "addmm", "baddbmm", "addmv", "addr", "cumsum", "squeeze", "unsqueeze", "t",
    "transpose", "nn.functional.relu", "nn.functional.hardtanh", "nn.functional.leaky_relu",
    "nn.functional.elu", "_foreach_add", "_foreach_mul", "_foreach_exp", "_foreach_addcmul",
    "_foreach_lerp", "_foreach_maximum", "_foreach_zero",
]
OUT = [
    "add", "mul", "sum", "mean", "cumsum", "cat", "stack", "mm", "bmm", "addmm", "matmul", "sort",
    "topk", "max.reduction_with_dim", "amax", "clamp", "where", "index_select", "gather",
    "linalg.solve", "linalg.cholesky", "linalg.qr", "linalg.svd", "exp", "sigmoid", "logsumexp",
    "linalg.vector_norm", "take", "tril", "diag", "cross", "kthvalue", "cummax", "var_mean",
    "fft.fft", "fft.rfft", "polar", "complex", "nn.functional.relu", "masked_select",
]


# ---------------------------------------------------------------------------------------------
def _load_dbs():
    from torch.testing._internal import common_methods_invocations as cmi
    ops = []
    for db in (cmi.op_db, cmi.foreach_unary_op_db, cmi.foreach_binary_op_db,
               cmi.foreach_pointwise_op_db, cmi.foreach_reduce_op_db, cmi.foreach_other_op_db):
        ops += [op for op in db if op.supports_autograd and torch.float64 in op.supported_dtypes("cpu")]
    return ops


def op_id(op) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


_OPS = None


def all_ops() -> Dict[str, object]:
    """Op id -> OpInfo, for every op swept."""
    global _OPS
    if _OPS is None:
        _OPS = {op_id(op): op for op in _load_dbs()}
    return _OPS


def _is_random(op) -> bool:
    return any(k in op.name for k in ("dropout", "rrelu", "bernoulli", "normal", "rand", "uniform",
                                      "multinomial", "fractional_max_pool", "svd_lowrank",
                                      "pca_lowrank"))


def _sample_kwargs(op) -> dict:
    return {"num_input_tensors": [2]} if op.name.startswith("_foreach_") else {}


# -- cases ---------------------------------------------------------------------------------------
@dataclass
class Case:
    """One tracked tensor of one sample: ``fn(x)`` returns the op's float outputs, flattened."""
    fn: Callable
    x: torch.Tensor
    desc: str
    groups: Optional[torch.Tensor] = None   # flat output row -> element (complex parts share one)
    rows: Optional[torch.Tensor] = None     # the output rows checked (None: all)
    primary: bool = True                    # the sample's first floating tensor (else: soundness only)
    ref: Optional[Callable] = None          # what autograd differentiates (fn, or the functional op)


def _flat_float(out, groups: Optional[list] = None) -> Optional[torch.Tensor]:
    parts, base = [], 0
    for o in tree_flatten(out)[0]:
        if not isinstance(o, torch.Tensor):
            continue
        if o.dtype in COMPLEX:
            n = o.numel()
            o = torch.view_as_real(o.resolve_conj())
            if groups is not None:
                groups.append(torch.arange(n).repeat_interleave(2) + base)
            base += n
        elif o.dtype in FLOAT:
            if groups is not None:
                groups.append(torch.arange(o.numel()) + base)
            base += o.numel()
        else:
            continue
        parts.append(o.reshape(-1).to(torch.float64))
    if not parts:
        return None
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def make_cases(op, variant: str = "op", limit: int = MAX_SAMPLES, others: int = MAX_OTHERS,
               sparse: bool = False) -> List[Case]:
    """Up to ``limit`` samples with a small tracked tensor and output, spread over the sample list
    (samples come grouped by kind: plain, broadcasting, scalar ...).  For each, the case tracking
    its first floating tensor, then up to ``others`` cases tracking its other floating tensors.
    If no sample is small, the smallest one, with ``MAX_ROWS`` output rows checked.

    ``variant``: ``op``, ``inplace`` (``op.inplace_variant`` on a clone of the input) or ``out``
    (``op(..., out=buffer)``).  ``sparse``: keep samples with sparse tensors (``UNSUPPORTED``).
    """
    candidates = []
    torch.manual_seed(0)   # sample values come from the global generator: same samples every run
    for si in op.sample_inputs("cpu", torch.float64, requires_grad=False, **_sample_kwargs(op)):
        if len(candidates) >= 8 * limit:
            break
        flat, spec = tree_flatten((si.input, si.args, si.kwargs))
        ks = [i for i, a in enumerate(flat) if isinstance(a, torch.Tensor) and a.dtype in FLOAT]
        if not ks or flat[ks[0]].numel() == 0:
            continue
        if not sparse and any(isinstance(a, torch.Tensor) and a.layout != torch.strided for a in flat):
            continue
        candidates.append((flat, spec, ks, si.output_process_fn_grad))
    small = [c for c in candidates if c[0][c[2][0]].numel() <= MAX_IN]
    order = sorted(range(len(small)), key=lambda i: _spread_key(i, len(small), limit))
    cases: List[Case] = []
    taken = 0
    for i in order:
        if taken >= limit:
            break
        taken += _add_cases(cases, op, variant, small[i], f"sample {i}", others, sparse)
    if not taken and candidates:   # every sample is large: the smallest, on a subset of rows
        i = min(range(len(candidates)), key=lambda i: candidates[i][0][candidates[i][2][0]].numel())
        _add_cases(cases, op, variant, candidates[i], f"large sample {i}", others, sparse, big=True)
    return cases


def _add_cases(cases, op, variant, cand, desc, others, sparse, big=False) -> int:
    flat, spec, ks, post = cand
    first = _case(op, variant, flat, spec, ks[0], desc, big, sparse, post)
    if first is None:
        return 0   # the sample does not run as this variant (also without trackjac)
    cases.append(first)
    for k in ks[1:1 + others]:
        if 0 < flat[k].numel() <= (10 * MAX_IN if big else MAX_IN) and not any(
                flat[k] is flat[q] for q in ks if q != k):
            c = _case(op, variant, flat, spec, k, f"{desc}, arg {ks.index(k)}", big, post=post)
            if c is not None:
                c.primary = False
                cases.append(c)
    return 1


def _case(op, variant, flat, spec, k, desc, big=False, expect_error=False, post=None) -> Optional[Case]:
    """``post``: the sample's ``output_process_fn_grad`` (OpInfo's gradient checks use it to make
    outputs well-defined, e.g. eigenvectors up to phase), applied before flattening."""
    random = _is_random(op)

    def fn(x, groups=None, variant=variant):
        items = list(flat)
        items[k] = x
        inp, args, kwargs = tree_unflatten(items, spec)
        if random:
            torch.manual_seed(0)
        if variant == "op" and op.op is not op.inplace_variant:
            out = op(inp, *args, **kwargs)
        elif variant in ("op", "inplace"):   # ops that are in place themselves (_foreach_zero_)
            out = op.inplace_variant(_clone_tree(inp), *args, **kwargs)
        else:
            ref = op(inp, *args, **kwargs)
            buf = _like_tree(ref)
            if random:
                torch.manual_seed(0)
            op.op(inp, *args, **kwargs, out=buf)
            out = buf
        return _flat_float(out if post is None else post(out), groups)

    # autograd does not differentiate out= calls: their reference is the functional op's
    ref_fn = functools.partial(fn, variant="op") if variant == "out" else fn

    x0 = flat[k].detach().clone()
    if expect_error:   # UNSUPPORTED: only the error tracking raises matters
        return Case(fn, x0, f"{desc}: x{tuple(x0.shape)} ({x0.layout})", ref=fn)
    groups: list = []
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = fn(x0.clone(), groups=groups)
    except Exception:
        return None
    if y is None or y.numel() == 0 or (y.numel() > MAX_OUT and not big):
        return None
    g = torch.cat(groups)
    rows = None
    if y.numel() > MAX_OUT:
        rows = torch.linspace(0, y.numel() - 1, MAX_ROWS).round().long().unique()
        g = g[rows]
        g = torch.unique(g, return_inverse=True)[1]
    identity = g.numel() == y.numel() and bool((g == torch.arange(g.numel())).all())
    return Case(fn, x0, f"{desc}: x{tuple(x0.shape)}", None if identity else g, rows, ref=ref_fn)


def _spread_key(i: int, n: int, limit: int):
    """Order 0..n-1 so that the first ``limit`` are evenly spread, then the rest in order."""
    if n <= limit:
        return (0, i)
    picks = {round(j * (n - 1) / (limit - 1)) for j in range(limit)} if limit > 1 else {0}
    return (0, i) if i in picks else (1, i)


def _clone_tree(a):
    """Copies to write into in place, made by a factory: trackable under ``tracking()``, like a
    buffer the tracked function allocates (a plain tensor written with tracked values is an error)."""
    flat, spec = tree_flatten(a)
    return tree_unflatten([torch.empty_like(t).copy_(t) if isinstance(t, torch.Tensor) else t
                           for t in flat], spec)


def _like_tree(a):
    flat, spec = tree_flatten(a)
    return tree_unflatten([torch.empty_like(t) if isinstance(t, torch.Tensor) else t for t in flat], spec)


# -- references (the Jacobians themselves: tests/dense_reference.py) --------------------------------
def _group_rows(M: torch.Tensor, groups: Optional[torch.Tensor]) -> torch.Tensor:
    if groups is None:
        return M
    out = torch.zeros(int(groups.max()) + 1 if groups.numel() else 0, M.shape[1], dtype=torch.int32)
    out.index_put_((groups,), M.to(torch.int32), accumulate=True)
    return out > 0


def nonzero(J: torch.Tensor) -> torch.Tensor:
    """Entries autograd proves nonzero.  Neither ``nan`` nor rounding residue is evidence either
    way, so both are excluded here and counted as possible in the tightness union: autograd
    spreads ``nan`` across rows (``0 * nan`` in a broadcast's reduction), and backward formulas
    of factorizations leave ``1e-17``-size residues of terms that cancel exactly (``NOISE``
    relative to the largest entry, absolute where all are small: ``(x - mean(x)) * w`` over a
    single element leaves ``1e-15``)."""
    finite = J[torch.isfinite(J)]
    tol = NOISE * max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0)
    return (J.abs() > tol) & ~torch.isnan(J)


def pattern(fn, x, local: bool, rows=None) -> torch.Tensor:
    P = trackjac.jacobian_sparsity(fn, x.clone(), local=local, layout=torch.strided)
    P = P.reshape(-1, x.numel())
    return P if rows is None else P[rows]


# -- checking one op -------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    variant: str = "op"
    n_samples: int = 0
    n_cases: int = 0
    sound: bool = True
    tight: bool = True
    error: Optional[str] = None
    detail: List[str] = field(default_factory=list)
    aten: Dict[str, str] = field(default_factory=dict)    # ATen op -> where its rule comes from
    conservative: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kind(self) -> str:
        """The rule kinds of the ATen ops the op reaches, weakest first."""
        kinds = set(self.aten.values())
        if not kinds:
            return "no tracked op" if self.n_samples else "-"
        order = ["conservative", "autograd.Function", "custom op", "decomposition", "pointwise tag"]
        named = [k for k in order if k in kinds]
        tables = sorted(k.split(":", 1)[1] for k in kinds if k.startswith("table:"))
        if tables:
            named.append("table (" + ", ".join(tables) + ")")
        return "; ".join(named)


@contextlib.contextmanager
def recording(res: Result):
    """Record where the rule of every ATen op that needs one comes from."""
    orig = resolve.lookup

    def lookup(func):
        rule = orig(func)
        res.aten[func.overloadpacket.__name__] = "conservative" if rule is None else (
            resolve.rule_kind(func) or "conservative")
        return rule
    resolve.lookup = lookup
    try:
        yield
    finally:
        resolve.lookup = orig


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:240]


def check_op(op, variant: str = "op") -> Result:
    name = op_id(op)
    t0 = time.perf_counter()
    res = Result(name, variant)
    try:
        _check(op, variant, res)
    except Exception as e:   # the harness itself (sample generation ...)
        res.sound = res.tight = False
        res.error = "harness: " + _short(e)
    res.seconds = time.perf_counter() - t0
    return res


def _check(op, variant, res: Result) -> None:
    name = op_id(op)
    unsupported = variant == "op" and name in UNSUPPORTED
    cases = make_cases(op, variant, sparse=unsupported)
    res.n_cases = len(cases)
    res.n_samples = sum(c.primary for c in cases) if unsupported else 0
    reference = finite_differences if name in FD_REFERENCE else functools.partial(rows_jacobian, loop_rows=LOOP_ROWS)
    with recording(res), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for c in cases:
            if unsupported:
                try:
                    pattern(c.fn, c.x, False)
                except Exception as e:
                    res.error = _short(e)
                    return
                continue
            J = reference(c.ref, c.x, c.rows)
            if J is None:
                res.detail.append(f"{c.desc}: autograd has no Jacobian here")
                continue
            res.n_samples += c.primary
            nz = _group_rows(nonzero(J), c.groups)
            P = None
            for local in (False, True):
                try:
                    P = _group_rows(pattern(c.fn, c.x, local, c.rows), c.groups)
                except Exception as e:
                    res.sound = res.tight = False
                    res.error = f"{c.desc}: " + _short(e)
                    return
                if P.shape != nz.shape:
                    res.sound = False
                    res.detail.append(f"{c.desc}: pattern shape {tuple(P.shape)} != {tuple(nz.shape)}")
                    P = None
                    break
                miss = nz & ~P
                if miss.any():
                    res.sound = False
                    i, j = miss.nonzero()[0].tolist()
                    res.detail.append(f"{c.desc} ({'local' if local else 'global'}): misses "
                                      f"{int(miss.sum())} nonzeros, e.g. d out[{i}] / d x[{j}]")
            if c.primary and P is not None:   # P: the local pattern
                U = _group_rows((J != 0) | torch.isnan(J), c.groups)
                gen = torch.Generator().manual_seed(1)
                for _ in range(N_PERTURB):
                    xp = c.x + PERTURB_SCALE * (1 + c.x.abs()) * torch.randn(
                        c.x.shape, generator=gen, dtype=c.x.dtype)
                    Jp = reference(c.ref, xp, c.rows)
                    # a perturbation that leaves the op's domain (new nan) is not used
                    if Jp is not None and Jp.shape == J.shape and not (torch.isnan(Jp) & ~torch.isnan(J)).any():
                        U |= _group_rows((Jp != 0) | torch.isnan(Jp), c.groups)
                extra = P & ~U
                if extra.any():
                    res.tight = False
                    res.detail.append(f"{c.desc}: {int(extra.sum())} of {int(P.sum())} pattern "
                                      "entries are zero at every point tried")
        res.conservative = sorted({str(w.message).split(";")[0] for w in caught
                                   if issubclass(w.category, UnsupportedOpWarning)})
    if unsupported and res.error is None:
        res.error = "no error raised"


# -- the sweep, on several processes ---------------------------------------------------------------
def _init_worker():
    torch.set_num_threads(1)
    all_ops()


def _work(item):
    name, variant = item
    return check_op(all_ops()[name], variant)


def sweep(items, workers: Optional[int] = None, progress: Optional[Callable] = None) -> List[Result]:
    """Check ``(op id, variant)`` items on ``workers`` processes.

    Workers are spawned, not forked: the parent may hold threads (trackjac's bookkeeping, torch's
    pools), and a fork copies their locks.  Each worker loads op_db once (~15 s).
    """
    items = list(items)
    if workers is None:
        workers = int(os.environ.get("TRACKJAC_OPINFO_WORKERS", min(2, os.cpu_count() or 1)))
    results = []
    if workers > 1 and len(items) > 8:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # a worker that dies (a crash in some op) breaks the pool: an error, not a hang
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for f in as_completed([pool.submit(_work, it) for it in items]):
                results.append(f.result())
                if progress:
                    progress(results[-1])
        return results
    for it in items:
        results.append(_work(it))
        if progress:
            progress(results[-1])
    return results


def variant_items():
    ops = all_ops()
    items = [(n, "inplace") for n in INPLACE if n in ops and ops[n].inplace_variant is not None]
    items += [(n, "out") for n in OUT if n in ops and ops[n].supports_out]
    return items


# -- pytest ----------------------------------------------------------------------------------------
def _op_names():
    try:
        return sorted(all_ops())
    except Exception:  # pragma: no cover - the database itself does not load
        return []


_results: Dict[tuple, Result] = {}


@pytest.fixture(scope="session")
def swept(request):
    """Results of every selected sweep test, computed at once on several processes."""
    wanted = []
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if spec is None:
            continue
        if item.originalname == "test_opinfo":
            wanted.append((spec.params["name"], "op"))
        elif item.originalname == "test_variant":
            wanted.append(tuple(spec.params["item"]))
    todo = [w for w in wanted if w not in _results]
    for r in sweep(todo):
        _results[(r.name, r.variant)] = r
    return _results


def key_of(r: Result) -> str:
    return r.name if r.variant == "op" else f"{r.name}[{r.variant}]"


def _verdict(r: Result) -> None:
    key = key_of(r)
    if r.variant == "op" and r.name in UNSUPPORTED:
        assert r.error is not None and re.search(UNSUPPORTED[r.name], r.error, re.I), \
            f"{key} should raise an error matching {UNSUPPORTED[r.name]!r}, got: {r.error}"
        return
    if key in VARIANT_ERRORS:
        assert r.error is not None and re.search(VARIANT_ERRORS[key][0], r.error), \
            f"{key} should raise an error matching {VARIANT_ERRORS[key][0]!r}, got: {r.error}"
        return
    assert r.error is None, f"{key}: {r.error}"
    assert r.n_samples > 0, f"{key}: no sample could be checked: " + "; ".join(r.detail)
    if key in KNOWN_UNSOUND:
        assert not r.sound, f"{key} is sound now: remove it from KNOWN_UNSOUND"
        return
    assert r.sound, f"{key} is not sound: " + "; ".join(r.detail)
    assert not r.conservative, f"{key} used the conservative fallback: {r.conservative}"
    if r.name in NOT_TIGHT:   # a variant inherits its op's reason
        assert not r.tight or r.variant != "op", f"{key} is tight now: remove it from NOT_TIGHT"
    else:
        assert r.tight, f"{key} is not tight: " + "; ".join(r.detail)


@pytest.mark.parametrize("name", _op_names())
def test_opinfo(name, swept):
    _verdict(swept[(name, "op")])


@pytest.mark.parametrize("item", variant_items() if _op_names() else [], ids=lambda it: f"{it[0]}-{it[1]}")
def test_variant(item, swept):
    _verdict(swept[tuple(item)])


def test_lists_name_real_ops():
    ops = all_ops()
    for table in (UNSUPPORTED, FD_REFERENCE, NOT_TIGHT):
        assert set(table) <= set(ops), sorted(set(table) - set(ops))
    assert {k.split("[")[0] for k in list(KNOWN_UNSOUND) + list(VARIANT_ERRORS)} <= set(ops)
    assert len(variant_items()) >= 60


# -- custom autograd.Function ----------------------------------------------------------------------
class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _StraightThrough(torch.autograd.Function):
    """Forward rounds (no derivative), backward passes the gradient through."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


class _Blocked(torch.autograd.Function):
    """Forward mixes neighbours, backward returns no gradient (autograd: zero Jacobian)."""

    @staticmethod
    def forward(ctx, x):
        return x + x.roll(1)

    @staticmethod
    def backward(ctx, g):
        return None


class _MatMul(torch.autograd.Function):
    """setup_context style, once_differentiable backward (runs under no_grad when called by autograd)."""

    @staticmethod
    def forward(a, b):
        return a @ b

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g @ b.T, a.T @ g


class _ReluMask(torch.autograd.Function):
    """Backward chooses by the sign of a saved input: a value-dependent choice."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, g, torch.zeros_like(g))


class _Opaque(torch.autograd.Function):
    """Backward leaves torch (numpy): it cannot be traced."""

    @staticmethod
    def forward(ctx, x):
        return x[:1] * x[1:]

    @staticmethod
    def backward(ctx, g):
        return torch.cat([torch.from_numpy(g.detach().numpy() * 2), torch.zeros(2, dtype=g.dtype)])


def _autograd_pattern(f, *xs):
    J = dense_jacobian(f, *xs)
    return [nonzero(j) for j in (J if len(xs) > 1 else (J,))]


def test_function_square_matches_autograd():
    x = torch.randn(4, dtype=torch.float64)
    P = trackjac.jacobian_sparsity(_Square.apply, x, layout=torch.strided)
    assert torch.equal(P, torch.eye(4, dtype=torch.bool))


def test_function_straight_through_follows_the_backward():
    x = torch.randn(5, dtype=torch.float64)
    (J,) = _autograd_pattern(_StraightThrough.apply, x)
    P = trackjac.jacobian_sparsity(_StraightThrough.apply, x, layout=torch.strided)
    assert torch.equal(J, torch.eye(5, dtype=torch.bool))   # autograd: identity
    assert torch.equal(P, J)
    assert not trackjac.jacobian_sparsity(torch.round, x, layout=torch.strided).any()


def test_function_pattern_contains_the_forward_structure():
    x = torch.randn(5, dtype=torch.float64)
    P = trackjac.jacobian_sparsity(_Blocked.apply, x, layout=torch.strided)
    expected = torch.eye(5, dtype=torch.bool) | torch.eye(5, dtype=torch.bool).roll(1, 0)
    assert torch.equal(P, expected)   # sound for the true derivative, although autograd says 0


def test_function_setup_context_once_differentiable_two_inputs():
    a, b = torch.randn(2, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    Pa, Pb = trackjac.jacobian_sparsity(_MatMul.apply, a, b, layout=torch.strided)
    Ja, Jb = _autograd_pattern(_MatMul.apply, a, b)
    assert torch.equal(Pa, Ja) and torch.equal(Pb, Jb)


def test_function_backward_choice_global_vs_local():
    x = torch.tensor([-1.0, 2.0, -3.0, 4.0], dtype=torch.float64)
    glob = trackjac.jacobian_sparsity(_ReluMask.apply, x, layout=torch.strided)
    loc = trackjac.jacobian_sparsity(_ReluMask.apply, x, local=True, layout=torch.strided)
    assert torch.equal(glob, torch.eye(4, dtype=torch.bool))
    assert torch.equal(loc, torch.diag(x > 0))


def test_function_untraceable_backward_warns_and_is_conservative():
    x = torch.randn(3, dtype=torch.float64)
    with pytest.warns(UnsupportedOpWarning, match="_Opaque: its backward could not be traced"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", trackjac.ControlFlowWarning)   # the backward reads g
        P = trackjac.jacobian_sparsity(_Opaque.apply, x, layout=torch.strided)
    assert P.all()
    with pytest.raises(StrictModeError, match="_Opaque"):
        trackjac.jacobian_sparsity(_Opaque.apply, x, strict=True)


def test_function_without_tracked_inputs_is_plain_autograd():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y = _Square.apply(x)
    assert type(y) is torch.Tensor and y.grad_fn is not None
    y.sum().backward()
    assert torch.allclose(x.grad, 2 * x.detach())


def test_sparse_tensors_raise_clear_errors():
    with pytest.raises(TypeError, match="strided"):
        trackjac.Tracked(torch.eye(3).to_sparse())
    with pytest.raises(trackjac.TrackingError, match="sparse"):
        trackjac.jacobian_sparsity(lambda z: z.to_sparse(), torch.randn(3))
