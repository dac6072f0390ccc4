"""The package's import structure: stages import only the stages below them, no cycles,
and no import inside a function without a comment saying why."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "trackjac"

# stage -> stages (and leaf modules) it may import
ALLOWED = {
    "provenance": {"provenance", "_sparse", "_bitops"},
    "rules": {"rules", "provenance", "dtypes", "errors", "_sparse"},
    "tracer": {"tracer", "rules", "provenance", "dtypes", "errors", "_sparse", "_nesting", "_threads", "pattern",
               "_scipy"},
    "coloring": {"coloring", "_sparse", "_bitops", "_threads"},
    "evaluate": {"evaluate", "coloring", "tracer", "errors", "_sparse", "_nesting", "_threads", "pattern", "_scipy"},
}


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name: str, path: pathlib.Path):
    """(imported trackjac module, line, inside a function, has a comment) for every import."""
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in funcs for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        line = lines[node.lineno - 1]
        for t in targets:
            yield t, node.lineno, id(node) in inner, "#" in line


MODULES = dict(_modules())


def _graph():
    g = {}
    for name, path in MODULES.items():
        deps = set()
        for t, *_ in _imports(name, path):
            while t and t not in MODULES:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name and t.startswith("trackjac"):
                deps.add(t)
        g[name] = deps
    return g


def test_no_import_cycle():
    g = _graph()
    state = {}

    def visit(m, stack):
        state[m] = 1
        for d in g[m]:
            # a package's __init__ importing its own submodules is not a cycle through them
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, d]))
            if d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_stage_imports_only_lower_stages(stage):
    bad = []
    for name, deps in _graph().items():
        if not name.startswith(f"trackjac.{stage}"):
            continue
        for d in deps:
            top = d.split(".")[1] if d.count(".") else ""
            if top and top not in ALLOWED[stage]:
                bad.append(f"{name} imports {d}")
    assert not bad, bad


def test_no_unexplained_import_inside_a_function():
    bad = [f"{path.relative_to(ROOT.parent)}:{line}" for name, path in MODULES.items()
           for _, line, inner, commented in _imports(name, path) if inner and not commented]
    assert not sorted(set(bad)), sorted(set(bad))


@pytest.mark.parametrize("name", [n for n, _ in _modules() if "." in n and not n.endswith("__main__")])
def test_no_module_is_shadowed_by_a_name_of_its_package(name):
    """``package.module`` is the module: a function of the same name exported by the package would
    hide it from ``mock.patch``, ``getattr`` imports and Python 3.9's ``import a.b as c``."""
    import importlib

    parent, _, leaf = name.rpartition(".")
    module = importlib.import_module(name)
    assert getattr(importlib.import_module(parent), leaf) is module
