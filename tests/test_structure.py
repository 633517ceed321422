"""The shape of the code, checked from its imports (nothing is run): methods use only the toolkit the
harness declares for them, no two modules import each other (directly or round a longer circle), and
no source file outgrows a reader's patience."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "methods")
# What a method may import from the harness: the contract, the training toolkit, settings, data types and
# errors. Everything else (running, reporting, storing records, configs) is the harness's business.
METHOD_TOOLKIT = ("bench.method", "bench.train", "bench.settings", "bench.data.types", "bench.errors", "bench.atomic")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, at the top or inside a function (`from a import b` counts as
    a.b when that is a module, else as a)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in PACKAGES}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = sources()
    return {name: imported(path, set(modules)) & set(modules) - {name} for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
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


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    """Its twin: a made-up graph with a three-module circle and a tail."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_methods_import_only_the_toolkit():
    outside = {f"{name} imports {target}"
               for name, targets in import_graph().items() if name.startswith("methods")
               for target in targets
               if target.startswith("bench") and not any(target == allowed or target.startswith(allowed + ".")
                                                         for allowed in METHOD_TOOLKIT)}
    assert outside == set()


def test_harness_never_imports_a_method():
    """`methods/` -> `bench/` is the only direction: the harness reaches methods through the registry only."""
    assert {f"{name} imports {target}" for name, targets in import_graph().items() if name.startswith("bench")
            for target in targets if target.startswith("methods")} == set()


def test_no_source_file_over_the_limit():
    long = {str(path.relative_to(REPO)): count for path in sources().values()
            if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
