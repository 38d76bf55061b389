"""The import graph of cxrkit flows one way: no circles, and the library never imports the CLI.

Every module under ``cxrkit/`` is parsed with ``ast`` (nothing is imported). An
import anywhere in a module counts, at the top or inside a function: a lazy
import is still a dependency, and a circle hidden in a function body is the
kind a re-export shim leaves behind. Imports under ``if TYPE_CHECKING:`` do not
count (they never run).

The package root ``cxrkit/__init__.py`` is left out of the circle check:
Python imports it before any submodule, so every module depends on it anyway.
It is held to a stricter rule instead: no cxrkit import at module level (its
``cxrkit.load`` facade imports lazily).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cxrkit"

LIBRARY_LAYERS = (
    "io",
    "text",
    "vision",
    "models",
    "objectives",
    "train",
    "evaluate",
    "export",
    "artifacts",
    "config",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    return skipped


def imported_names(path: Path, package: str, top_level_only: bool = False) -> list[str]:
    """Absolute dotted names imported by the module at ``path`` (``from a import b`` -> ``a.b``).

    ``package`` is the module's package, for relative imports.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = []
    for node in nodes:
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def _resolve(name: str) -> str | None:
    """The cxrkit module an imported name lives in (``cxrkit.io.images.read_image`` ->
    ``cxrkit.io.images``), or None outside cxrkit."""
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """cxrkit module -> the cxrkit modules it imports (the package root left out)."""
    graph = {}
    for module, path in _modules().items():
        if module == "cxrkit":
            continue
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = {_resolve(n) for n in imported_names(path, package) if n.startswith("cxrkit")}
        graph[module] = frozenset(t for t in targets if t not in (None, module, "cxrkit"))
    return graph


def cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# ---------------------------------------------------------------- the checker itself


def test_cycle_finder_finds_a_three_module_circle_and_ignores_a_chain():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset()}) == []


def test_imports_inside_functions_count_and_type_checking_imports_do_not(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from cxrkit.stages import ingest\n"
        "def f():\n"
        "    from cxrkit.io.images import read_image\n"
    )
    names = imported_names(source, "cxrkit.io")
    assert "cxrkit.io.sibling" in names and "cxrkit.io.images.read_image" in names
    assert not any(n.startswith("cxrkit.stages") for n in names)
    assert _resolve("cxrkit.io.images.read_image") == "cxrkit.io.images"


# ---------------------------------------------------------------- the package


def test_no_import_cycles_among_cxrkit_modules():
    remaining = cycles(import_graph())
    assert remaining == [], f"import circles: {remaining}"


def test_package_root_imports_cxrkit_only_lazily():
    root = PACKAGE / "__init__.py"
    eager = [
        n for n in imported_names(root, "cxrkit", top_level_only=True) if n.startswith("cxrkit")
    ]
    assert eager == []


@pytest.mark.parametrize("layer", LIBRARY_LAYERS)
def test_library_layers_never_import_the_cli_or_typer(layer):
    offenders = []
    for module, path in _modules().items():
        if module != f"cxrkit.{layer}" and not module.startswith(f"cxrkit.{layer}."):
            continue
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for name in imported_names(path, package):
            if name == "typer" or name.startswith(("typer.", "cxrkit.cli")):
                offenders.append(f"{module} imports {name}")
    assert offenders == []


def test_every_library_layer_exists():
    """A renamed layer must be renamed here too, or its check would pass on nothing."""
    modules = _modules()
    assert [layer for layer in LIBRARY_LAYERS if f"cxrkit.{layer}" not in modules] == []
