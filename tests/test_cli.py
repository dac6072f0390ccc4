"""The command line (``python -m trackjac demo|spy``) and ``trackjac.spy``."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import trackjac
from trackjac import spy
from trackjac.__main__ import load_function, main
from trackjac.demo import brusselator, seed_func

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
HAVE_ENGINE = hasattr(trackjac, "jacobian") and hasattr(trackjac, "jacobian_plan")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# ---------------------------------------------------------------------------
# trackjac.spy
# ---------------------------------------------------------------------------


def seed_pattern():
    args = [torch.rand(2, dtype=torch.float64) for _ in range(3)]
    return trackjac.jacobian_sparsity(seed_func, *args)


def test_spy_exact_ascii_blocks():
    text = spy(seed_pattern(), ascii=True).text()
    assert text.splitlines()[:7] == [
        "6 x 6 pattern, 6 nonzeros (16.7%), at most 1 per row, 1 per column",
        "#.|..|..",
        ".#|..|..",
        "..|#.|..",
        "..|.#|..",
        "..|..|#.",
        "..|..|.#",
    ]


def test_spy_exact_unicode():
    text = spy(torch.eye(3, dtype=torch.bool), ascii=False).text()
    lines = text.splitlines()
    assert lines[1] == "\u25cf \u00b7 \u00b7"
    assert lines[3] == "\u00b7 \u00b7 \u25cf"


def test_spy_nested_outputs_and_inputs():
    def f(a, b):
        return a * b.sum(), torch.cat([a, b])

    p = trackjac.jacobian_sparsity(f, torch.rand(2), torch.rand(3))
    plot = spy(p, ascii=True)
    assert plot.shape == (7, 5)
    assert plot.row_breaks == [2] and plot.col_breaks == [2]
    assert plot.nnz == 2 + 2 * 3 + 5
    assert "+" in plot.text()  # the block corner


def test_spy_large_braille_and_density():
    N = 32
    p = trackjac.jacobian_sparsity(brusselator, torch.rand(2, N, N, dtype=torch.float64))
    plot = spy(p, width=60)
    assert plot.nnz == 6 * 2 * N * N
    braille = plot.text(ascii=False)
    lines = braille.splitlines()
    assert "2048 x 2048 pattern, 12288 nonzeros" in lines[0]
    body = lines[1:-1]
    assert 1 < len(body) <= 24 and max(len(l) for l in body) <= 60
    assert all(0x2800 <= ord(c) <= 0x28FF for l in body for c in l)
    dens = plot.text(ascii=True).splitlines()[1:-1]
    assert all(set(l) <= set(" .:-=+*#%@") for l in dens)
    # the diagonal is never lost: the first cell holds nonzeros
    assert dens[0][0] != " "


def test_spy_never_hides_a_nonzero():
    m = torch.zeros(1000, 1000, dtype=torch.bool)
    m[517, 3] = True
    text = spy(m.to_sparse(), ascii=True, width=20).text()
    assert sum(c != " " for l in text.splitlines()[1:-1] for c in l) == 1


def test_spy_inputs():
    # dense values: nonzeros count; sparse values: every stored entry counts (a stored 0 too)
    d = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    assert spy(d).nnz == 1
    s = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 1]]), torch.tensor([0.0, 3.0]), (2, 2))
    assert spy(s).nnz == 2
    assert spy(s.to_sparse_csr()).nnz == 2
    b = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 1]]), torch.tensor([False, True]), (2, 2))
    assert spy(b).nnz == 1  # an explicit False is no nonzero
    assert spy(torch.ones(4)).shape == (1, 4)

    class PlanLike:
        pattern = torch.eye(3).to_sparse()

    assert spy(PlanLike()).nnz == 3


def test_spy_errors():
    x = trackjac.Tracked(torch.rand(2, 3))
    with pytest.raises(ValueError, match="reshape"):
        spy((x * 2).depends_on(x))
    with pytest.raises(TypeError, match="2-D tensor"):
        spy("not a pattern")


def test_spy_empty():
    assert spy(torch.zeros(0, 4)).text().startswith("0 x 4 pattern, 0 nonzeros")


@pytest.mark.skipif(HAVE_MPL, reason="matplotlib is installed")
def test_spy_png_without_matplotlib(tmp_path):
    plot = spy(torch.eye(3))
    assert plot._repr_png_() is None
    with pytest.raises(ImportError, match=r"trackjac\[plot\]"):
        plot.save(tmp_path / "x.png")


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib")
def test_spy_png(tmp_path):
    small = spy(seed_pattern(), png=tmp_path / "small.png", title="seed")
    assert (tmp_path / "small.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert small._repr_png_()[:4] == b"\x89PNG"
    big = torch.sparse_coo_tensor(torch.stack([torch.arange(5000), torch.arange(5000)]),
                                  torch.ones(5000, dtype=torch.bool), (5000, 5000))
    spy(big, png=tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > 1000


# ---------------------------------------------------------------------------
# python -m trackjac spy
# ---------------------------------------------------------------------------


def test_cli_spy_builtin(capsys):
    assert main(["spy", "trackjac.demo:brusselator", "--shapes", "2,4,4", "--ascii", "-q",
                 "--no-color"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trackjac.demo:brusselator: 32 x 32 pattern, 192 nonzeros")


def test_cli_spy_file_two_inputs_progress(tmp_path, capsys):
    mod = tmp_path / "mymodel.py"
    mod.write_text(textwrap.dedent("""
        import torch
        def residual(cams, pts):
            return cams[torch.tensor([0, 1, 1])].sum(-1) * pts.sum(-1)
    """))
    assert main(["spy", f"{mod}:residual", "--shapes", "2,9", "--shapes", "3,3", "--ascii"]) == 0
    cap = capsys.readouterr()
    assert "3 x 27 pattern, 36 nonzeros" in cap.out
    assert "tracking: done" in cap.err and "inputs: (2, 9), (3, 3), float64" in cap.err
    if hasattr(sys.modules.get("trackjac.coloring"), "color_rows"):
        assert "vjp(s)" in cap.err


def test_cli_spy_module_in_cwd(tmp_path, monkeypatch, capsys):
    (tmp_path / "cwdmod_for_spy.py").write_text("def f(x):\n    return x.cumsum(0)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert main(["spy", "cwdmod_for_spy:f", "--shapes", "4", "-q", "--ascii", "--local"]) == 0
    assert "4 x 4 pattern, 10 nonzeros" in capsys.readouterr().out


def test_cli_spy_errors(capsys):
    with pytest.raises(SystemExit, match="module:function"):
        load_function("no_colon_here")
    with pytest.raises(SystemExit, match="cannot import"):
        load_function("surely_not_a_module_xyz:f")
    with pytest.raises(SystemExit, match="no attribute"):
        load_function("trackjac.demo:nope")
    with pytest.raises(SystemExit, match="without arguments"):
        load_function("torch.nn:LayerNorm")
    assert isinstance(load_function("torch.nn:Tanh"), torch.nn.Tanh)
    with pytest.raises(SystemExit, match="--shapes"):
        main(["spy", "trackjac.demo:brusselator", "-q"])
    with pytest.raises(SystemExit):  # argparse: bad shape
        main(["spy", "trackjac.demo:brusselator", "--shapes", "a,b"])


@pytest.mark.skipif(HAVE_MPL, reason="matplotlib is installed")
def test_cli_spy_png_needs_matplotlib(tmp_path, capsys):
    rc = main(["spy", "trackjac.demo:brusselator", "--shapes", "2,4,4", "-q", "--no-color",
               "--png", str(tmp_path / "p.png")])
    assert rc == 2 and "matplotlib" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_MPL, reason="needs matplotlib")
def test_cli_spy_png(tmp_path):
    assert main(["spy", "trackjac.demo:brusselator", "--shapes", "2,8,8", "-q", "--no-color",
                 "--png", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_progress_heartbeat(tmp_path, capsys):
    # a stage running longer than the heartbeat period (2 s) reports that it still runs
    mod = tmp_path / "slowmod_for_spy.py"
    mod.write_text("import time\ndef f(x):\n    time.sleep(3.0)\n    return x * 7\n")
    assert main(["spy", f"{mod}:f", "--shapes", "3", "--ascii", "--no-color"]) == 0
    cap = capsys.readouterr()
    assert "3 x 3 pattern, 3 nonzeros" in cap.out   # the stage's result is used
    err = cap.err
    assert "tracking ..." in err and "still running" in err and "tracking: done in" in err


def test_cli_help(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


# ---------------------------------------------------------------------------
# python -m trackjac demo
# ---------------------------------------------------------------------------


def test_demo_seed_part(capsys):
    assert main(["demo", "--no-bench"]) == 0
    out = capsys.readouterr().out
    assert "0*" in out and "never used" in out
    rows = [l for l in out.splitlines() if l.strip().startswith("out[")]
    combined = rows[6:]
    assert combined[0].split()[1:] == ["0*", "\u00b7", "\u00b7", "\u00b7", "\u00b7", "\u00b7"] or \
        combined[0].split()[1:] == ["0*", ".", ".", ".", ".", "."]
    assert combined[2].split()[3] == "2.0"


@pytest.mark.skipif(not HAVE_ENGINE, reason="the sparse Jacobian engine is not available")
def test_demo_subprocess_small():
    r = subprocess.run([sys.executable, "-m", "trackjac", "demo", "--sizes", "4,6"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "jacrev/plan" in r.stdout and "max err" in r.stdout
    table = [l.split() for l in r.stdout.splitlines() if l.strip()[:2] in ("4 ", "6 ")]
    assert len(table) == 2


# ---------------------------------------------------------------------------
# issue 14: block layout, modules at the default dtype, warnings at the user's line, help text
# ---------------------------------------------------------------------------


def test_cli_spy_two_outputs_one_input(tmp_path, capsys):
    mod = tmp_path / "twoout_for_spy.py"
    mod.write_text("def f(x):\n    return x * 2, x[:3].sin()\n")
    assert main(["spy", f"{mod}:f", "--shapes", "5", "--ascii", "-q", "--no-color"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("8 x 5 pattern, 8 nonzeros (20%), at most 1 per row, 2 per column")
    assert out[6] == "-----"
    assert out[-1] == "blocks: rows = outputs [output 0 (5), output 1 (3)], columns = inputs [x (5)]"


def test_cli_spy_module_at_default_dtype(tmp_path, capsys):
    mod = tmp_path / "net_for_spy.py"
    mod.write_text(textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(4, 3)
            def forward(self, x):
                return self.lin(x)
    """))
    assert main(["spy", f"{mod}:Net", "--shapes", "2,4", "--ascii", "--no-color"]) == 0
    cap = capsys.readouterr()
    assert "6 x 8 pattern, 24 nonzeros" in cap.out
    assert "module Net converted to float64" in cap.err


def test_cli_spy_dtype_mismatch_inside_f_says_what_to_pass(tmp_path):
    mod = tmp_path / "f32_for_spy.py"
    mod.write_text("import torch\nW = torch.ones(3, 4, dtype=torch.float32)\ndef f(x):\n    return x @ W.T\n")
    with pytest.raises(SystemExit, match="--dtype float32"):
        main(["spy", f"{mod}:f", "--shapes", "2,4", "-q", "--no-color"])
    assert main(["spy", f"{mod}:f", "--shapes", "2,4", "-q", "--no-color", "--dtype", "float32"]) == 0


def test_cli_warning_points_at_the_users_line(tmp_path):
    mod = tmp_path / "branchy_for_spy.py"
    mod.write_text("def f(x):\n    if x.sum() > 0:\n        return x * 2\n    return x\n")
    r = subprocess.run([sys.executable, "-m", "trackjac", "spy", f"{mod}:f", "--shapes", "4", "-q",
                        "--no-color", "--ascii"], capture_output=True, text=True, env=_env(), cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{mod}:2: ControlFlowWarning" in r.stderr
    assert "__main__.py" not in r.stderr


def test_cli_help_texts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "seed question" not in text and "multiplied by zero or never used" in text
