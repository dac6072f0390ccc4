"""What a compiled plan of a stencil spends, and alternatives that were measured and not adopted.

The compressed product of a PDE residual of ``benches/problems.py`` (Kuramoto-Sivashinsky by
default, ``--problem`` for the Brusselator or the 3-D Laplacian) with the
plan's own coloring, compiled as ``compile=True`` compiles it (batched jvp, dense seeds,
trackjac's inductor options), then variants of it, each compiled in this process, one thread,
float64, best of ``--rounds`` warm calls:

- ``products``: the batched jvp alone; ``+ eager gather``: and the decompression gather
  (``index_select`` of one value per nonzero), what a warm ``plan(x)`` runs;
- ``gather in graph``: the same gather inside the compiled graph (int32 indices);
- ``roll as cat`` / ``roll as pad + where``: ``torch.roll`` decomposed before inductor
  lowers it (inductor's own lowering is a modular index, loaded through a gather buffer).

Run::

    python benches/ab_compiled_stencil.py [--problem kuramoto_sivashinsky] [--n 262144] [--rounds 30]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import make_case  # noqa: E402  (the peer suite's problems at a size)

PROBLEMS = ("kuramoto_sivashinsky", "brusselator", "laplacian3d_cubic")

aten = torch.ops.aten


def roll_cat(x, shifts, dims=()):
    if not dims:
        return roll_cat(x.flatten(), shifts, (0,)).view(x.shape)
    for s, d in zip(shifts, dims):
        n = x.shape[d]
        s %= n
        if s:
            x = torch.cat([x.narrow(d, n - s, s), x.narrow(d, 0, n - s)], d)
    return x


def roll_pad(x, shifts, dims=()):
    if not dims:
        return roll_pad(x.flatten(), shifts, (0,)).view(x.shape)
    for s, d in zip(shifts, dims):
        d %= x.dim()
        n = x.shape[d]
        s %= n
        if s:
            pad = [0, 0] * (x.dim() - 1 - d)
            left = torch.constant_pad_nd(x.narrow(d, n - s, s), pad + [0, n - s])
            right = torch.constant_pad_nd(x.narrow(d, 0, n - s), pad + [s, 0])
            shape = [1] * x.dim()
            shape[d] = n
            x = torch.where((torch.arange(n, device=x.device) < s).view(shape), left, right)
    return x


def best_ms(fn, rounds: int) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", choices=PROBLEMS, default="kuramoto_sivashinsky")
    ap.add_argument("--n", type=int, default=262144)
    ap.add_argument("--rounds", type=int, default=30)
    a = ap.parse_args()
    import trackjac
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table
    from trackjac.evaluate.products import INDUCTOR_OPTIONS

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    case = make_case(a.problem, a.n)
    f, (x,) = case.f, case.args
    plan = trackjac.jacobian_plan(f, x, mode="fwd")
    seeds = plan._seed_chunk(0, plan.num_colors)[0]
    (part, per_chunk), = plan._gather[0]
    src = per_chunk[0][1]
    assert isinstance(src, torch.Tensor), "a sparse pattern gathers its values by index"
    idx = src.to(torch.int32)

    def products(x, s):
        return torch.func.vmap(lambda t: torch.func.jvp(f, (x,), (t,)), randomness="same")(s)

    def fused(x, s, idx):
        o, t = products(x, s)
        return o[0], t.reshape(-1)[idx]

    def compiled(fn, roll=None):
        if roll is None:
            return torch.compile(fn, dynamic=False, options=dict(INDUCTOR_OPTIONS))

        def backend(gm, example_inputs):
            table = {**select_decomp_table(), aten.roll.default: roll}
            return compile_fx(gm, example_inputs, decompositions=table, config_patches=dict(INDUCTOR_OPTIONS))
        return torch.compile(fn, dynamic=False, backend=backend)

    base = compiled(products)
    idx64 = idx.long()
    comp = base(x, seeds)[1].reshape(-1)
    ref = comp.index_select(0, idx64)
    rows = [("products", lambda: base(x, seeds)),
            ("products + eager gather", lambda: base(x, seeds)[1].reshape(-1).index_select(0, idx64)),
            ("eager gather alone", lambda: comp.index_select(0, idx64))]
    g = compiled(fused)
    assert torch.allclose(g(x, seeds, idx)[1], ref)
    rows.append(("gather in graph", lambda: g(x, seeds, idx)))
    for name, roll in (("roll as cat", roll_cat), ("roll as pad + where", roll_pad)):
        h = compiled(products, roll)
        assert torch.allclose(h(x, seeds)[1].reshape(-1).index_select(0, idx64), ref)
        rows.append((f"{name} + eager gather", lambda h=h: h(x, seeds)[1].reshape(-1).index_select(0, idx64)))
    print(f"{a.problem} n = {x.numel():,}, {plan.num_colors} colors (fwd), {idx.numel():,} nonzeros, "
          f"torch {torch.__version__}, 1 thread, best of {a.rounds}")
    for name, fn in rows:
        print(f"  {name:36s} {best_ms(fn, a.rounds):7.2f} ms")


if __name__ == "__main__":
    main()
