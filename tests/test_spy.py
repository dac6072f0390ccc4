"""``trackjac.spy`` block layout (rows = outputs, columns = inputs), labels, full-width text, PNG ticks."""
import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trackjac
from trackjac import spy

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def _dense(plot):
    d = torch.zeros(plot.shape, dtype=torch.bool)
    d[plot.rows, plot.cols] = True
    return d


def test_two_outputs_one_input_is_a_column_of_blocks():
    # 10 x 5 Jacobian: two outputs of 5 and one input of 5 (all blocks one shape: the names decide)
    p = trackjac.jacobian_sparsity(lambda x: (x * 2, x.sin()), torch.rand(5, dtype=torch.double))
    plot = spy(p, ascii=True, input_names=["x"])
    assert plot.shape == (10, 5) and plot.row_breaks == [5] and plot.col_breaks == []
    assert spy(p, nesting="outputs").shape == (10, 5)
    assert spy(p).shape == (5, 10)   # without names or nesting: a flat tuple of one shape runs over inputs
    plan = trackjac.jacobian_plan(lambda x: (x * 2, x.sin()), torch.rand(5, dtype=torch.double))
    assert spy(plan).shape == (10, 5)   # a plan knows it has one input
    assert plot.text().splitlines()[-1] == "blocks: rows = outputs [output 0 (5), output 1 (5)], columns = inputs [x (5)]"


def test_outputs_of_different_sizes():
    p = trackjac.jacobian_sparsity(lambda x: (x * 2, x[:3].sin()), torch.rand(5, dtype=torch.double))
    plot = spy(p, ascii=True)   # the shapes decide: same column count, different row counts
    assert plot.shape == (8, 5) and plot.row_breaks == [5]
    assert plot.text().splitlines()[1:11] == [
        "#....", ".#...", "..#..", "...#.", "....#", "-----", "#....", ".#...", "..#..",
        "(one character per entry)"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.lists(st.integers(1, 4), min_size=1, max_size=3),
       st.integers(0, 2 ** 31 - 1))
def test_block_matrix_of_any_sizes_matches_the_dense_assembly(heights, widths, seed):
    g = torch.Generator().manual_seed(seed)
    blocks = [[torch.rand(h, w, generator=g) < 0.4 for w in widths] for h in heights]
    plot = spy(tuple(tuple(b.to_sparse() for b in row) for row in blocks))
    want = torch.cat([torch.cat(row, 1) for row in blocks], 0)
    assert plot.shape == tuple(want.shape)
    assert torch.equal(_dense(plot), want)
    assert plot.row_breaks == torch.tensor(heights).cumsum(0).tolist()[:-1]
    assert plot.col_breaks == torch.tensor(widths).cumsum(0).tolist()[:-1]
    lines = plot.text(ascii=True).splitlines()
    body = lines[1:1 + want.shape[0] + len(heights) - 1]
    assert len({len(line) for line in body}) == 1   # every row of the picture has one width


def test_block_mismatch_names_the_block():
    with pytest.raises(ValueError, match=r"block \(output 1, input 0\) is 2 x 3"):
        spy(((torch.ones(2, 2), torch.ones(2, 3)), (torch.ones(2, 3), torch.ones(2, 3))))
    with pytest.raises(ValueError, match="nesting must be"):
        spy((torch.ones(2, 2), torch.ones(2, 2)), nesting="rows")
    with pytest.raises(ValueError, match="1 input names for 2 inputs"):
        spy((torch.ones(2, 2), torch.ones(2, 3)), input_names=["x"], nesting="inputs")


def test_text_keeps_trailing_blanks():
    m = torch.zeros(200, 200, dtype=torch.bool)
    m[:, 0] = True   # only the first column: stripped lines would be one character wide
    for ascii in (True, False):
        body = spy(m, width=40).text(ascii=ascii).splitlines()[1:-1]
        assert len(body) > 1 and len({len(line) for line in body}) == 1 and len(body[0]) > 1


def test_two_inputs_unicode_rows_and_rule_have_one_width():
    p = trackjac.jacobian_sparsity(lambda a, b: (a * b.sum(), torch.cat([a, b])), torch.rand(2), torch.rand(3))
    lines = spy(p, ascii=False, input_names=["a", "b"]).text().splitlines()
    assert lines[1:4] == ["\u25cf \u00b7\u2502\u25cf \u25cf \u25cf", "\u00b7 \u25cf\u2502\u25cf \u25cf \u25cf",
                          "\u2500\u2500\u2500\u253c\u2500\u2500\u2500\u2500\u2500"]
    assert lines[-1] == "blocks: rows = outputs [output 0 (2), output 1 (5)], columns = inputs [a (2), b (3)]"


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib")
def test_png_integer_ticks_and_block_labels():
    p = trackjac.jacobian_sparsity(lambda a, b: (a * b.sum(), torch.cat([a, b])), torch.rand(2), torch.rand(3))
    fig = spy(p, input_names=["a", "b"]).figure()
    ax = fig.axes[0]
    for ticks in (ax.get_xticks(), ax.get_yticks()):
        assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
    assert {t.get_text() for t in ax.texts} == {"a", "b", "output 0", "output 1"}
