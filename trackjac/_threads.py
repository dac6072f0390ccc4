"""Intra-op thread count for bookkeeping kernels."""
from __future__ import annotations

import torch


class intra_op_threads:
    """Run the block with ``n`` intra-op threads (``0``: leave torch's setting), then restore it.

    Provenance and coloring kernels are small and memory-bound: on a busy 2-core
    machine torch's thread pool made them up to 10x slower than one thread.
    """

    __slots__ = ("n", "saved")

    def __init__(self, n: int = 1):
        self.n = n

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.n and self.n != self.saved:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.n and self.n != self.saved:
            torch.set_num_threads(self.saved)
