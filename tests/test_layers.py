"""The house plan, checked on the import graph of ``src/trcgl`` (imports inside functions
included): layers point down only, and no module imports itself through others.

    cli, api  →  stages  →  run_dir  →  libraries  →  foundation
                                   (data, labels, models,       (config, errors, files,
                                    diffusion, training,          progress, registry, resources)
                                    evaluation)
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "trcgl"
LIBRARIES = ("data", "labels", "models", "diffusion", "training", "evaluation")
FOUNDATION = ("config", "errors", "files", "progress", "registry", "resources")


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in ("", *FOUNDATION):
        return 0
    if top in LIBRARIES:
        return 1
    if top == "run_dir":
        return 2
    if top == "stages":
        return 3
    if top in ("cli", "api"):  # the command line and the Python entry point
        return 4
    raise AssertionError(f"{module}: no layer for trcgl.{top}; add it to tests/test_layers.py")


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("trcgl")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trcgl"):
                for alias in node.names:  # `from trcgl.models import baselines`: the submodule
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in modules else node.module)
        graph[name] = {d for d in deps if d in modules} - {name}
    return graph


#: The one edge allowed upward: the package root's ``trcgl.load`` imports the Python entry
#: point when it is first called (``import trcgl`` itself imports nothing of it).
FACADE = {("trcgl", "trcgl.api")}


def test_layers_point_down_only():
    graph = import_graph()
    assert len(graph) > 60
    upward = sorted(
        f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
        for m, deps in graph.items()
        for d in deps
        if layer(d) > layer(m) and (m, d) not in FACADE
    )
    assert not upward, "\n".join(upward)


def test_libraries_never_see_a_run_directory():
    graph = import_graph()
    offenders = sorted(
        f"{m} imports {d}"
        for m, deps in graph.items()
        if layer(m) <= 1
        for d in deps
        if d.startswith(("trcgl.run_dir", "trcgl.stages"))
    )
    assert not offenders, "\n".join(offenders)


def test_no_import_circle():
    graph = import_graph()

    def parent_packages(module: str) -> set[str]:
        parts = module.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    # A package's __init__ importing its own submodules is how registration works, not a
    # circle; every other cycle is.
    edges = {m: {d for d in deps if d not in parent_packages(m)} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" → ".join(c) for c in cycles)


def test_the_checker_sees_the_stages_imports():
    assert layer("trcgl.data.readers") < layer("trcgl.run_dir") < layer("trcgl.stages.train")
    graph = import_graph()
    assert "trcgl.run_dir" in graph["trcgl.stages.train"]
    assert "trcgl.training.trainer" in graph["trcgl.stages.train"]


def test_registries_load_libraries_only():
    """A registry imports the module that fills it on first lookup (the one import not written
    as an import statement): it must be a library, never a stage or the CLI."""
    tree = ast.parse((PACKAGE / "registry.py").read_text(encoding="utf-8"))
    loaded = [
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "Registry"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Constant)
    ]
    assert len(loaded) == 4  # data formats, architectures, losses, generator families
    modules = import_graph()
    assert all(m in modules and layer(m) == 1 for m in loaded), loaded
