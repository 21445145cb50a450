"""smtp_probe's modules import one another without a cycle, and ``server/`` never imports ``app``.

The graph is read from the source with :mod:`ast`, not by importing it:
every ``import`` and ``from ... import`` anywhere in a module counts, at
the top or inside a function, because an import moved into a function only
postpones a cycle. Importing ``a.b.c`` also runs the ``__init__`` of ``a``
and ``a.b``, so those are edges too (except a module's own packages, which
are already being imported when it runs).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

import smtp_probe

Graph = Mapping[str, frozenset[str]]


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package at ``root``: dotted name -> file."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported_names(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """Dotted names ``name`` imports, each resolved to a module where it names one."""
    names: set[str] = set()
    own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                # ``from pkg import mod`` imports the module pkg.mod; ``from mod import f`` imports mod.
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in modules else base)
    return names


def import_graph(root: Path, package: str) -> dict[str, frozenset[str]]:
    """Module -> the package's modules it imports (directly, anywhere in its body)."""
    modules = modules_of(root, package)
    graph = {}
    for name, path in modules.items():
        edges = set()
        for imported in _imported_names(name, path, modules):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            parts = target.split(".") if target else []
            for depth in range(1, len(parts) + 1):
                module = ".".join(parts[:depth])
                is_own_package = name.startswith(module + ".")
                if module in modules and module != name and not is_own_package:
                    edges.add(module)
        graph[name] = frozenset(edges)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or ``None`` if the graph is acyclic."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for target in sorted(graph.get(module, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        path.pop()
        on_path.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle is not None:
                return cycle
    return None


def reachable(graph: Graph, start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


PACKAGE_ROOT = Path(smtp_probe.__file__).parent
GRAPH = import_graph(PACKAGE_ROOT, "smtp_probe")


def test_smtp_probe_modules_import_each_other_without_a_cycle() -> None:
    cycle = find_cycle(GRAPH)

    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_server_modules_never_import_app_not_even_through_another_module() -> None:
    server_modules = [name for name in GRAPH if name.startswith("smtp_probe.server.")]

    assert "smtp_probe.server.http" in server_modules
    for name in server_modules:
        assert "smtp_probe.app" not in reachable(GRAPH, name), name


def test_the_graph_holds_the_imports_the_source_has() -> None:
    """Not vacuous: known imports, top-level and of a package's __init__, are edges."""
    assert "smtp_probe.server.http" in GRAPH["smtp_probe.app"]
    assert "smtp_probe.server" in GRAPH["smtp_probe.app"]
    assert "smtp_probe.probe.result" in GRAPH["smtp_probe.metrics"]
    assert "smtp_probe.app" in GRAPH["smtp_probe.cli"]  # imported inside a function


def write_package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_a_cycle_closed_by_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "def later() -> None:\n    from pkg.a import thing\n",
            "c.py": "import pkg.a\n",
        },
    )

    assert find_cycle(import_graph(package, "pkg")) == ["pkg.a", "pkg.b", "pkg.a"]


@pytest.mark.parametrize(
    ("y_imports", "cycle_modules"),
    [
        pytest.param(
            "from pkg.top import T\n",
            {"pkg.sub", "pkg.sub.x", "pkg.sub.y", "pkg.top"},
            id="y-imports-top-which-imports-sub",
        ),
        pytest.param("import os\n", None, id="y-imports-only-the-stdlib"),
    ],
)
def test_a_cycle_through_relative_imports_and_a_package_init_is_found_only_if_closed(
    tmp_path: Path, y_imports: str, cycle_modules: set[str] | None
) -> None:
    """``sub/__init__`` re-exports ``sub.x``, which imports ``sub.y``; ``top`` imports ``sub``.

    The cycle closes only when ``sub.y`` imports ``top``.
    """
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from .x import X\n",
            "sub/x.py": "from . import y\nX = 1\n",
            "sub/y.py": y_imports,
            "top.py": "from pkg.sub import X as T\n",
        },
    )

    cycle = find_cycle(import_graph(package, "pkg"))

    assert (set(cycle) if cycle is not None else None) == cycle_modules
