"""Distributed plans on 2 and 3 local gloo processes: values vs the single-process plan and the
dense Jacobian (or Hessian), row blocks, color balance, global rows, compiled products, and
failures that raise on every rank.

Each world size is spawned once (importing torch per process is the slow part on 2 cores);
the workers run every scenario, record per rank "ok" or the traceback, and the tests below
read those records. The process group has a 30 s timeout and the spawn a deadline, so a
bug that desynchronizes the collectives fails the tests instead of hanging them.
"""
from __future__ import annotations

import datetime
import json
import os
import time
import traceback
import warnings

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings, strategies as st

import trackjac
from trackjac import DistributedHessianPlan, DistributedPlanError, distributed_plan, hessian_plan, jacobian_plan
from trackjac import distributed as tjd

from dense_reference import dense_jacobian
from problems import (ba_cost, brusselator, brusselator_point, bundle_adjustment,  # benches/problems.py
                      rosenbrock, sparse_quadratic)

color_shares, global_rows, row_split = tjd.color_shares, tjd.global_rows, tjd.row_split

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

DEADLINE_S = 240   # a hang guard: a loaded 2-core machine took 150 s for what takes 60 s alone


def _dense(J):
    return tuple(_dense(b) for b in J) if isinstance(J, tuple) else J.to_dense()


def _close(got, want, tol=1e-10):
    got, want = _dense(got), want
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _close(g, w, tol)
        return
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def _stacked(J):
    """Blocks of one output over several inputs side by side: the stacked global matrix."""
    return torch.cat([b.to_dense() for b in J], 1) if isinstance(J, tuple) else J.to_dense()


# ----------------------------------------------------------------------------
# Scenarios, run on every rank (same order: each issues the same collectives)
# ----------------------------------------------------------------------------


def sc_brusselator(rank, world, group):
    x0, x1 = brusselator_point(5, seed=0), brusselator_point(5, seed=1)
    single = jacobian_plan(brusselator, x0)
    for kw in (dict(), dict(mode="fwd", chunk_size=1), dict(mode="rev", chunk_size=2),
               dict(layout=torch.sparse_csr)):
        plan = distributed_plan(brusselator, x0, process_group=group, **kw)
        J = plan(x1)
        _close(J, single(x1).to_dense(), 1e-12)
        _close(J, dense_jacobian(brusselator, x1))
        assert J.layout == kw.get("layout", torch.sparse_coo)


def sc_jacobian_plan_process_group(rank, world, group):
    """jacobian_plan(..., process_group=g) is the same distributed plan."""
    x0, x1 = brusselator_point(5, seed=0), brusselator_point(5, seed=2)
    plan = jacobian_plan(brusselator, x0, process_group=group, mode="rev")
    assert isinstance(plan, trackjac.DistributedPlan)
    _close(plan(x1), dense_jacobian(brusselator, x1))


def sc_bundle(rank, world, group):
    ba = bundle_adjustment(4, 9, obs_per_pt=3)
    plan = distributed_plan(ba.residual, *ba.args, process_group=group)
    cams = ba.cams + 0.01 * torch.randn(ba.cams.shape, generator=torch.Generator().manual_seed(3),
                                        dtype=ba.cams.dtype)
    value, J = plan.value_and_jacobian(cams, ba.pts)
    torch.testing.assert_close(value, ba.residual(cams, ba.pts))
    _close(J, dense_jacobian(ba.residual, cams, ba.pts))
    _close(J, _dense(jacobian_plan(ba.residual, *ba.args)(cams, ba.pts)), 1e-12)


def sc_rows(rank, world, group):
    x = brusselator_point(5, seed=2)
    ba = bundle_adjustment(4, 9, obs_per_pt=3)
    for f, args, layout in ((brusselator, (x,), torch.sparse_coo), (ba.residual, ba.args, torch.sparse_csr)):
        plan = distributed_plan(f, *args, process_group=group, output="rows", layout=layout)
        B = plan(*args)
        offs = plan.row_offsets
        assert offs[0] == 0 and offs[-1] == plan.shape[0] and offs == sorted(offs)
        D = _stacked(dense_jacobian(f, *args))
        assert B.layout == layout and B.shape == (offs[rank + 1] - offs[rank], D.shape[1])
        torch.testing.assert_close(B.to_dense(), D[offs[rank]:offs[rank + 1]], rtol=1e-10, atol=1e-10)
        # balanced by nonzeros: within one row's count of nnz / world
        P = _stacked(plan.pattern).bool()
        per_row = P.sum(1)
        local = int(per_row[offs[rank]:offs[rank + 1]].sum())
        assert abs(local - P.sum() / world) <= int(per_row.max()), (local, int(P.sum()), world)


def sc_balance(rank, world, group):
    x = brusselator_point(6, seed=0)
    for kw in (dict(mode="rev"), dict(mode="fwd", chunk_size=3)):
        plan = distributed_plan(brusselator, x, process_group=group, **kw)
        shares = [None] * world
        dist.all_gather_object(shares, (plan.local_colors.start, plan.local_colors.stop), group=group)
        sizes = [b - a for a, b in shares]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == plan.num_colors
        assert [a for a, _ in shares[1:]] == [b for _, b in shares[:-1]] and shares[0][0] == 0
        assert plan.local_colors == plan.color_ranges[rank]


def sc_random_sparse(rank, world, group):
    # every rank draws the same functions (same seed): sparse linear maps of x**2 and sin(x)
    gen = torch.Generator().manual_seed(11)
    for _ in range(4):
        m, n = (int(v) for v in torch.randint(1, 30, (2,), generator=gen))
        mask = torch.rand(m, n, generator=gen) < 0.15
        A = torch.randn(m, n, generator=gen, dtype=torch.float64) * mask
        idx = mask.nonzero()

        def f(x, A=A, idx=idx):
            return torch.zeros(A.shape[0], dtype=x.dtype).index_add(0, idx[:, 0], A[idx[:, 0], idx[:, 1]]
                                                                   * torch.sin(x[idx[:, 1]]) * x[idx[:, 1]])

        x = torch.randn(n, generator=gen, dtype=torch.float64)
        plan = distributed_plan(f, x, process_group=group, chunk_size=int(torch.randint(1, 4, (1,), generator=gen)))
        _close(plan(x), dense_jacobian(f, x))


def sc_batched_audit(rank, world, group):
    # torch.func's batched vjp of torch.cdist is wrong at these sizes (torch 2.13): each rank's
    # first call compares its colors with plain autograd and falls back where they disagree
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, dtype=torch.float64, generator=g)
    y = torch.randn(4, 2, dtype=torch.float64, generator=g)

    def f(x):
        return torch.cdist(x, y)

    plan = distributed_plan(f, x, process_group=group, mode="rev")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # only ranks whose batch is wrong warn
        J = plan(x)
    _close(J, dense_jacobian(f, x))
    x2 = torch.randn(3, 2, dtype=torch.float64, generator=g)
    _close(plan(x2), dense_jacobian(f, x2))


def sc_more_ranks_than_colors(rank, world, group):
    # a diagonal Jacobian has one color: the other ranks evaluate nothing and add zeros
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)
    for mode in ("rev", "fwd"):
        plan = distributed_plan(torch.sin, x, process_group=group, mode=mode)
        assert plan.num_colors == 1 and len(plan.local_colors) == (plan.color_ranges[rank] == range(0, 1))
        assert sum(len(r) for r in plan.color_ranges) == 1
        _close(plan(x), dense_jacobian(torch.sin, x))
    with pytest.raises(TypeError, match="already holds the whole"):
        global_rows(plan, group)


def sc_one_rank_raises(rank, world, group):
    x = brusselator_point(4, seed=0)
    bad = world - 1

    state = {"fail": False}

    def f(x):
        if state["fail"] and rank == bad:
            raise ArithmeticError("residual blew up here")
        return brusselator(x)

    plan = distributed_plan(f, x, process_group=group)
    state["fail"] = True
    with _raises(DistributedPlanError, f"evaluating f failed on rank(s) [{bad}]") as err:
        plan(x)
    assert err.value.ranks == [bad] and "ArithmeticError: residual blew up here" in str(err.value)
    if rank == bad:
        assert isinstance(err.value.__cause__, ArithmeticError)
    state["fail"] = False
    _close(plan(x), dense_jacobian(brusselator, x))   # the group is still in step


def sc_mismatched_inputs(rank, world, group):
    x = brusselator_point(4, seed=0)
    plan = distributed_plan(brusselator, x, process_group=group)
    wrong = brusselator_point(5, seed=0) if rank == 0 else x
    with _raises(DistributedPlanError, "the call's arguments (shapes/dtypes) failed on rank(s) [0]") as err:
        plan(wrong)
    assert "[2, 5, 5]" in str(err.value) and err.value.ranks == [0]
    # a dtype that differs on one rank only
    other = x.float() if rank == 1 else x
    with _raises(DistributedPlanError, "failed on rank(s) [1]"):
        plan(other)
    _close(plan(x), dense_jacobian(brusselator, x))


def sc_rank_missing(rank, world, group):
    # a rank that never calls the plan: the others fail by the group's timeout, not hang. The
    # group is used for nothing else afterwards (a timed-out gloo group is out of step).
    short = dist.new_group(list(range(world)), timeout=datetime.timedelta(seconds=2))
    x = brusselator_point(4, seed=0)
    plan = distributed_plan(brusselator, x, process_group=short)
    if rank == 0:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError):   # gloo's DistBackendError is a RuntimeError
            plan(x)
        assert time.monotonic() - t0 < 20


def sc_different_plans(rank, world, group):
    x = brusselator_point(4, seed=0)
    # rank 0 claims a denser pattern: the plans differ, which every rank must hear about
    P = trackjac.jacobian_sparsity(brusselator, x)
    if rank == 0:
        n = x.numel()
        P = (P.to_dense() | torch.eye(n, dtype=torch.bool).roll(3, 1)).to_sparse()
    with _raises(DistributedPlanError, "the plan (pattern or coloring"):
        distributed_plan(brusselator, x, process_group=group, pattern=P)
    with _raises(DistributedPlanError, "building the plan failed on rank(s) [1]"):
        distributed_plan(brusselator, x, process_group=group, chunk_size=0 if rank == 1 else None)


def sc_global_rows(rank, world, group):
    ba = bundle_adjustment(4, 9, obs_per_pt=3)
    O = ba.cam_idx.numel()
    lo, hi = O * rank // world, O * (rank + 1) // world   # this rank's observations

    def f_local(cams, pts):
        return ba.residual(cams, pts)[lo:hi]

    plan = jacobian_plan(f_local, *ba.args)
    info = global_rows(plan, group, pattern=True)
    assert info.start == 2 * lo and info.stop == 2 * hi and info.offsets[-1] == 2 * O
    assert info.shape == (2 * O, 9 * ba.cams.shape[0] + 3 * ba.pts.shape[0])
    want = _stacked(dense_jacobian(ba.residual, *ba.args)) != 0
    assert torch.equal(info.pattern.to_dense(), want)
    local = _stacked(plan(*ba.args))
    torch.testing.assert_close(local, _stacked(dense_jacobian(ba.residual, *ba.args))[info.start:info.stop])
    # a plain pattern tensor works too, and column counts must agree
    info2 = global_rows(_stacked(plan.pattern).to_sparse(), group)
    assert info2.offsets == info.offsets and info2.pattern is None
    with _raises(DistributedPlanError, "different column counts"):
        global_rows(torch.ones(2, 3 + (rank == 0), dtype=torch.bool).to_sparse(), group)


def _dense_hessian(f, *args):
    H = torch.autograd.functional.hessian(f, args if len(args) > 1 else args[0])
    if len(args) == 1:
        return H.reshape(args[0].numel(), -1)
    return tuple(tuple(b.reshape(a.numel(), c.numel()) for b, c in zip(row, args)) for row, a in zip(H, args))


def _quartic_band(x):
    """A banded Hessian (half-width 2) whose star and acyclic colorings differ."""
    return (torch.sin(x[2:] * x[:-2]) + x[1:-1] ** 3 * x[2:]).sum() + (x ** 4).sum()


HESSIAN_COLORINGS = ("star", "acyclic", "columns")


def sc_hessian(rank, world, group):
    g = torch.Generator().manual_seed(5)
    x0, x1 = (torch.randn(14, generator=g, dtype=torch.float64) for _ in range(2))
    for f in (rosenbrock, _quartic_band):
        want = _dense_hessian(f, x1)
        P = trackjac.hessian_sparsity(f, x0)   # detected once: the other scenarios detect per plan
        for coloring in HESSIAN_COLORINGS:
            single = hessian_plan(f, x0, coloring=coloring, pattern=P)
            for kw in (dict(), dict(chunk_size=1)) if f is _quartic_band else (dict(),):
                plan = hessian_plan(f, x0, process_group=group, coloring=coloring, pattern=P, **kw)
                assert isinstance(plan, DistributedHessianPlan)
                assert plan.reduce == ("products" if getattr(plan.plan.coloring, "method", "") == "acyclic" else "values")
                assert plan.reduce_numel == (plan.num_colors * 14 if plan.reduce == "products" else plan.nnz)
                v, grad, H = plan.value_and_hessian(x1)
                _close(H, single(x1).to_dense(), 1e-12)
                _close(H, want)
                torch.testing.assert_close(v, f(x1))
                torch.testing.assert_close(grad, torch.func.grad(f)(x1))
    # two arguments, a CSR layout: nested like torch.autograd.functional.hessian
    ba = bundle_adjustment(3, 6, obs_per_pt=2)
    cost = ba_cost(ba)
    plan = hessian_plan(cost, *ba.args, process_group=group, layout=torch.sparse_csr)
    H = plan(*ba.args)
    assert H[0][1].layout == torch.sparse_csr
    _close(H, _dense_hessian(cost, *ba.args))


def sc_hessian_random(rank, world, group):
    # every rank draws the same sparse quadratics (same seed), perturbed by a quartic
    gen = torch.Generator().manual_seed(13)
    for trial in range(4):
        n = int(torch.randint(2, 25, (1,), generator=gen))
        q, _ = sparse_quadratic(n, per_row=int(torch.randint(1, 4, (1,), generator=gen)), seed=trial)

        def f(x, q=q):
            return q(x) + (x ** 4).sum()

        x = torch.randn(n, generator=gen, dtype=torch.float64)
        coloring = HESSIAN_COLORINGS[trial % 3]
        plan = hessian_plan(f, x, process_group=group, coloring=coloring,
                            chunk_size=int(torch.randint(1, 4, (1,), generator=gen)))
        _close(plan(x), _dense_hessian(f, x))


def sc_hessian_rows(rank, world, group):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(17, generator=g, dtype=torch.float64)
    D = _dense_hessian(_quartic_band, x)
    for coloring, layout in (("star", torch.sparse_coo), ("acyclic", torch.sparse_csr)):
        plan = hessian_plan(_quartic_band, x, process_group=group, coloring=coloring, output="rows", layout=layout)
        B = plan(x)
        offs = plan.row_offsets
        assert offs[0] == 0 and offs[-1] == 17 and plan.shape == (17, 17)
        assert B.layout == layout and B.shape == (offs[rank + 1] - offs[rank], 17)
        torch.testing.assert_close(B.to_dense(), D[offs[rank]:offs[rank + 1]], rtol=1e-10, atol=1e-10)
        shares = [None] * world
        dist.all_gather_object(shares, (plan.local_colors.start, plan.local_colors.stop), group=group)
        sizes = [b - a for a, b in shares]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == plan.num_colors
        assert [a for a, _ in shares[1:]] == [b for _, b in shares[:-1]] and shares[0][0] == 0
    with pytest.raises(ValueError, match="needs a process_group"):
        hessian_plan(rosenbrock, x, output="rows")


def sc_hessian_failures(rank, world, group):
    x = torch.linspace(-1, 1, 9, dtype=torch.float64)
    bad = world - 1
    state = {"fail": False}

    def f(x):
        if state["fail"] and rank == bad:
            raise ArithmeticError("cost blew up here")
        return rosenbrock(x)

    for coloring in ("star", "acyclic"):
        plan = hessian_plan(f, x, process_group=group, coloring=coloring)
        state["fail"] = True
        with _raises(DistributedPlanError, f"evaluating f failed on rank(s) [{bad}]") as err:
            plan(x)
        assert err.value.ranks == [bad] and "ArithmeticError: cost blew up here" in str(err.value)
        state["fail"] = False
        wrong = torch.zeros(10, dtype=torch.float64) if rank == 0 else x
        with _raises(DistributedPlanError, "the call's arguments (shapes/dtypes) failed on rank(s) [0]"):
            plan(wrong)
        with _raises(DistributedPlanError, "failed on rank(s) [1]"):
            plan(x.float() if rank == 1 else x)
        _close(plan(x), _dense_hessian(rosenbrock, x))   # the group is still in step
    with _raises(DistributedPlanError, "building the plan failed on rank(s) [1]"):
        hessian_plan(rosenbrock, x, process_group=group, coloring="bogus" if rank == 1 else "star")


class _compile_as:
    """``torch.compile`` replaced for a while (the compiled path without compiling: real
    compilation takes tens of seconds a process on 2 cores)."""

    def __init__(self, fake):
        self.fake = fake

    def __enter__(self):
        self.real, torch.compile = torch.compile, self.fake

    def __exit__(self, *exc):
        torch.compile = self.real


def sc_compile(rank, world, group):
    x0, x1 = brusselator_point(5, seed=0), brusselator_point(5, seed=4)
    calls = []

    def traced(fn, **kw):
        def run(*a, **k):
            calls.append(len(k["seeds"]))   # chunks per compiled call
            return fn(*a, **k)
        return run

    with _compile_as(traced):
        for kw in (dict(mode="rev"), dict(mode="fwd", chunk_size=2)):
            calls.clear()
            plan = jacobian_plan(brusselator, x0, process_group=group, compile=True, **kw)
            _close(plan(x1), dense_jacobian(brusselator, x1))
            _close(plan(x0), dense_jacobian(brusselator, x0))
            assert plan._compiled is not None and calls, "the distributed plan left the compiled path"
            chunks = len(plan._chunks)
            assert calls == ([chunks] * 2 if kw["mode"] == "rev" else [1] * (2 * chunks)), calls
        hplan = hessian_plan(rosenbrock, x0[0, 0], process_group=group, compile=True)
        _close(hplan(x1[0, 0]), _dense_hessian(rosenbrock, x1[0, 0]))
        assert hplan._compiled is not None

    def to_failure(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("backend exploded")
        return run

    with _compile_as(to_failure):
        plan = jacobian_plan(brusselator, x0, process_group=group, compile=True)
        with pytest.warns(RuntimeWarning, match="compiled distributed plan failed"):
            J = plan(x1)
        _close(J, dense_jacobian(brusselator, x1))
        assert plan._compiled is None


class _raises:
    """pytest.raises that also checks the message contains ``text`` (plain substring)."""

    def __init__(self, exc, text):
        self.exc, self.text, self.value = exc, text, None

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError(f"{self.exc.__name__} not raised")
        if not issubclass(typ, self.exc):
            return False
        assert self.text in str(value), f"{self.text!r} not in {str(value)!r}"
        self.value = value
        return True


def sc_signatures(rank, world, group):
    """torch.func-style calls (dict input and output, argnums, kwargs, has_aux) distribute too."""
    def f(d, w, *, scale=1.0):
        y = torch.sin(d["a"]) * scale + d["b"].roll(1) * w
        return {"y": y, "s": y.sum(0, keepdim=True)}, y.mean()

    gen = torch.Generator().manual_seed(4)
    d = {"a": torch.randn(6, generator=gen, dtype=torch.float64), "b": torch.randn(6, generator=gen, dtype=torch.float64)}
    w = torch.randn(6, generator=gen, dtype=torch.float64)
    plan = jacobian_plan(f, d, w, argnums=0, has_aux=True, scale=2.0, process_group=group)
    w2 = w * 3
    (jac, aux), ref = plan(d, w2, scale=-1.0), torch.func.jacrev(lambda d: f(d, w2, scale=-1.0)[0])(d)
    for ko in ref:
        for ki in ref[ko]:
            torch.testing.assert_close(jac[ko][ki].to_dense().reshape(ref[ko][ki].shape), ref[ko][ki])
    torch.testing.assert_close(aux, f(d, w2, scale=-1.0)[1])
    value, _, aux2 = plan.value_and_jacobian(d, w2, scale=-1.0)
    torch.testing.assert_close(value["s"], f(d, w2, scale=-1.0)[0]["s"])


SCENARIOS = {name: fn for name, fn in globals().items() if name.startswith("sc_")}
THREE_RANKS = ["sc_brusselator", "sc_bundle", "sc_rows", "sc_balance", "sc_more_ranks_than_colors",
               "sc_one_rank_raises", "sc_global_rows", "sc_hessian_random", "sc_hessian_rows", "sc_hessian_failures"]
WORLD = 3


def _worker(rank, init_file, outdir):
    """Every scenario on a group of ranks 0 and 1 (rank 2 idles), then some on all three.

    The records are rewritten after each scenario: an assertion that fails on one rank only
    leaves the collectives out of step and gloo may abort the process, and the records say
    how far each rank got."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=30))
    results = {}

    def save():
        with open(os.path.join(outdir, f"rank{rank}.json.tmp"), "w") as fh:
            json.dump(results, fh)
        os.replace(os.path.join(outdir, f"rank{rank}.json.tmp"), os.path.join(outdir, f"rank{rank}.json"))

    try:
        pair = dist.new_group([0, 1])   # every rank takes part in creating it
        # the idle rank waits out the pairs' scenarios here, longer than the collectives' timeout
        idle = dist.new_group(list(range(WORLD)), timeout=datetime.timedelta(seconds=DEADLINE_S))
        for world, group, names in ((2, pair, list(SCENARIOS)), (WORLD, dist.group.WORLD, THREE_RANKS)):
            if rank >= world:   # idle: pay torch.func's first-use cost while the others run
                jacobian_plan(brusselator, brusselator_point(4))(brusselator_point(4))
            for name in names if rank < world else []:
                try:
                    SCENARIOS[name](rank, world, group)
                    results[f"{world}:{name}"] = "ok"
                except Exception:
                    results[f"{world}:{name}"] = traceback.format_exc()
                save()
            dist.barrier(group=idle)
    finally:
        save()
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    import torch.multiprocessing as mp  # only this fixture starts processes
    tmp = tmp_path_factory.mktemp("dist")
    ctx = mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline, died = time.monotonic() + DEADLINE_S, None
    try:
        while not ctx.join(timeout=2):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.terminate()
                died = f"did not finish within {DEADLINE_S} s"
                break
    except Exception as err:   # a rank aborted: the records say which scenarios it finished
        died = f"a rank died: {err}"
    out = {}
    for r in range(WORLD):
        path = tmp / f"rank{r}.json"
        out[r] = json.loads(path.read_text()) if path.exists() else {}
        out[r]["died"] = died
    return out


CASES = [(2, n) for n in SCENARIOS] + [(WORLD, n) for n in THREE_RANKS]


@pytest.mark.parametrize("world,name", CASES, ids=[f"{w}ranks-{n[3:]}" for w, n in CASES])
def test_distributed(ranks, world, name):
    key = f"{world}:{name}"
    res = {r: ranks[r].get(key, f"no record ({ranks[r]['died']})") for r in range(world)}
    bad = {r: tb for r, tb in res.items() if tb != "ok"}
    assert not bad, "\n".join(f"rank {r}:\n{tb}" for r, tb in bad.items())


# ----------------------------------------------------------------------------
# Partitions and errors that need no processes
# ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(k=st.integers(0, 500), w=st.integers(1, 17))
def test_color_shares_balanced_contiguous(k, w):
    shares = color_shares(k, w)
    assert len(shares) == w and shares[0].start == 0 and shares[-1].stop == k
    assert all(a.stop == b.start for a, b in zip(shares, shares[1:]))
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 20), max_size=60), w=st.integers(1, 9))
def test_row_split_balanced_by_nnz(counts, w):
    offs = row_split(torch.tensor(counts, dtype=torch.long), w)
    M, total = len(counts), sum(counts)
    assert len(offs) == w + 1 and offs[0] == 0 and offs[-1] == M and offs == sorted(offs)
    per_rank = [sum(counts[a:b]) for a, b in zip(offs, offs[1:])]
    assert sum(per_rank) == total
    if total:
        assert all(abs(p - total / w) <= max(counts) for p in per_rank), (per_rank, total / w)
    else:
        sizes = [b - a for a, b in zip(offs, offs[1:])]
        assert max(sizes) - min(sizes) <= 1


def test_needs_a_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    with pytest.raises(RuntimeError, match="initialized torch.distributed process group"):
        distributed_plan(brusselator, brusselator_point(3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="world_size"):
        color_shares(3, 0)
    with pytest.raises(ValueError, match="world_size"):
        row_split(torch.ones(3, dtype=torch.long), 0)


def test_output_needs_a_process_group():
    x = brusselator_point(3)
    with pytest.raises(ValueError, match="needs a process_group"):
        jacobian_plan(brusselator, x, output="rows")
    with pytest.raises(ValueError, match="output must be one of"):
        hessian_plan(rosenbrock, x[0, 0], output="columns")
