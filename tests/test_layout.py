"""The package's import rules: the two paths stay apart, and no import circle remains."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
from servers import ROOT

PACKAGE = ROOT / "receiver"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: pathlib.Path) -> set[str]:
    """The package modules that *path* imports, at any depth (lazy imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("receiver"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("receiver"))
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def side(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if side(m) == "core"))
def test_core_imports_only_core(module):
    outside = {m for m in GRAPH[module] if side(m) != "core" and m != "receiver"}
    assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if side(m) in ("handlers", "web", "jobs")))
def test_receiving_path_never_imports_the_registry(module):
    registry = {m for m in GRAPH[module] if side(m) in ("registry", "cli")}
    assert not registry, f"{module} imports {sorted(registry)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if side(m) == "registry"))
def test_registry_imports_only_core(module):
    outside = {m for m in GRAPH[module] if side(m) not in ("core", "registry")}
    assert not outside, f"{module} imports {sorted(outside)}"


def test_no_import_circle():
    """Top-level imports only (a function's lazy import runs after both modules loaded)."""

    def top_level(path: pathlib.Path) -> set[str]:
        tree = ast.parse(path.read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.If) and "TYPE_CHECKING"
                                             in ast.unparse(n.test))]
        module = ast.Module(body=body, type_ignores=[])
        copy = path.with_name(path.name)  # same package context
        return {m for m in imports_of(module, copy)}

    def imports_of(tree: ast.Module, path: pathlib.Path) -> set[str]:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("receiver"):
                found.add(node.module or "")
        return {m for m in found if m in GRAPH}

    graph = {module_name(p): top_level(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}
    # A package's __init__ importing its own submodules is not a circle.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".") or d == "receiver"}
        graph[name].discard("receiver")

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node):], node]
            pytest.fail("import circle: " + " -> ".join(cycle))
        for dep in graph.get(node, ()):
            visit(dep, [*path, node])

    for start in graph:
        visit(start, [])


def test_import_receiver_loads_no_flask():
    """`import receiver` and the handler API load neither Flask nor the sender."""
    code = ("import sys, receiver; receiver.on; receiver.PushImage; receiver.ConfigError; "
            "print(sorted(m for m in ('flask', 'werkzeug', 'receiver.registry.sender', "
            "'marshmallow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
