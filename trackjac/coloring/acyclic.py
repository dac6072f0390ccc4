"""Acyclic coloring, and the decompression by substitution on its two-colored trees.

A proper coloring is *acyclic* when every pair of color classes induces a
forest. Then ``H`` is recovered from ``C = (H S)^T`` tree by tree: in the
forest of colors ``(a, b)``, a vertex ``v`` of color ``a`` sees in
``C[b, v]`` the sum of ``H[v, w]`` over its tree neighbors ``w``; rooting the
tree, the edge from ``x`` to its parent is the alternating sum of these
entries over the subtree of ``x``. Subtrees are contiguous in preorder, so all
edges come from one prefix sum (computed in float64, whatever the dtype of
``C``) and two gathers: no Python loop at evaluation time.

The coloring itself is the greedy of Gebremedhin, Manne and Pothen (2009):
each vertex takes the lowest color that keeps every two-colored structure a
tree, tracked by union-find. It is sequential (a Python loop over vertices),
about a microsecond per neighbor visit.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

__all__ = ["acyclic_coloring", "tree_decompression", "csr"]


def csr(rows: Tensor, cols: Tensor, n: int) -> Tuple[Tensor, Tensor]:
    """(ptr, neighbors) of the off-diagonal entries ``(rows, cols)``."""
    off = rows != cols
    r, c = rows[off], cols[off]
    perm = torch.argsort(r * n + c)
    ptr = torch.zeros(n + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(r, minlength=n), 0, out=ptr[1:])
    return ptr, c.index_select(0, perm)


def acyclic_coloring(rows: Tensor, cols: Tensor, n: int, order: Tensor) -> Tensor:
    """Colors (n,) of an acyclic coloring of the symmetric pattern ``(rows, cols)``, greedy in ``order``."""
    ptr_t, nbr_t = csr(rows, cols, n)
    ptr, nbr = ptr_t.tolist(), nbr_t.tolist()
    color = [-1] * n
    parent: Dict[tuple, tuple] = {}  # union-find over (vertex, color pair) nodes

    def find(x: tuple) -> tuple:
        root = x
        while root in parent:
            root = parent[root]
        while x != root:  # path compression
            nxt = parent[x]
            parent[x] = root
            x = nxt
        return root

    for v in order.tolist():
        groups: Dict[int, List[int]] = {}
        for w in nbr[ptr[v]:ptr[v + 1]]:
            b = color[w]
            if b >= 0:
                groups.setdefault(b, []).append(w)
        c = 0
        while True:
            if c not in groups:
                ok = True
                for b, ws in groups.items():
                    if len(ws) > 1:  # two b-neighbors in one (b, c) tree would close a cycle
                        pair = (b, c) if b < c else (c, b)
                        roots = {find((w, pair)) for w in ws}
                        if len(roots) < len(ws):
                            ok = False
                            break
                if ok:
                    break
            c += 1
        color[v] = c
        for b, ws in groups.items():
            pair = (b, c) if b < c else (c, b)
            for w in ws:
                rv, rw = find((v, pair)), find((w, pair))
                if rv != rw:
                    parent[rw] = rv
    return torch.tensor(color, dtype=torch.long)


def tree_decompression(colors: Tensor, rows: Tensor, cols: Tensor, req_rows: Tensor, req_cols: Tensor,
                       device=None) -> Callable[[Tensor], Tensor]:
    """``values = d(C)`` for the entries ``(req_rows, req_cols)`` of the symmetric pattern
    ``(rows, cols)`` colored acyclically by ``colors``; C is (num_colors, n).

    Round-off: an edge is a difference of two float64 prefix sums of
    alternating-sign entries of ``C``, so its absolute error is about
    ``2^-53`` times the largest prefix along the tree (the entries telescope,
    so that prefix is of the size of the entries for paths); the result is then
    cast to ``C``'s dtype, so float32 loses nothing beyond its own rounding.
    """
    n = colors.numel()
    k = int(colors.max()) + 1 if n else 0
    off = rows < cols
    u, v = rows[off], cols[off]  # each edge once
    cu, cv = colors.index_select(0, u), colors.index_select(0, v)
    if bool((cu == cv).any()):
        raise ValueError("not a proper coloring: two adjacent vertices share a color")
    # a tree node is (vertex, the other color of its tree); edge (u, v) joins (u, cv) and (v, cu)
    node_key, inv = torch.unique(torch.cat([u * k + cv, v * k + cu]), return_inverse=True)
    E = u.numel()
    a, b = inv[:E], inv[E:]
    N = node_key.numel()
    pre, end, depth, child_node = _forest_tour(a, b, N)
    if child_node is None:
        raise ValueError("not an acyclic coloring: a two-colored cycle exists")
    # tour entries: sign (-1)^depth times C[other color, vertex] of each node, in preorder
    order = torch.empty(N, dtype=torch.long)
    order[pre] = torch.arange(N)
    nv, nc = node_key // max(k, 1), node_key % max(k, 1)
    tour_flat = (nc * n + nv).index_select(0, order)
    sign = (1 - 2 * (depth % 2)).double()
    tour_sign = sign.index_select(0, order)
    x = child_node  # per edge, its deeper node
    edge_lo, edge_hi, edge_sign = pre.index_select(0, x), end.index_select(0, x), sign.index_select(0, x)
    # requested entries: diagonal reads C[color(i), i], the rest map to their edge
    rr, rc = req_rows.long(), req_cols.long()
    diag = rr == rc
    lo, hi = torch.minimum(rr, rc), torch.maximum(rr, rc)
    ekey = u * n + v
    eperm = torch.argsort(ekey)
    sk = ekey.index_select(0, eperm)
    qk = lo * n + hi
    pos = torch.searchsorted(sk, qk).clamp(max=max(E - 1, 0))
    found = diag | (sk.index_select(0, pos) == qk) if E else diag
    if not bool(found.all()):
        raise ValueError("requested entries outside the colored pattern")
    eidx = torch.where(diag, 0, eperm.index_select(0, pos)) if E else pos
    diag_flat = colors.index_select(0, rr) * n + rr
    t = [t.to(device) for t in (tour_flat, tour_sign, edge_lo, edge_hi, edge_sign, eidx, diag, diag_flat)]
    tour_flat, tour_sign, edge_lo, edge_hi, edge_sign, eidx, diag, diag_flat = t

    def decompress(compressed: Tensor) -> Tensor:
        flat = compressed.reshape(-1)
        s = flat.index_select(0, tour_flat).double() * tour_sign
        prefix = torch.cat([s.new_zeros(1), torch.cumsum(s, 0)])
        edge = edge_sign * (prefix.index_select(0, edge_hi) - prefix.index_select(0, edge_lo))
        off_vals = edge.to(compressed.dtype).index_select(0, eidx) if E else flat.new_zeros(eidx.shape)
        return torch.where(diag, flat.index_select(0, diag_flat), off_vals)

    return decompress


def _forest_tour(a: Tensor, b: Tensor, N: int):
    """Preorder position, subtree end (exclusive), depth of every node of the forest with
    edges ``(a, b)``, and each edge's deeper node; child is None when there is a cycle.
    A Python depth-first search: it runs once, when the decompression is built."""
    E = a.numel()
    if E >= N and N:
        return None, None, None, None
    ends = torch.cat([a, b])
    other = torch.cat([b, a])
    eid = torch.cat([torch.arange(E), torch.arange(E)])
    perm = torch.argsort(ends)
    ptr = [0] + torch.cumsum(torch.bincount(ends, minlength=N), 0).tolist()
    nb, ne = other.index_select(0, perm).tolist(), eid.index_select(0, perm).tolist()
    pre, end, depth = [-1] * N, [0] * N, [0] * N
    child = [0] * E
    t = 0
    for root in range(N):
        if pre[root] >= 0:
            continue
        pre[root] = t
        t += 1
        stack = [(root, ptr[root], -1)]
        while stack:
            x, i, pe = stack[-1]
            if i == ptr[x + 1]:
                stack.pop()
                end[x] = t
                continue
            stack[-1] = (x, i + 1, pe)
            y, e = nb[i], ne[i]
            if e == pe:
                continue
            if pre[y] >= 0:
                return None, None, None, None  # a second path to y: a cycle
            pre[y], depth[y], child[e] = t, depth[x] + 1, y
            t += 1
            stack.append((y, ptr[y], e))
    as_t = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return as_t(pre), as_t(end), as_t(depth), as_t(child)
