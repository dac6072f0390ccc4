"""Bit-word helpers of the coloring state against plain Python."""
import torch
from hypothesis import given, settings, strategies as st

from trackjac.coloring.state import BITS, kth_free, popcount


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=50))
def test_popcount_counts_every_bit(xs):
    assert popcount(torch.tensor(xs)).tolist() == [bin(x & (2**64 - 1)).count("1") for x in xs]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 4), st.lists(st.tuples(st.lists(st.integers(0, 2**BITS - 1), min_size=4, max_size=4),
                                             st.integers(0, 4 * BITS + 10)), min_size=1, max_size=20))
def test_kth_free_is_the_kth_color_absent_from_the_words(words, rows):
    forb = [torch.tensor([r[0][w] for r in rows]) for w in range(words)]
    k = torch.tensor([r[1] for r in rows])
    got = kth_free(forb, k).tolist()
    for (ws, kk), c in zip(rows, got):
        taken = {w * BITS + b for w in range(words) for b in range(BITS) if ws[w] >> b & 1}
        free = [x for x in range(words * BITS + kk + 1) if x not in taken]
        assert c == free[kk]
