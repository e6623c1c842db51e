"""The project's import graph, read from the sources: no module imports itself through others
(imports under ``TYPE_CHECKING`` and inside functions count too), and the geometry model's
building blocks (``geometry.layers``) import nothing from the layers above them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geometry", "vla", "policies", "envs", "benchmarks")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported_names(tree: ast.AST, package: str) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """``{module: the project modules it imports}``; ``from a.b import c`` counts as importing
    ``a.b.c`` when that is a module, else ``a.b``."""
    modules = module_files(root, packages)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for imported in _imported_names(ast.parse(path.read_text()), package):
            parts = imported.split(".")
            found = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), None)
            if found is not None and found != name:
                targets.add(found)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_a_circle_through_a_type_checking_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "cache.py").write_text("from pkg.mask import Mask\n")
    (package / "mask.py").write_text("from .low import attention\n")
    (package / "low" / "attention.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.low.cache import Cache\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.mask"] == {"pkg.low.attention"}
    assert cycles(graph) == [["pkg.low.attention", "pkg.low.cache", "pkg.mask"]]
    (package / "low" / "cache.py").write_text("import torch\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == []


def test_the_project_has_no_import_circle():
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 100 and "geometry.layers.kv_cache" in graph["geometry.layers.attention"]
    assert cycles(graph) == []


def test_geometry_layers_import_nothing_above_them():
    graph = import_graph(ROOT, PACKAGES)
    upward = {name: sorted(t for t in targets if not t.startswith("geometry.layers"))
              for name, targets in graph.items() if name.startswith("geometry.layers")}
    assert {name: targets for name, targets in upward.items() if targets} == {}
    assert "geometry.streaming" not in graph["geometry.model"]
