"""The forum question, answered: which zeros of a Jacobian are "never used"?

The question (abridged): ``torch.autograd.functional.jacobian`` gives zeros both
where an input element does not participate in an output element and where it
participates but got multiplied by zero. To build a block-sparse Jacobian I need
to tell them apart: the first kind must stay out of the sparse matrix, the second
must go in.

trackjac computes *participation* directly, whatever the values: run the same
code on ``trackjac.Tracked`` inputs (or call ``trackjac.jacobian_sparsity``), and
ask which input elements each output element depends on. Then
``trackjac.jacobian(..., layout=torch.sparse_bsr)`` builds the block-sparse
Jacobian the question was after, with the multiplied-by-zero block stored.

Run: ``python examples/seed_participation.py``
"""
import torch
from torch.autograd.functional import jacobian

import trackjac


# The two functions of the question, unchanged.
def func(a0, a1, a2):
    a0 = a0 * 0
    a1 = a1 * 2
    a2 = a2 * 4
    e = torch.cat((a0, a1, a2))
    return e


def func_single(g):
    return func(g[:2], g[2:4], g[4:6])


torch.manual_seed(0)
a0, a1, a2 = (torch.rand(2, dtype=torch.float64) for _ in range(3))
g = torch.cat([a0, a1, a2])

# --- what autograd says: zeros, without telling why ---------------------------
J = jacobian(func_single, g)
print("autograd: jacobian(func_single, g) =")
print(J)

# --- 1. the pattern of the whole function ------------------------------------
P = trackjac.jacobian_sparsity(func_single, g)          # sparse COO bool (6, 6)
print("\ntrackjac.jacobian_sparsity(func_single, g): participation pattern")
print(trackjac.spy(P, ascii=True))
expected = torch.eye(6, dtype=torch.bool)                # out[i] depends on g[i] only
assert torch.equal(P.to_dense(), expected)
# sound: every nonzero of autograd's Jacobian is in the pattern ...
assert bool((P.to_dense() | (J == 0)).all())
# ... and the pattern tells the two kinds of zeros apart
multiplied_by_zero = P.to_dense() & (J == 0)
never_used = ~P.to_dense()
print(f"multiplied by zero (participates): {multiplied_by_zero.nonzero().tolist()}")
print(f"never used: {int(never_used.sum())} of 36 entries")
assert multiplied_by_zero.nonzero().tolist() == [[0, 0], [1, 1]]

# --- 2. several inputs: the tuple version of the question ----------------------
P0, P1, P2 = trackjac.jacobian_sparsity(func, a0, a1, a2)  # nested like autograd's jacobian
assert P0.to_dense()[:2].equal(torch.eye(2, dtype=torch.bool)) and not P0.to_dense()[2:].any()
assert P1.to_dense()[2:4].equal(torch.eye(2, dtype=torch.bool))
print("\njacobian_sparsity(func, a0, a1, a2): one pattern per input")
print(trackjac.spy((P0, P1, P2), ascii=True))

# --- 3. the same with Tracked sources and depends_on ---------------------------
# Tracked wraps an input; the code runs unchanged; depends_on asks per source.
# Building g from the three sources, as in the question, needs a trackable buffer:
# inside trackjac.tracking(), torch.zeros makes one.
t0, t1, t2 = trackjac.Tracked(a0), trackjac.Tracked(a1), trackjac.Tracked(a2)
with trackjac.tracking():
    buf = torch.zeros((6,), dtype=torch.float64)
    buf[:2] = t0
    buf[2:4] = t1
    buf[4:6] = t2
    e = func_single(buf)
d0 = e.depends_on(t0, layout=torch.strided)              # (6, 2) bool
print("\ne.depends_on(a0):")
print(d0)
assert d0[:2].equal(torch.eye(2, dtype=torch.bool)) and not d0[2:].any()
assert torch.allclose(trackjac.untrack(e), func(a0, a1, a2))

# --- 4. the block-sparse Jacobian the question was after -----------------------
# 2 x 2 blocks (one 2-vector output per 2-vector input): a block is stored when it
# holds any structural nonzero, so the a0 block is there, with zero values.
Jb = trackjac.jacobian(func_single, g, layout=torch.sparse_bsr, blocksize=(2, 2))
print("\ntrackjac.jacobian(func_single, g, layout=torch.sparse_bsr, blocksize=(2, 2)):")
block_rows = torch.repeat_interleave(torch.arange(3), Jb.crow_indices().diff())
print(f"  stored blocks at (block row, block col): "
      f"{list(zip(block_rows.tolist(), Jb.col_indices().tolist()))}")
print(f"  block values:\n{Jb.values()}")
assert Jb.values().shape == (3, 2, 2)                    # 3 of 9 blocks, a0's included
assert torch.allclose(Jb.to_dense(), J)                  # values equal autograd's
assert torch.equal(Jb.values()[0], torch.zeros(2, 2, dtype=torch.float64))
print("\nOK: a0 participates in out[0:2] (a zero block, stored); nothing else leaks in.")
