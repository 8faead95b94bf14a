"""The layers point one way: every import of every module (module- and function-level, found by
parsing the source) goes to the same or a lower layer, and no two modules import each other
through any chain. docs/architecture.md draws the same diagram."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folder -> package, as pyproject.toml maps them.
FOLDERS = {"specroll": "specroll", "traces": "specroll.traces", "calibration": "specroll.calibration",
           "policies": "specroll.policies", "simulator": "specroll.simulator",
           "real_backend": "specroll.real_backend", "analysis": "specroll.analysis"}
# The model layer of the real backend: the model, its weights, tokenizer and keyed sampling, the
# CUDA-graph pool and the toy model. Everything else in real_backend is the engine layer.
MODEL_LAYER = {"_model", "_load", "_gguf", "_hf", "_tokenizer", "_sampling", "_graphs", "_toy", "_cpu_kernel"}
# Bottom to top. A module may import modules of its own layer or of lower ones.
LAYERS = ["core", "model", "traces", "calibration", "policies", "simulator", "engine", "analysis", "cli"]


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["specroll", "core"]:
        return "core"
    if parts[:2] == ["specroll", "real_backend"]:
        return "model" if len(parts) > 2 and parts[2] in MODEL_LAYER else "engine"
    if len(parts) > 1 and parts[1] in ("traces", "calibration", "policies", "simulator", "analysis"):
        return parts[1]
    return "cli"  # specroll (the lazy facade), specroll.cli, specroll.commands.*, specroll.__main__


def _modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            rel = rel[:-1] if rel[-1] == "__init__" else rel
            out[".".join((pkg, *rel))] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every specroll module this one imports, wherever the import statement is."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] in FOLDERS and n.split(".")[0] != "specroll":
                found.add("<top-level " + n.split(".")[0] + ">")
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n and n != module:
                found.add(n)
    return found


GRAPH = {m: _imports(m, p, set(_modules())) for m, p in _modules().items()}


def test_no_top_level_package_but_specroll() -> None:
    bad = {m: sorted(t for t in ts if t.startswith("<")) for m, ts in GRAPH.items()}
    assert not {m: t for m, t in bad.items() if t}, "imports outside the specroll namespace"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module: str) -> None:
    mine = LAYERS.index(layer_of(module))
    up = sorted(t for t in GRAPH[module] if not t.startswith("<") and LAYERS.index(layer_of(t)) > mine
                and t != "specroll")
    assert not up, f"{module} ({layer_of(module)}) imports a higher layer: {up}"


def test_core_imports_nothing_of_ours_but_core() -> None:
    for m, ts in GRAPH.items():
        if layer_of(m) == "core":
            assert all(layer_of(t) == "core" for t in ts), (m, ts)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            if color.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in color and (found := visit(t)):
                return found
        stack.pop()
        color[n] = 2
        return None

    for n in sorted(graph):
        if n not in color and (found := visit(n)):
            return found
    return None


def _package(m: str) -> str:
    return ".".join(m.split(".")[:2]) if layer_of(m) not in ("model", "engine") else layer_of(m)


def test_no_cycle_between_packages() -> None:
    pk: dict[str, set[str]] = {}
    for m, ts in GRAPH.items():
        for t in ts:
            if not t.startswith("<") and _package(t) != _package(m) and t != "specroll":
                pk.setdefault(_package(m), set()).add(_package(t))
    assert _cycle(pk) is None, f"cycle between packages: {_cycle(pk)}"


def test_no_cycle_between_modules() -> None:
    # A package's __init__ re-exports its modules: edges into an __init__ from inside its own
    # package are what a cycle through it would need, so they count too.
    graph = {m: {t for t in ts if not t.startswith("<") and t != "specroll"} for m, ts in GRAPH.items()}
    for m in list(graph):
        graph[m].discard(m)
    # A package __init__ importing its own private modules is how it re-exports them.
    inits = {m for m, p in _modules().items() if p.name == "__init__.py"}
    for m in graph:
        if m not in inits:
            graph[m] = {t for t in graph[m] if not (t in inits and m.startswith(t + "."))}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_the_test_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    # The parser must see imports inside functions, where the old cycles hid.
    probe = tmp_path / "_probe.py"
    probe.write_text("def f():\n    from specroll.simulator import simulate\n    from . import _io\n")
    found = _imports("specroll.traces._probe", probe, set(_modules()))
    assert {"specroll.simulator", "specroll.traces._io"} <= found
    probe.write_text("import traces\n")
    assert "<top-level traces>" in _imports("specroll.traces._probe", probe, set(_modules()))
