"""Plans evaluated across the ranks of a ``torch.distributed`` process group.

Every rank builds the same :class:`~trackjac.Plan` (detection and coloring are
deterministic for a given seed; a hash of the colors is compared across ranks
at build time). Each rank evaluates only its share of the colors, a contiguous
range of ``num_colors / world_size`` (+-1) colors, and writes those colors'
values into the nnz-length value vector; the other entries stay zero. The color
classes' value index sets are disjoint, so one sum all-reduce of that vector
gives every rank the exact values (``x + 0 == x``).

Collectives per call: one small all-gather of (ok, shape/dtype signature) before
the products, one of (ok) after them, then the all-reduce of the values. A rank
whose inputs differ or whose ``f`` raises therefore makes every rank raise
:class:`DistributedPlanError` rather than hang; a rank that never reaches the
call is caught by the process group's timeout (``init_process_group(timeout=...)``).

The same code runs on gloo (CPU) and NCCL (CUDA): the reduction buffer lives on
the plan's device, the small status tensors where the backend can move them
(:func:`_status_device`). :class:`DistributedBase` holds what Jacobian plans
(:class:`DistributedPlan`, here) and Hessian plans (:mod:`.distributed_hessian`) share.
"""
from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from .._threads import intra_op_threads
from .plan import Plan
from .products import ControlFlowChanged, SameDraws, per_color, try_compile, user_stacklevel, vectorized

__all__ = ["DistributedBase", "DistributedPlan", "DistributedPlanError", "distribute", "global_rows", "GlobalRows",
           "color_shares", "row_split"]

OUTPUTS = ("full", "rows")


class DistributedPlanError(RuntimeError):
    """Raised on every rank when one or more ranks failed; ``ranks`` lists the failed ones."""

    def __init__(self, message: str, ranks: Sequence[int]):
        super().__init__(message)
        self.ranks = list(ranks)


def check_output(output: str, distributed: bool = False) -> None:
    """``output`` is "full", or "rows" for a distributed plan."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    if output != "full" and not distributed:
        raise ValueError(f"output={output!r} splits the matrix across ranks: it needs a process_group")


# ----------------------------------------------------------------------------
# Partitions (pure functions: the same answer on every rank)
# ----------------------------------------------------------------------------


def color_shares(num_colors: int, world_size: int) -> List[range]:
    """Contiguous color ranges, one per rank, whose sizes differ by at most one."""
    if world_size < 1:
        raise ValueError(f"world_size must be positive; got {world_size}")
    if num_colors < 0:
        raise ValueError(f"num_colors must be non-negative; got {num_colors}")
    b = [num_colors * r // world_size for r in range(world_size + 1)]
    return [range(b[r], b[r + 1]) for r in range(world_size)]


def row_split(row_nnz: Tensor, world_size: int) -> List[int]:
    """Row offsets (``world_size + 1``) of contiguous row blocks balanced by nonzeros.

    Row ``r`` goes to rank ``floor(W * (nonzeros before r) / nnz)``: every rank's
    nonzeros are within one row's count of ``nnz / W``. Without nonzeros, rows
    are split evenly."""
    if world_size < 1:
        raise ValueError(f"world_size must be positive; got {world_size}")
    counts = torch.as_tensor(row_nnz, dtype=torch.long).reshape(-1)
    M = counts.numel()
    total = int(counts.sum())
    if total == 0:
        return [M * r // world_size for r in range(world_size + 1)]
    before = torch.cumsum(counts, 0) - counts
    owner = torch.clamp(before * world_size // total, max=world_size - 1)
    starts = torch.searchsorted(owner, torch.arange(world_size + 1), right=False)
    starts[-1] = M
    return [int(s) for s in starts]


# ----------------------------------------------------------------------------
# Collectives
# ----------------------------------------------------------------------------


def _digest(*parts: Any) -> int:
    """A 63-bit hash that is the same in every process (unlike ``hash`` of a str)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.contiguous().cpu().numpy().tobytes() if isinstance(p, Tensor) else repr(p).encode())
        h.update(b"|")
    return int.from_bytes(h.digest(), "little") >> 1


def _gather_rows(row: List[int], group, device) -> Tensor:
    """All-gather a short int64 vector: ``(world_size, len(row))``."""
    t = torch.tensor(row, dtype=torch.long, device=device)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t, group=group)
    return torch.stack(out).cpu()


def _agree(ok: bool, key: int, detail: str, what: str, group, device, err: Optional[BaseException] = None) -> None:
    """Every rank learns whether all are ``ok`` and share ``key``; if not, all raise.

    The messages are gathered only on failure, a path every rank takes together."""
    table = _gather_rows([int(ok), key], group, device)
    oks, keys = table[:, 0].tolist(), table[:, 1].tolist()
    if all(oks) and len(set(keys)) == 1:
        return
    details: List[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(details, detail, group=group)
    if not all(oks):
        bad = [r for r, o in enumerate(oks) if not o]
        lines = "; ".join(f"rank {r}: {details[r]}" for r in bad)
        raise DistributedPlanError(f"trackjac: {what} failed on rank(s) {bad}: {lines}", bad) from err
    groups: Dict[int, List[int]] = {}
    for r, k in enumerate(keys):
        groups.setdefault(k, []).append(r)
    odd = sorted((g for g in groups.values()), key=len)[:-1]
    bad = sorted(r for g in odd for r in g)
    lines = "; ".join(f"rank(s) {g}: {details[g[0]]}" for g in groups.values())
    raise DistributedPlanError(f"trackjac: {what} differs across ranks ({lines})", bad)


def _status_device(group, device: torch.device) -> torch.device:
    """Where small status tensors go: NCCL moves CUDA tensors only, gloo is surest on the CPU."""
    if dist.get_backend(group) == "nccl":
        return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _describe(err: BaseException) -> str:
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first[:300]}"


def _signature(args: Sequence[Any]) -> str:
    """Shapes and dtypes of the arguments (devices may differ per rank: one GPU each)."""
    return ", ".join(f"{a.dtype}{list(a.shape)}" if isinstance(a, Tensor) else type(a).__name__ for a in args)


# ----------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------


class DistributedBase:
    """What every distributed plan shares: the color split, the per-call protocol (argument
    check, local products, status, all-reduce, assembly), the batched-product audit, the
    compiled products and the row blocks. Subclasses say how their plan kind runs products
    (``_bind``, ``_batched``, ``_plain``), what a rank contributes to the reduction
    (``_prepare``, ``_fill``) and how the reduced buffers become values and matrices
    (``_values``, ``_assemble_full``)."""

    def __init__(self, plan: Any, process_group=None, output: str = "full"):
        check_output(output, distributed=True)
        self.plan, self.group, self.output = plan, process_group, output
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        self.device = plan.device   # of the value buffer, reduced where it was computed
        self._status = _status_device(process_group, plan.device)
        self.color_ranges = color_shares(plan.num_colors, self.world_size)
        self.local_colors = self.color_ranges[self.rank]
        st = plan.structure
        grows, gcols, _ = st.global_coo()
        cl = plan.coloring
        fingerprint = _digest(cl.axis, getattr(cl, "method", ""), plan.num_colors, cl.colors, grows, gcols,
                              [(tuple(s.shape), str(s.dtype)) for s in list(st.out_specs) + list(st.in_specs)])
        _agree(True, fingerprint, f"{plan.num_colors} colors ({self._kind()}), nnz {plan.nnz}", "the plan (pattern "
               "or coloring: detection and coloring must be deterministic, same seed and arguments)",
               process_group, self._status)
        self.last_timings: Dict[str, float] = {}
        self._audited = False   # the batched product is compared with plain autograd on the first call
        lc, cs = self.local_colors, plan.chunk_size
        self._chunks = [(a, min(a + cs, lc.stop)) for a in range(lc.start, lc.stop, cs)]
        self._dtypes: List[torch.dtype] = []
        self._sizes: Dict[torch.dtype, int] = {}
        self._prepare()
        # each rank compiles the products of its own chunks (the plan's compiled function covers
        # all); not where the plan's compile already failed and warned
        self._compiled = try_compile(self._pure_products) if getattr(plan, "_compiled", None) else None
        if output == "rows":
            self._build_rows(grows, gcols)

    # -- what a plan kind provides ------------------------------------------------

    def _kind(self) -> str:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Set ``_dtypes`` and ``_sizes`` (numel of each dtype's reduction buffer)."""
        raise NotImplementedError

    def _bind(self, args: Sequence[Any]) -> Any:
        raise NotImplementedError

    def _batched(self, ctx: Any, seeds, check: Callable, draws: Optional[Callable]):
        raise NotImplementedError

    def _plain(self, ctx: Any, seeds, check: Callable, draws: Optional[Callable]):
        raise NotImplementedError

    def _warn_batched_wrong(self, ctx: Any, draws: SameDraws, err: float, scale: float) -> None:
        raise NotImplementedError

    def _fill(self, comps, bufs: Dict[torch.dtype, Tensor]) -> None:
        """Write this rank's products into the zeroed reduction buffers."""
        raise NotImplementedError

    def _values(self, bufs: Dict[torch.dtype, Tensor]) -> Dict[torch.dtype, Tensor]:
        """The reduced buffers as value vectors (blocks in ``global_coo`` order)."""
        return bufs

    def _assemble_full(self, values: Dict[torch.dtype, Tensor]):
        raise NotImplementedError

    # -- construction -------------------------------------------------------------

    def _build_rows(self, grows: Tensor, gcols: Tensor) -> None:
        if len(self._dtypes) > 1:
            raise ValueError(f"output='rows' needs one value dtype for every block; got {self._dtypes}")
        if self.plan.layout not in (torch.sparse_coo, torch.sparse_csr):
            raise ValueError("output='rows' returns COO or CSR; build the plan with layout=torch.sparse_coo or csr")
        M, N = self.plan.structure.offsets()[0][-1], self.plan.structure.offsets()[1][-1]
        self.shape = (M, N)
        self.row_offsets = row_split(torch.bincount(grows, minlength=M), self.world_size)
        r0, r1 = self.row_offsets[self.rank], self.row_offsets[self.rank + 1]
        # global_coo stacks the blocks in the order of the value vector
        mine = ((grows >= r0) & (grows < r1)).nonzero().squeeze(1)
        key = (grows.index_select(0, mine) - r0) * max(N, 1) + gcols.index_select(0, mine)
        order = torch.argsort(key)
        self._row_take = mine.index_select(0, order).to(self.device)
        lr, lc = (grows - r0).index_select(0, self._row_take.cpu()), gcols.index_select(0, self._row_take.cpu())
        self._row_shape = (r1 - r0, N)
        if self.plan.layout == torch.sparse_coo:
            self._row_index = torch.stack([lr, lc]).to(self.device)
        else:
            crow = torch.zeros(r1 - r0 + 1, dtype=torch.long)
            torch.cumsum(torch.bincount(lr, minlength=r1 - r0), 0, out=crow[1:])
            self._row_index = (crow.to(self.device), lc.to(self.device))

    # -- evaluation ---------------------------------------------------------------

    @property
    def num_colors(self) -> int:
        return self.plan.num_colors

    @property
    def nnz(self) -> int:
        return self.plan.nnz

    @property
    def pattern(self):
        return self.plan.pattern

    @property
    def reduce_numel(self) -> int:
        """Values each call all-reduces (every dtype's buffer together)."""
        return sum(self._sizes.values())

    def _seeds(self):
        return (self.plan._seed_chunk(c0, c1) for c0, c1 in self._chunks)

    def _pure_products(self, *args, seeds):
        """The batched products of the chunks ``seeds`` alone: what ``compile=True`` compiles."""
        return self._batched(self._bind(args), seeds, lambda outs: None, None)

    def _compiled_products(self, args: Sequence[Any], draws: SameDraws):
        """As the single-process plan: one compiled call for every local chunk, except forward
        modes with several chunks (a run of ``f`` each), the RNG rewound before each."""
        assert self._compiled is not None
        if getattr(self.plan, "mode", "fwd") == "rev" or len(self._chunks) <= 1:
            draws()
            return self._compiled(*args, seeds=list(self._seeds()))
        outs, comps = None, []
        for s in self._seeds():
            draws()
            outs, c = self._compiled(*args, seeds=[s])
            comps.extend(c)
        return outs, comps

    def _products(self, args: Sequence[Any]):
        """Outputs and the compressed products of the local chunks."""
        plan = self.plan
        plan._validate(args)
        if plan.structure.path is not None:   # f branched on a tracked value at build time
            start = SameDraws(self.device)
            plan.structure.path.check(args)
            start()
        if self._compiled is not None:
            try:
                draws = SameDraws(self.device)
                res = self._compiled_products(args, draws)
                plan._check_outputs(res[0])
                if not self._audited:   # the compiled product is checked like the eager one
                    self._audited = True
                    res = self._audit(self._bind(args), res, draws)
                    if plan._fallback:
                        self._compiled = None
                return res
            except Exception as err:   # the eager path below raises the user-facing error, if any
                warnings.warn(f"trackjac: compiled distributed plan failed ({_describe(err)}); using eager",
                              RuntimeWarning, stacklevel=user_stacklevel())
                self._compiled = None
        ctx = self._bind(args)
        draws = SameDraws(self.device)
        if plan._fallback:
            return self._plain(ctx, self._seeds(), plan._check_outputs, draws)
        try:
            res = self._batched(ctx, self._seeds(), plan._check_outputs, draws)
        except ControlFlowChanged:
            raise
        except Exception as err:  # torch.func may not transform f: one color at a time
            res = self._plain(ctx, self._seeds(), plan._check_outputs, draws)
            warnings.warn(f"trackjac: torch.func could not transform f ({_describe(err)}); evaluating one "
                          "color at a time with torch.autograd instead", RuntimeWarning,
                          stacklevel=user_stacklevel())
            plan._fallback = True
            return res
        if not self._audited:
            self._audited = True
            res = self._audit(ctx, res, draws)
        return res

    def _audit(self, ctx: Any, res, draws: SameDraws):
        """As a single-process plan's first call: a few of this rank's colors from the batched
        product against plain autograd; where they disagree (``torch.func`` is wrong for some
        ops), warn and evaluate this rank's colors one at a time from now on."""
        plan, lc, cs = self.plan, self.local_colors, self.plan.chunk_size
        if not len(lc):
            return res
        gen = torch.Generator().manual_seed(self.rank)
        ids = (torch.randperm(len(lc), generator=gen)[: plan.AUDIT_COLORS].sort().values + lc.start)
        try:
            _, ref = self._plain(ctx, [plan._seed_ids(ids)], lambda o: None, draws)
        except Exception:  # plain autograd cannot run f where torch.func can: nothing to compare with
            return res
        outs, comps = res
        for part, want in enumerate(ref[0]):
            if want is None:   # a Hessian's value: no product to compare
                continue
            got = torch.stack([comps[(int(c) - lc.start) // cs][part][(int(c) - lc.start) % cs] for c in ids])
            rtol, atol = plan._AUDIT_TOL.get(want.dtype, (1e-1, 1e-2))
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            err = (got - want).abs()
            if bool((err > atol * scale + rtol * want.abs()).any()):
                self._warn_batched_wrong(ctx, draws, float(err.max()), scale)
                plan._fallback = True
                return self._plain(ctx, self._seeds(), plan._check_outputs, draws)
        return res

    def _local_buffers(self, args: Sequence[Any]) -> Tuple[Tuple[Tensor, ...], Dict[torch.dtype, Tensor]]:
        outs, comps = self._products(args)
        bufs = {d: torch.zeros(n, dtype=d, device=self.device) for d, n in self._sizes.items()}
        self._fill(comps, bufs)
        return outs, bufs

    def _run(self, args: Sequence[Any]):
        g, clock = self.group, [time.perf_counter()]

        def lap() -> float:
            clock.append(time.perf_counter())
            return clock[-1] - clock[-2]

        sig = _signature(args)
        try:
            self.plan._validate(args)
            err: Optional[BaseException] = None
        except Exception as e:   # whatever it is, the other ranks must hear of it before any product
            err = e
        detail = sig if err is None else f"{sig} ({_describe(err)})"
        _agree(err is None, _digest(sig), detail, "the call's arguments (shapes/dtypes)", g, self._status, err)
        times = {"check": lap()}
        threads = getattr(self.plan, "_threads", None) or 0
        try:
            with intra_op_threads(threads):
                outs, bufs = self._local_buffers(args)
            err = None
        except Exception as e:
            err, outs, bufs = e, (), {}
        times["products"] = lap()
        # also where ranks wait for the slowest one, so that the all-reduce below times the transfer
        _agree(err is None, 0, "" if err is None else _describe(err), "evaluating f", g, self._status, err)
        times["status"] = lap()
        for d in self._dtypes:   # one sum per buffer dtype (usually one)
            dist.all_reduce(bufs[d], op=dist.ReduceOp.SUM, group=g)
        times["all_reduce"] = lap()
        values = self._values(bufs)
        out = self._assemble_rows(values) if self.output == "rows" else self._assemble_full(values)
        times["assemble"] = lap()
        self.last_timings = times
        return outs, out

    def _assemble_rows(self, values: Dict[torch.dtype, Tensor]):
        vals = values[self._dtypes[0]].index_select(0, self._row_take)
        if self.plan.layout == torch.sparse_coo:
            return torch.sparse_coo_tensor(self._row_index, vals, self._row_shape, is_coalesced=True,
                                           check_invariants=False)
        crow, col = self._row_index
        with warnings.catch_warnings():   # torch's once-per-process beta notice: the layout was the user's choice
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(crow, col, vals, self._row_shape, check_invariants=False)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rank={self.rank}/{self.world_size}, local_colors={self.local_colors}, "
                f"output={self.output!r}, {self.plan!r})")


class DistributedPlan(DistributedBase):
    """A :class:`~trackjac.Plan` whose colors are split across a process group.

    Build it with :func:`trackjac.distributed_plan`. ``plan(*args)`` must be called on every
    rank of the group with args of the same shapes and dtypes (typically the same
    replicated point). ``output="full"``: every rank gets the whole Jacobian, nested
    as the single-process plan returns it. ``output="rows"``: every rank gets the
    rows ``row_offsets[rank] : row_offsets[rank + 1]`` of the stacked Jacobian (all
    outputs flattened and concatenated, by all inputs concatenated) as one sparse
    matrix (COO, or CSR for ``layout=torch.sparse_csr``) with global column
    indices; the row blocks are contiguous and balanced by nonzeros (:func:`row_split`).
    With ``compile=True`` each rank compiles the products of its own colors.

    Attributes: ``plan`` (the local Plan), ``local_colors`` (a ``range``),
    ``color_ranges`` (every rank's), ``rank``, ``world_size``, ``output``,
    ``row_offsets`` (rows mode), ``num_colors``, ``nnz``, ``reduce_numel``, ``pattern``,
    ``mode``, and ``last_timings``: seconds of the last call's phases ("check", "products",
    "status", "all_reduce", "assemble"; host clock: on CUDA, kernels may still run when a
    phase ends).
    """

    def __init__(self, plan: Plan, process_group=None, output: str = "full"):
        # mode="auto" may switch a forward plan to reverse when f has no jvp; on one rank alone
        # that would change its coloring, so a distributed plan raises (on every rank) instead
        plan._rev_coloring = None
        super().__init__(plan, process_group, output)

    @property
    def mode(self) -> str:
        return self.plan.mode

    def _kind(self) -> str:
        return self.plan.mode

    def _prepare(self) -> None:
        """Where each local chunk's values land in the per-dtype value vectors (blocks
        concatenated row-major): the color classes' value index sets are disjoint."""
        st, cl, dev = self.plan.structure, self.plan.coloring, self.device
        ro, co = st.offsets()
        # per block: (dtype, offset in its buffer, nnz, part, [(dest, src) per local chunk])
        self._slots: List[List[Tuple[torch.dtype, int, int, int, List[Tuple[Tensor, Tensor]]]]] = []
        for j, row in enumerate(st.blocks):
            srow = []
            for i, (r, c) in enumerate(row):
                m, n = st.out_specs[j].shape.numel(), st.in_specs[i].shape.numel()
                dtype = cl.compressed(st.out_specs[j].dtype, st.in_specs[i].dtype)
                if dtype not in self._sizes:
                    self._dtypes.append(dtype)
                    self._sizes[dtype] = 0
                off = self._sizes[dtype]
                col, pos = cl.compressed_index(r, c, (ro[j], co[i]))
                width = cl.compressed(m, n)
                srow.append((dtype, off, r.numel(), cl.compressed(j, i), _gathers(col, pos, width, off,
                                                                                  self._chunks, dev)))
                self._sizes[dtype] = off + r.numel()
            self._slots.append(srow)

    def _bind(self, args: Sequence[Any]):
        return self.plan._bind(args)

    def _batched(self, ctx, seeds, check, draws):
        return vectorized(*ctx, self.plan.mode, seeds, check, draws)

    def _plain(self, ctx, seeds, check, draws):
        return per_color(*ctx, self.plan.mode, seeds, check, draws)

    def _warn_batched_wrong(self, ctx, draws, err, scale) -> None:
        self.plan._warn_batched_wrong(*ctx, draws, err, scale)

    def _fill(self, comps, bufs) -> None:
        for srow in self._slots:
            for dtype, _, _, part, per_chunk in srow:
                for (dest, src), comp in zip(per_chunk, comps):
                    bufs[dtype].scatter_(0, dest, comp[part].reshape(-1).index_select(0, src))

    def _assemble_full(self, values):
        blocks = self.plan._blocks
        table = [[blocks[j][i].assemble(values[d].narrow(0, off, n)) for i, (d, off, n, _, _) in enumerate(srow)]
                 for j, srow in enumerate(self._slots)]
        return self.plan.structure.nest(table)

    def __call__(self, *args, **kwargs):
        """The Jacobian at ``args`` (full, or this rank's row block); call on every rank."""
        return self.plan._jacobian_result(self._run(self.plan._flat(args, kwargs))[1])

    def value_and_jacobian(self, *args, **kwargs):
        """``(f(*args), jacobian)`` from one evaluation (``f``'s value computed locally)."""
        return self.plan._value_result(*self._run(self.plan._flat(args, kwargs)))


def _gathers(col: Tensor, pos: Tensor, width: int, off: int, chunks: Sequence[Tuple[int, int]],
             device) -> List[Tuple[Tensor, Tensor]]:
    """Per chunk ``[c0, c1)``: (value indices + ``off``, flat indices into that chunk's
    ``(c1 - c0, width)`` products) of the entries read from its colors."""
    out = []
    for c0, c1 in chunks:
        sel = ((col >= c0) & (col < c1)).nonzero().squeeze(1)
        src = (col.index_select(0, sel) - c0) * width + pos.index_select(0, sel)
        out.append(((sel + off).to(device), src.to(device)))
    return out


def distribute(build: Callable[[], Any], process_group=None, output: str = "full",
               wrap: Callable[..., DistributedBase] = DistributedPlan) -> Any:
    """Run ``build`` (which returns this rank's plan) on every rank and wrap the result in
    ``wrap`` (:class:`DistributedPlan` for a :class:`~trackjac.Plan`): a build that raises
    on any rank raises :class:`DistributedPlanError` on every rank, and so do plans that
    differ. Call on every rank."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("trackjac: a distributed plan needs an initialized torch.distributed process group "
                           "(torch.distributed.init_process_group)")
    check_output(output, distributed=True)
    try:
        plan: Any = build()
        err: Optional[BaseException] = None
    except Exception as e:
        plan, err = None, e
    device = _status_device(process_group, plan.device if plan is not None else torch.device("cpu"))
    _agree(err is None, 0, "" if err is None else _describe(err), "building the plan", process_group, device, err)
    assert plan is not None
    return wrap(plan, process_group, output)


# ----------------------------------------------------------------------------
# Row-partitioned residuals
# ----------------------------------------------------------------------------


@dataclass
class GlobalRows:
    """Where this rank's rows sit in the stacked global Jacobian.

    ``offsets[r] : offsets[r + 1]`` are rank ``r``'s rows; ``start``/``stop`` this
    rank's; ``shape`` the global (rows, columns); ``pattern`` the global sparse COO
    bool pattern when asked for (else None)."""

    offsets: List[int]
    start: int
    stop: int
    shape: Tuple[int, int]
    pattern: Optional[Tensor] = None


def _local_coo(local: Any) -> Tuple[Tensor, Tensor, Tuple[int, int], torch.device]:
    if isinstance(local, DistributedPlan):
        raise TypeError("global_rows stacks per-rank row blocks; a DistributedPlan already holds the whole "
                        "Jacobian on every rank (output='rows' and its row_offsets give a row block)")
    if isinstance(local, Plan):
        r, c, shape = local.structure.global_coo()
        return r, c, shape, local.device
    if isinstance(local, Tensor) and local.dim() == 2:
        coo = local.to_sparse_coo().coalesce() if local.layout != torch.sparse_coo else local.coalesce()
        idx = coo.indices()   # explicit zeros of a value matrix count as structural entries
        return idx[0].cpu(), idx[1].cpu(), (local.shape[0], local.shape[1]), local.device
    raise TypeError(f"global_rows needs a Plan or a 2-D pattern tensor; got {type(local).__name__}")


def global_rows(local: Any, process_group=None, pattern: bool = False) -> GlobalRows:
    """Stack the row blocks of the ranks: each rank holds the Jacobian (or pattern) of its
    own residuals ``f_local(x)`` w.r.t. the replicated ``x``, rank ``r``'s rows after
    those of ranks ``< r``.

    ``local``: this rank's Plan (its stacked pattern) or a 2-D pattern tensor. One
    all-gather of (rows, columns, nnz); with ``pattern=True`` one more of the local COO
    indices (padded to the largest). Raises :class:`DistributedPlanError` on every rank
    if the column counts differ. Call on every rank."""
    rows, cols, (m, n), local_device = _local_coo(local)
    device = _status_device(process_group, local_device)
    table = _gather_rows([m, n, rows.numel()], process_group, device)
    ms, ns, nnzs = table[:, 0].tolist(), table[:, 1].tolist(), table[:, 2].tolist()
    if len(set(ns)) != 1:
        raise DistributedPlanError(f"trackjac: the ranks' Jacobians have different column counts {ns}; "
                                   "row blocks of one matrix need the same inputs", list(range(len(ns))))
    offsets = [0]
    for k in ms:
        offsets.append(offsets[-1] + k)
    rank = dist.get_rank(process_group)
    out = GlobalRows(offsets, offsets[rank], offsets[rank + 1], (offsets[-1], n))
    if pattern:
        width = max(nnzs)
        mine = torch.zeros(2, width, dtype=torch.long)
        mine[0, : rows.numel()] = rows + offsets[rank]
        mine[1, : cols.numel()] = cols
        parts = [torch.empty(2, width, dtype=torch.long, device=device) for _ in ns]
        dist.all_gather(parts, mine.to(device), group=process_group)
        idx = torch.cat([p[:, :k].cpu() for p, k in zip(parts, nnzs)], 1)
        idx = idx[:, torch.argsort(idx[0] * max(n, 1) + idx[1])]   # blocks of several inputs interleave
        vals = torch.ones(idx.shape[1], dtype=torch.bool)
        out.pattern = torch.sparse_coo_tensor(idx, vals, out.shape, is_coalesced=True,
                                              check_invariants=False).to(local_device)
    return out
