"""A griffe extension for the API pages: a ttc package's public names, read from the table it
passes to ``ttc._exports.export`` (which derives ``__all__`` when the package runs), so the
pages document what ``__all__`` holds without the table being written twice."""

from __future__ import annotations

import ast
from typing import Any

import griffe


class LazyExports(griffe.Extension):
    """Set ``exports`` of a module that calls ``export(globals(), {module: (names...)})``."""

    def on_module_members(self, *, node: ast.AST | griffe.ObjectNode, mod: griffe.Module, **kwargs: Any) -> None:
        if not isinstance(node, ast.Module):
            return
        for stmt in node.body:
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "export"
                and len(call.args) == 2
            ):
                table: dict[str, tuple[str, ...]] = ast.literal_eval(call.args[1])
                mod.exports = sorted(name for names in table.values() for name in names)
