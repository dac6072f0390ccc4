"""Where the structure surprises: the Jacobian of a message-passing GNN.

A graph network's layer updates each node from its neighbors, so the Jacobian of
node outputs with respect to node inputs follows the graph: one layer reaches the
1-hop neighborhood, two layers the 2-hop neighborhood. That is what makes
implicit solvers and sensitivity analyses on learned simulators affordable,
*if* the model really is local. One ``BatchNorm`` over the nodes (a
normalization many GNN architectures insert between layers) couples every node
with every other: the Jacobian turns dense, and nothing in the model's output
shows it.

This example traces a two-layer GNN with ``trackjac.jacobian_sparsity``, checks
the node-level pattern against the known answer (nodes within two hops), checks
soundness against autograd's dense Jacobian, and draws both versions with
``trackjac.spy``.

Run: ``python examples/gnn_message_passing.py``
"""
import time

import torch
import torch.nn.functional as F

import trackjac

N, FEAT = 24, 4  # nodes, features per node
g = torch.Generator().manual_seed(0)

# An undirected ring with a few random chords; messages flow along both directions.
ring = torch.arange(N)
chords = torch.randint(0, N, (2, 4), generator=g)
src = torch.cat([ring, (ring + 1) % N, chords[0], chords[1]])
dst = torch.cat([(ring + 1) % N, ring, chords[1], chords[0]])

W_msg = [torch.randn(2 * FEAT, FEAT, generator=g, dtype=torch.float64) / 3 for _ in range(2)]
W_self = [torch.randn(FEAT, FEAT, generator=g, dtype=torch.float64) / 2 for _ in range(2)]


def layer(h, k, batch_norm=False):
    """Message passing: m_e = tanh([h_src, h_dst] W), h'_i = relu(h_i W_self + sum of incoming m_e)."""
    msg = torch.tanh(torch.cat([h[src], h[dst]], dim=1) @ W_msg[k])   # (E, FEAT), gather by edges
    agg = torch.zeros(N, FEAT, dtype=h.dtype).index_add(0, dst, msg)  # scatter-sum at destinations
    out = h @ W_self[k] + agg
    if batch_norm:  # normalize every feature over all nodes (training-mode BatchNorm)
        out = F.batch_norm(out, None, None, training=True)
    return torch.relu(out)


def gnn(h):
    return layer(layer(h, 0), 1)


def gnn_with_batchnorm(h):
    return layer(layer(h, 0, batch_norm=True), 1, batch_norm=True)


def node_pattern(p):
    """(N*FEAT, N*FEAT) element pattern -> (N, N): node i reads node j."""
    return p.to_dense().reshape(N, FEAT, N, FEAT).any(3).any(1)


def assert_sound(f, x, p):
    """Every nonzero of autograd's Jacobian is in the pattern."""
    J = torch.autograd.functional.jacobian(f, x).reshape(N * FEAT, N * FEAT)
    assert bool((p.to_dense() | (J == 0)).all()), "pattern misses a nonzero of the Jacobian"


x = torch.randn(N, FEAT, generator=g, dtype=torch.float64)

t = time.perf_counter()
p = trackjac.jacobian_sparsity(gnn, x)
print(f"two-layer GNN on {N} nodes x {FEAT} features: traced in {time.perf_counter() - t:.2f} s")
assert_sound(gnn, x, p)
nodes = node_pattern(p)

# Known answer: node i depends on node j exactly when j is within 2 hops of i.
A = torch.eye(N, dtype=torch.bool)
A[dst, src] = True                               # i reads j when an edge j -> i exists
two_hops = (A.double() @ A.double()) > 0
assert torch.equal(nodes, two_hops), "node pattern is not the 2-hop neighborhood"
print(trackjac.spy(nodes, title="node i reads node j"))
print(f"OK: node pattern == 2-hop neighborhood of the graph; {int(nodes.sum())} of {N * N} node pairs, "
      f"{p._nnz()} Jacobian nonzeros of {(N * FEAT) ** 2}.\n")

t = time.perf_counter()
p_bn = trackjac.jacobian_sparsity(gnn_with_batchnorm, x)
assert_sound(gnn_with_batchnorm, x, p_bn)
nodes_bn = node_pattern(p_bn)
print("the same GNN with BatchNorm over the nodes after each layer:")
print(trackjac.spy(nodes_bn, title="node i reads node j (BatchNorm)"))
assert bool(nodes_bn.all()), "BatchNorm over nodes should couple every pair of nodes"
print(f"Every node now reads all {N} nodes: {p_bn._nnz()} nonzeros instead of {p._nnz()}.")
print("A sparse Jacobian (trackjac.jacobian) of the first model costs a few vjps; of the second,")
print("as many as there are outputs. Per-node normalizations (LayerNorm over features) keep it local.")

print()
print(trackjac.spy(p, title="element level, d out / d x (N*FEAT x N*FEAT)", width=48, height=24))
