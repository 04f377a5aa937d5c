"""The package's shape: no module imports a module that imports it back.

A cycle works only while every module in it happens to be imported in the right order, and an import
moved into a function to dodge one hides the knot instead of untying it. So the graph counts every
import of a ``distil`` module wherever it sits in the file (module level or inside a function; only
``if TYPE_CHECKING:`` blocks, which never run, are left out), relative imports resolved. It is read
from the source with ``ast``, so the test imports neither torch nor transformers.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "distil"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST):
    """Every import statement in ``node``, at any depth, except in ``if TYPE_CHECKING:`` blocks."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    children = node.orelse if isinstance(node, ast.If) and _type_checking(node) else ast.iter_child_nodes(node)
    for child in children:
        yield from _imports(child)


def imported_modules(path: Path, known: set[str], src: Path = SRC) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from distil.evaluate import plots` imports the module distil.evaluate.plots
            targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = {module_name(p, src): p for p in (src / PACKAGE).rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known, src) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that ends where it starts) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_a_cycle(graph, set(c), c[0]) for c in components]


def _a_cycle(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside one component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def _described(found: list[list[str]]) -> str:
    return "\n".join(" -> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_cycle_and_prints_it():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_found_wherever_they_sit(tmp_path):
    package = tmp_path / "distil" / "sub"
    package.mkdir(parents=True)
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nfrom ..c import thing\n"
        "def late():\n    import distil.d\n"
        "if TYPE_CHECKING:\n    from distil import e\n"
    )
    known = {"distil.sub.b", "distil.c", "distil.d", "distil.e", "distil.sub"}
    assert imported_modules(package / "a.py", known, src=tmp_path) == {
        "distil.sub",
        "distil.sub.b",
        "distil.c",
        "distil.d",
    }


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + _described(found)
