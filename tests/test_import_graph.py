"""The ``ttc`` package's import graph has no cycles: modules layer (types and errors, runtime,
adapters and scoring, strategies, eval, cli), each importing only what lies below it.

Built statically from the AST of every module: its module-level imports (those inside
functions load lazily and are not counted; nor are those under ``if TYPE_CHECKING:``, which
never run). The command line and the evaluation are checked with their function-level imports
too: they once imported each other (``ttc.cli`` <-> ``ttc.eval.commands``, ``ttc.eval.runner``
<-> ``ttc.eval.ray_runner``) and must not again."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import ttc

ROOT = Path(ttc.__file__).parent


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = ["ttc", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported: top level, and inside top-level
    ``if``/``try`` blocks (but not ``if TYPE_CHECKING:``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block)
            for handler in node.handlers:
                yield from _module_level(handler.body)


def _graph(*, lazy_too: bool = False) -> dict[str, set[str]]:
    """Each ttc module and the ttc modules it imports (the deepest module an import names)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        nodes = (
            [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
            if lazy_too
            else list(_module_level(tree.body))
        )
        edges: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in import order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found is not None:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found is not None:
                return found
    return None


def test_the_package_import_graph_has_no_cycles() -> None:
    graph = _graph()
    assert "ttc.eval.solver" in graph["ttc.eval.executor"]  # the graph sees real imports
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cli_and_the_evaluation_do_not_import_each_other_even_lazily() -> None:
    full = _graph(lazy_too=True)
    ours = {
        name: {t for t in edges if t.startswith(("ttc.cli", "ttc.eval"))}
        for name, edges in full.items()
        if name.startswith(("ttc.cli", "ttc.eval"))
    }
    cycle = _cycle(ours)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
    # The library does not reach up into the command line (``python -m ttc.eval`` runs it).
    up = [
        m
        for m, edges in ours.items()
        if m.startswith("ttc.eval") and m != "ttc.eval.__main__"
        if any(t.startswith("ttc.cli") for t in edges)
    ]
    assert up == []


def test_the_checker_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
