"""The shape of ``distil.train``: shallow functions, no import cycles, no imports hidden in functions to dodge one."""

from __future__ import annotations

import ast
from pathlib import Path

import distil.train

TRAIN = Path(distil.train.__file__).parent
MAX_DEPTH = 4
BLOCKS = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.If,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.Match,
)


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), filename=str(path)) for path in sorted(TRAIN.glob("*.py"))}


def _block_depth(statements: list[ast.stmt]) -> int:
    """How many blocks deep ``statements`` go; an ``elif`` is the same level as its ``if``."""
    deepest = 0
    for node in statements:
        if not isinstance(node, BLOCKS):
            continue
        bodies = (
            [getattr(node, "body", [])]
            + [h.body for h in getattr(node, "handlers", [])]
            + [c.body for c in getattr(node, "cases", [])]
        )
        bodies += [getattr(node, "finalbody", [])]
        orelse = getattr(node, "orelse", [])
        inner = max(_block_depth(b) for b in bodies)
        is_elif = isinstance(node, ast.If) and len(orelse) == 1 and isinstance(orelse[0], ast.If)
        deepest = max(deepest, 1 + max(inner, _block_depth(orelse)), _block_depth(orelse) if is_elif else 0)
    return deepest


def block_depth(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Blocks (def, for, while, if, with, try, match) nested inside ``function``'s body."""
    return _block_depth(function.body)


def test_block_depth_counts_what_it_should():
    code = "def f():\n for a in b:\n  if a:\n   with c:\n    pass\n  elif d:\n   pass\n  else:\n   pass\n"
    assert block_depth(ast.parse(code).body[0]) == 3


def test_no_function_in_train_nests_deeper_than_four_blocks():
    deep = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and block_depth(node) > MAX_DEPTH:
                deep.append(f"{name}.{node.name}: {block_depth(node)}")
    assert not deep, deep


def _distil_imports(nodes: list[ast.stmt] | ast.Module) -> set[str]:
    found = set()
    for node in nodes.body if isinstance(nodes, ast.Module) else nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distil"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("distil")}
    return found


def test_no_distil_import_inside_a_function_of_train():
    hidden = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
                hidden += [f"{name}.{node.name}: {m}" for m in _distil_imports(inner)]
    assert not hidden, hidden


def test_the_modules_of_train_import_each_other_without_a_cycle():
    modules = _modules()
    graph = {
        name: {m.rsplit(".", 1)[-1] for m in _distil_imports(tree) if m.startswith("distil.train.")} & set(modules)
        for name, tree in modules.items()
    }
    visiting, done = set(), set()

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        assert name not in visiting, " -> ".join(path + [name])
        visiting.add(name)
        for other in sorted(graph[name]):
            visit(other, path + [name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])
