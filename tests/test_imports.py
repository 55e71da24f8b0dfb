"""No import circle among fastrank's modules: the graph of the imports each module makes
when it loads (statements in its body, in a module-level try, with or if, not those
inside functions or under ``if TYPE_CHECKING:``) has no cycle. In a circle, what a
module finds of another depends on which of the two was imported first."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, str]:
    """Every module of the fastrank package -> its source file: fastrank's folder and the
    subpackages installed from folders of their own (pyproject's package-dir:
    fastrank.kernels from kernels/, ...). A subpackage is walked into only when it imports
    (one that needs CuPy where importing it fails is left out; fastrank.gpu does not)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        folders = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    found = {}

    def skip(name):
        """A package that fails to import is not walked into."""

    for package, folder in folders.items():
        found[package] = str(ROOT / folder / "__init__.py")
        for info in pkgutil.walk_packages([str(ROOT / folder)], f"{package}.", onerror=skip):
            found[info.name] = importlib.util.find_spec(info.name).origin
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _load_time_imports(body: list[ast.stmt]):
    """The import statements a module body runs when it loads."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse,
                          node.finalbody):
                yield from _load_time_imports(block)
        elif isinstance(node, ast.With):
            yield from _load_time_imports(node.body)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            yield from _load_time_imports(node.body)
            yield from _load_time_imports(node.orelse)


def _imported(module: str, is_package: bool, node, known: set[str]) -> set[str]:
    """The fastrank modules an import statement of ``module`` names: ``from a import b``
    names a.b when that is a module, else a."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            out.add(sub)
        elif base in known:
            out.add(base)
    return out


def import_graph() -> dict[str, set[str]]:
    """fastrank module -> the fastrank modules it imports when it loads."""
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        is_package = path.endswith("__init__.py")
        graph[name] = {m for node in _load_time_imports(tree.body)
                       for m in _imported(name, is_package, node, known) if m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walk_sees_every_layer_of_the_package():
    graph = import_graph()
    assert {"fastrank", "fastrank.spec", "fastrank.runner", "fastrank.store.writer",
            "fastrank.cli.sweep", "fastrank.backends.cpu", "fastrank.gpu.backend",
            "fastrank.kernels.cpu.depth", "fastrank.bench.suite"} <= set(graph)
    assert "fastrank.spec" in graph["fastrank.options"]
    assert "fastrank.cli.sweep" in graph["fastrank.cli"]  # imported inside a with block
    assert "fastrank.version" in graph["fastrank"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_reports_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_and_submodule_imports_are_resolved():
    known = {"fastrank", "fastrank.store", "fastrank.store.schema", "fastrank.spec"}
    tree = ast.parse("from . import schema\nfrom ..spec import Network\n"
                     "from fastrank import spec\nimport fastrank.store.schema\n")
    found = set()
    for node in tree.body:
        found |= _imported("fastrank.store.writer", False, node, known)
    assert found == {"fastrank.store.schema", "fastrank.spec"}
