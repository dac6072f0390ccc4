"""Row-partitioned residuals across processes: each rank owns some observations of a sensor
network (measured distances between pairs of 2-D positions), builds a plan of its own
residuals w.r.t. the replicated positions, and
``trackjac.distributed.global_rows`` places its rows in the global Jacobian. A row-partitioned
solver then needs one all-reduce per product with J^T (here: the Gauss-Newton gradient J^T r),
and every rank checks its block and the global pattern against plain autograd.

Run as a plain script (spawns its own gloo processes):  python examples/distributed_rows.py
or with torchrun:  torchrun --nproc-per-node 2 examples/distributed_rows.py
"""
from __future__ import annotations

import argparse
import datetime
import os
import tempfile

import torch
import torch.distributed as dist

import trackjac


def problem(sensors: int, per_sensor: int):
    """Positions (sensors, 2) and measured distances of random pairs; the same on every rank."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(sensors, 2, generator=g, dtype=torch.float64)
    i = torch.arange(sensors).repeat_interleave(per_sensor)
    j = (i + torch.randint(1, sensors, (i.numel(),), generator=g)) % sensors
    d = (x[i] - x[j]).norm(dim=1) + 0.01 * torch.randn(i.numel(), generator=g, dtype=torch.float64)
    return x + 0.05 * torch.randn(x.shape, generator=g, dtype=x.dtype), i, j, d


def residual(x, i, j, d):
    return (x[i] - x[j]).norm(dim=1) - d


def run(rank: int, world: int, sensors: int, per_sensor: int) -> None:
    torch.set_num_threads(1)
    x, i, j, d = problem(sensors, per_sensor)
    O = d.numel()
    lo, hi = O * rank // world, O * (rank + 1) // world       # this rank's observations
    il, jl, dl = i[lo:hi], j[lo:hi], d[lo:hi]

    def f_local(x):   # the residuals of this rank's observations only
        return residual(x, il, jl, dl)

    plan = trackjac.jacobian_plan(f_local, x, mode="rev")
    rows = trackjac.distributed.global_rows(plan, pattern=True)
    J = plan(x).to_dense()                                    # this rank's rows; small here, a solver keeps it sparse
    r = f_local(x)

    # Gauss-Newton gradient J^T r of 0.5 |r|^2: local products, one sum all-reduce
    grad = J.T @ r
    dist.all_reduce(grad)

    # checks against plain autograd on the whole problem
    D = torch.autograd.functional.jacobian(lambda x: residual(x, i, j, d), x).reshape(O, -1)
    assert rows.offsets == [O * k // world for k in range(world + 1)], rows.offsets
    assert torch.allclose(J, D[rows.start:rows.stop], rtol=1e-10, atol=1e-10)
    assert torch.equal(rows.pattern.to_dense(), D != 0)
    xg = x.detach().requires_grad_()
    (0.5 * residual(xg, i, j, d).pow(2).sum()).backward()
    assert torch.allclose(grad, xg.grad.reshape(-1), rtol=1e-9, atol=1e-9)
    print(f"rank {rank}/{world}: rows {rows.start}:{rows.stop} of {rows.shape[0]}, local nnz {plan.nnz}, "
          f"{plan.num_colors} colors; global pattern nnz {rows.pattern._nnz()}")
    dist.barrier()
    if rank == 0:
        print(f"gradient J^T r from {world} row blocks matches autograd: |g| = {grad.norm():.6g}")
        print("OK")


def _spawned(rank: int, world: int, init_file: str, sensors: int, per_sensor: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        run(rank, world, sensors, per_sensor)
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2, help="processes to spawn (ignored under torchrun)")
    ap.add_argument("--sensors", type=int, default=200)
    ap.add_argument("--per-sensor", type=int, default=4, help="measured distances per sensor")
    a = ap.parse_args()
    if "RANK" in os.environ:   # started by torchrun: the rendezvous is in the environment
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        try:
            run(dist.get_rank(), dist.get_world_size(), a.sensors, a.per_sensor)
        finally:
            dist.destroy_process_group()
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_spawned, args=(a.procs, os.path.join(tmp, "init"), a.sensors, a.per_sensor),
                                    nprocs=a.procs)


if __name__ == "__main__":
    main()
