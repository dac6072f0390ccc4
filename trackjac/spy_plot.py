"""``trackjac.spy``: look at a sparsity pattern, in a terminal or a notebook.

(The module is ``trackjac.spy_plot`` so that the function ``trackjac.spy`` does not shadow it.)

``spy(pattern)`` returns a :class:`SpyPlot`.  Printed (``print(spy(p))`` or its
``repr`` in a REPL) it is a text picture; in a Jupyter notebook it shows as a PNG
when matplotlib is installed (``pip install 'trackjac[plot]'``), else as text.
``spy(p, png="pattern.png")`` writes the PNG file.

The text picture has one character per matrix entry when the matrix is small,
and otherwise one character per block of entries, drawn with braille dots (each
character holds 2 x 4 cells) or, with ``ascii=True``, with density characters.
A cell is drawn when any entry it covers is a structural nonzero, so a picture
never hides a nonzero, however large the matrix.
"""
from __future__ import annotations

import io
import math
import os
import sys
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._blocks import flat_side, plan_nesting
from ._sparse import structural_coo
from .pattern import SparsityPattern

__all__ = ["spy", "SpyPlot"]

_ASCII_LEVELS = " .:-=+*#%@"  # fraction of cells in a block holding a nonzero
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))  # [row in 4][col in 2]


def _coo(p: Tensor) -> Tuple[Tensor, Tensor, int, int]:
    """Structural nonzeros ``(rows, cols, m, n)`` of a 2-D sparse or dense tensor, on the CPU."""
    if p.dim() == 1:
        p = p.unsqueeze(0)
    if p.dim() != 2:
        raise ValueError(
            f"spy: the pattern must be 2-D, got shape {tuple(p.shape)}. A pattern from "
            "y.depends_on(x) has shape y.shape + x.shape: reshape it to "
            "(y.numel(), x.numel()), or use trackjac.jacobian_sparsity, which returns 2-D patterns.")
    return structural_coo(p)


def _blocks(parts: Sequence[Sequence[Tuple[Tensor, Tensor, int, int]]]):
    """Assemble a block matrix (rows of blocks = outputs, columns of blocks = inputs) into one COO.

    Outputs may differ in size and so may inputs; the blocks of one block row must share their
    height and those of one block column their width. Returns rows, cols, m, n and the block
    boundaries."""
    if len({len(blk) for blk in parts}) != 1:
        raise ValueError("spy: the nested patterns do not form a block matrix: the outputs have "
                         f"{[len(blk) for blk in parts]} input blocks each")
    heights = [blk[0][2] for blk in parts]
    widths = [b[3] for b in parts[0]]
    for i, blk in enumerate(parts):
        for j, b in enumerate(blk):
            if b[2] != heights[i] or b[3] != widths[j]:
                raise ValueError(
                    f"spy: the nested patterns do not form a block matrix: block (output {i}, input {j}) "
                    f"is {b[2]} x {b[3]}, but output {i} has {heights[i]} rows and input {j} "
                    f"{widths[j]} columns in the other blocks")
    r0 = [0] + list(torch.tensor(heights).cumsum(0).tolist())
    c0 = [0] + list(torch.tensor(widths).cumsum(0).tolist())
    rows, cols = [], []
    for i, blk in enumerate(parts):
        for j, (r, c, _, _) in enumerate(blk):
            rows.append(r + r0[i])
            cols.append(c + c0[j])
    return torch.cat(rows), torch.cat(cols), r0[-1], c0[-1], r0[1:-1], c0[1:-1]


def _normalize(pattern: Any, nesting: Optional[str] = None):
    """rows, cols, m, n, row boundaries, column boundaries."""
    if isinstance(pattern, SparsityPattern):   # a full grid: no nesting to guess
        return _blocks([[_coo(b) for b in row] for row in pattern.blocks])
    if hasattr(pattern, "pattern") and not isinstance(pattern, Tensor):  # a JacobianPlan
        nesting = nesting or plan_nesting(pattern)
        pattern = pattern.pattern
    if isinstance(pattern, Tensor):
        r, c, m, n = _coo(pattern)
        return r, c, m, n, [], []
    if isinstance(pattern, (tuple, list)) and pattern:
        if all(isinstance(p, Tensor) for p in pattern):
            blocks = [_coo(p) for p in pattern]
            if flat_side([b[2:] for b in blocks], nesting, "spy") == "outputs":  # one input: a column of blocks
                return _blocks([[b] for b in blocks])
            return _blocks([blocks])   # one output: a row of blocks
        if all(isinstance(p, (tuple, list)) and p and all(isinstance(q, Tensor) for q in p) for p in pattern):
            return _blocks([[_coo(p) for p in row] for row in pattern])
    raise TypeError(
        "spy: expected a 2-D tensor (sparse or dense), a nested tuple of them as returned by "
        f"trackjac.jacobian_sparsity / trackjac.jacobian, or a plan; got {type(pattern).__name__}")


def _labels(given: Optional[Sequence[str]], count: int, kind: str) -> list:
    if given is None:
        return [f"{kind} {i}" for i in range(count)]
    given = [str(g) for g in given]
    if len(given) != count:
        raise ValueError(f"spy: {len(given)} {kind} names for {count} {kind}s")
    return given


def _utf8_ok(stream) -> bool:
    enc = getattr(stream, "encoding", None) or ""
    return enc.lower().replace("-", "") in ("utf8", "utf8mb4")


class SpyPlot:
    """A sparsity picture: ``str()`` is text, ``_repr_png_`` a PNG (matplotlib), ``save(path)``.

    Attributes:
        shape: ``(m, n)`` of the whole matrix.
        nnz: number of structural nonzeros.
        rows, cols: their coordinates (CPU int64 tensors).
        row_breaks, col_breaks: first row (column) of every block after the first.
        row_labels, col_labels: names of the block rows (outputs) and block columns (inputs).
    """

    def __init__(self, rows: Tensor, cols: Tensor, m: int, n: int, row_breaks=(), col_breaks=(),
                 *, width: int = 80, height: Optional[int] = None, ascii: Optional[bool] = None,
                 title: Optional[str] = None, markersize: Optional[float] = None,
                 row_labels: Optional[Sequence[str]] = None, col_labels: Optional[Sequence[str]] = None):
        self.rows, self.cols = rows.long(), cols.long()
        self.shape = (int(m), int(n))
        self.nnz = int(rows.numel())
        self.row_breaks, self.col_breaks = list(row_breaks), list(col_breaks)
        self.width = max(int(width), 8)
        self.height = height
        self.ascii = ascii
        self.title = title
        self.markersize = markersize
        self.row_labels = _labels(row_labels, len(self.row_breaks) + 1, "output")
        self.col_labels = _labels(col_labels, len(self.col_breaks) + 1, "input")

    # -- summary ---------------------------------------------------------------
    def summary(self) -> str:
        m, n = self.shape
        dens = self.nnz / (m * n) if m * n else 0.0
        per_row = torch.bincount(self.rows, minlength=m) if m else torch.zeros(0, dtype=torch.long)
        per_col = torch.bincount(self.cols, minlength=n) if n else torch.zeros(0, dtype=torch.long)
        mr = int(per_row.max()) if m else 0
        mc = int(per_col.max()) if n else 0
        return (f"{m} x {n} pattern, {self.nnz} nonzeros ({100 * dens:.3g}%), "
                f"at most {mr} per row, {mc} per column")

    # -- text -------------------------------------------------------------------
    def text(self, *, ascii: Optional[bool] = None, width: Optional[int] = None,
             height: Optional[int] = None) -> str:
        """The picture as text (``ascii=None``: braille dots unless stdout is not UTF-8)."""
        ascii = self.ascii if ascii is None else ascii
        if ascii is None:
            ascii = not _utf8_ok(sys.stdout)
        width = self.width if width is None else max(int(width), 8)
        height = self.height if height is None else height
        m, n = self.shape
        lines = [(self.title + ": " if self.title else "") + self.summary()]
        if m == 0 or n == 0:
            return lines[0]
        if height is None:
            height = max(8, min(width // 3, 24))
        if m <= height and n <= width // (1 if ascii else 2):
            lines += self._exact(ascii)
        elif ascii:
            lines += self._density(width, height)
        else:
            lines += self._braille(width, height)
        if self.row_breaks or self.col_breaks:
            lines.append(self.legend())
        return "\n".join(lines)

    def legend(self) -> str:
        """The block layout in words: which output and input each block row and column is."""
        def side(labels, breaks, size):
            edges = [0] + list(breaks) + [size]
            return ", ".join(f"{lab} ({edges[k + 1] - edges[k]})" for k, lab in enumerate(labels))
        m, n = self.shape
        return (f"blocks: rows = outputs [{side(self.row_labels, self.row_breaks, m)}], "
                f"columns = inputs [{side(self.col_labels, self.col_breaks, n)}]")

    def _exact(self, ascii: bool):
        m, n = self.shape
        on, off = ("#", ".") if ascii else ("\u25cf", "\u00b7")  # filled circle, middle dot
        grid = torch.zeros(m, n, dtype=torch.bool)
        grid[self.rows, self.cols] = True
        rb, cb = set(self.row_breaks), set(self.col_breaks)
        sep = "|" if ascii else "\u2502"
        gap = "" if ascii else " "   # braille-free pictures space the dots; every line has one width
        out = []
        for i in range(m):
            if i in rb:
                out.append(self._hline(n, ascii, cb))
            row = []
            for j in range(n):
                if j in cb:
                    row.append(sep)
                row.append((on if grid[i, j] else off) + (gap if j < n - 1 and j + 1 not in cb else ""))
            out.append("".join(row))
        return out + ["(one character per entry)"]

    @staticmethod
    def _hline(n: int, ascii: bool, cb) -> str:
        s = []
        for j in range(n):
            if j in cb:
                s.append("+" if ascii else "\u253c")
            last = j == n - 1 or j + 1 in cb   # no gap after a block's last column
            s.append("-" if ascii else "\u2500" if last else "\u2500\u2500")
        return "".join(s)

    def _cells(self, R: int, C: int) -> Tuple[Tensor, float, float]:
        """Counts of nonzeros in an R x C grid of cells, and the entries per cell along each axis."""
        m, n = self.shape
        fr, fc = m / R, n / C
        ri = torch.clamp((self.rows.double() / fr).long(), max=R - 1)
        ci = torch.clamp((self.cols.double() / fc).long(), max=C - 1)
        counts = torch.bincount(ri * C + ci, minlength=R * C).reshape(R, C)
        return counts, fr, fc

    def _fit(self, W: int, H: int, sub_c: int, sub_r: int) -> Tuple[int, int]:
        """Grid size in cells (at most ``W * sub_c`` by ``H * sub_r``) that keeps the aspect ratio.

        A character is about twice as tall as wide, so a cell is ``2 * sub_c / sub_r`` times as
        tall as wide: square for braille (2 x 4 dots), 2:1 for one ASCII character per cell.
        """
        m, n = self.shape
        a = 2.0 * sub_c / sub_r
        C = min(n, W * sub_c)
        R = min(m, H * sub_r)
        # a cell covers m / R rows and n / C columns; the picture is square when m / R = a * n / C
        if m / R > a * n / C:
            C = max(1, min(C, math.ceil(n * R * a / m)))
        else:
            R = max(1, min(R, math.ceil(m * C / (a * n))))
        return R, C

    def _density(self, W: int, H: int):
        R, C = self._fit(W, H, 1, 1)
        counts, fr, fc = self._cells(R, C)
        frac = counts.double() / max(fr * fc, 1.0)
        lv = len(_ASCII_LEVELS) - 1
        level = torch.where(counts > 0, torch.clamp((frac * lv).ceil().long(), 1, lv), 0)
        out = ["".join(_ASCII_LEVELS[v] for v in row) for row in level.tolist()]  # full width: not ragged
        out.append(f"(each character: {fr:.3g} x {fc:.3g} entries; darker = denser)")
        return out

    def _braille(self, W: int, H: int):
        R, C = self._fit(W, H, 2, 4)
        counts, fr, fc = self._cells(R, C)
        Rp, Cp = -(-R // 4) * 4, -(-C // 2) * 2
        on = torch.zeros(Rp, Cp, dtype=torch.bool)
        on[:R, :C] = counts > 0
        bits = torch.tensor(_BRAILLE_BITS, dtype=torch.int64)  # (4, 2)
        code = (on.reshape(Rp // 4, 4, Cp // 2, 2).permute(0, 2, 1, 3).long() * bits).sum((2, 3))
        out = ["".join(chr(0x2800 + v) for v in row) for row in code.tolist()]  # full width: not ragged
        out.append(f"(each dot: {fr:.3g} x {fc:.3g} entries)")
        return out

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return self.text()

    # -- images -------------------------------------------------------------------
    def figure(self, *, dpi: int = 100, size: float = 5.0):
        """A matplotlib ``Figure`` (no pyplot state is touched). Needs matplotlib."""
        try:
            from matplotlib.figure import Figure  # optional dependency: imported only for pictures
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("spy: PNG output needs matplotlib: pip install 'trackjac[plot]' "
                              "(or pip install matplotlib)") from e
        m, n = self.shape
        aspect = m / n if n else 1.0
        fw = size if aspect <= 1 else max(size / aspect, 3.5)
        fh = max(size * aspect, 3.0) if aspect <= 1 else size
        fig = Figure(figsize=(fw + 0.6, fh + 0.8), dpi=dpi)
        ax = fig.add_subplot(1, 1, 1)
        pix = int(dpi * size)
        if m <= pix and n <= pix:
            ms = self.markersize or max(0.5, min(6.0, 0.6 * pix / max(m, n)))
            ax.plot(self.cols.numpy(), self.rows.numpy(), "s", markersize=ms, color="#1f4e9c",
                    markeredgewidth=0, linestyle="none")
            ax.set_xlim(-0.5, n - 0.5)
            ax.set_ylim(m - 0.5, -0.5)
        else:  # one pixel per cell; a cell is dark when it holds any nonzero
            R, C = self._fit(pix, pix // 2, 1, 1)
            counts, _, _ = self._cells(R, C)
            ax.imshow((counts > 0).numpy(), cmap="Greys", interpolation="nearest", aspect="auto",
                      extent=(-0.5, n - 0.5, m - 0.5, -0.5), vmin=0, vmax=1)
        for b in self.row_breaks:
            ax.axhline(b - 0.5, color="#c0392b", linewidth=0.8)
        for b in self.col_breaks:
            ax.axvline(b - 0.5, color="#c0392b", linewidth=0.8)
        ax.set_aspect("equal" if 0.02 < aspect < 50 else "auto")
        from matplotlib.ticker import MaxNLocator  # optional dependency, as above
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # entries are whole rows and columns
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if self.row_breaks or self.col_breaks:
            self._label_blocks(ax)
        ax.xaxis.tick_top()
        ax.set_xlabel("input element")
        ax.set_ylabel("output element")
        head = self.summary().replace(", at most", ",\nat most", 1)
        ax.set_title((self.title + "\n" if self.title else "") + head, fontsize=8)
        fig.tight_layout()
        return fig

    def _label_blocks(self, ax) -> None:
        """Name every block column (below the matrix) and block row (right of it)."""
        from matplotlib.transforms import blended_transform_factory  # optional dependency, as above
        m, n = self.shape
        ce = [0] + self.col_breaks + [n]
        re_ = [0] + self.row_breaks + [m]
        below = blended_transform_factory(ax.transData, ax.transAxes)
        right = blended_transform_factory(ax.transAxes, ax.transData)
        for k, lab in enumerate(self.col_labels):
            ax.text((ce[k] + ce[k + 1] - 1) / 2, -0.02, lab, transform=below, ha="center", va="top",
                    fontsize=7, color="#c0392b")
        for k, lab in enumerate(self.row_labels):
            ax.text(1.02, (re_[k] + re_[k + 1] - 1) / 2, lab, transform=right, ha="left", va="center",
                    fontsize=7, color="#c0392b", rotation=-90)

    def png(self, **kw) -> bytes:
        """PNG bytes (needs matplotlib)."""
        fig = self.figure(**kw)
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency, as above
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def save(self, path: Union[str, os.PathLike], **kw) -> str:
        """Write the PNG to ``path`` (needs matplotlib); returns the path."""
        data = self.png(**kw)
        with open(path, "wb") as fh:
            fh.write(data)
        return os.fspath(path)

    def _repr_png_(self) -> Optional[bytes]:  # Jupyter: an image when matplotlib is there
        try:
            return self.png()
        except ImportError:
            return None

    def _repr_pretty_(self, p, cycle) -> None:  # IPython terminal: text, not a PNG
        p.text(self.text())


def spy(pattern: Any, *, png: Optional[Union[str, os.PathLike]] = None, width: int = 80,
        height: Optional[int] = None, ascii: Optional[bool] = None, title: Optional[str] = None,
        markersize: Optional[float] = None, nesting: Optional[str] = None,
        input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None) -> SpyPlot:
    """Draw a sparsity pattern.

    Args:
        pattern: a 2-D tensor, sparse (COO, CSR, BSR ...: every stored entry counts, also a
            stored numerical zero, except ``False`` in a boolean tensor) or dense (nonzeros
            count); a nested tuple as returned by :func:`trackjac.jacobian_sparsity` or
            :func:`trackjac.jacobian` for several inputs/outputs (drawn as one block matrix,
            block rows = outputs, block columns = inputs, of any sizes, separated by lines);
            a :class:`trackjac.SparsityPattern` (its block grid, labelled with its names); or a
            plan (its ``.sparsity``, else its ``.pattern``).
        png: also write a PNG there (needs matplotlib: ``pip install 'trackjac[plot]'``).
        width: text width in characters (default 80).
        height: text height in lines (default a third of the width, at most 24).
        ascii: ``True`` for plain ASCII density characters, ``False`` for Unicode braille
            dots; default: braille when stdout is UTF-8.
        title: a title line.
        markersize: marker size of the PNG for small matrices (default from the size).
        nesting: what a flat tuple of blocks runs over: "inputs" (``f`` returned one tensor)
            or "outputs" (``f`` returned a tuple, one input). Default: from the block shapes
            (same row counts: inputs; same column counts, different row counts: outputs),
            "inputs" when all blocks have one shape; also from the number of names given.
        input_names, output_names: block labels (default "input 0", "output 0" ...).

    Returns:
        A :class:`SpyPlot`: ``print()`` it for text; in Jupyter it displays as a PNG when
        matplotlib is installed; ``.save(path)`` writes a PNG.
    """
    if nesting is None and isinstance(pattern, (tuple, list)) and pattern and all(
            isinstance(p, Tensor) for p in pattern):  # a flat tuple: the names say which side it runs over
        if input_names is not None and len(input_names) == 1 and len(pattern) > 1:
            nesting = "outputs"
        elif output_names is not None and len(output_names) == 1 and len(pattern) > 1:
            nesting = "inputs"
    if not isinstance(pattern, (Tensor, tuple, list)) and isinstance(getattr(pattern, "sparsity", None), SparsityPattern):
        pattern = pattern.sparsity   # a plan: its pattern with the block grid and names
    if isinstance(pattern, SparsityPattern):
        output_names = pattern.out_names if output_names is None else output_names
        input_names = pattern.in_names if input_names is None else input_names
    rows, cols, m, n, rb, cb = _normalize(pattern, nesting)
    plot = SpyPlot(rows, cols, m, n, rb, cb, width=width, height=height, ascii=ascii, title=title,
                   markersize=markersize, row_labels=output_names, col_labels=input_names)
    if png is not None:
        plot.save(png)
    return plot
