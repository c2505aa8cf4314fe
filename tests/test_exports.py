"""One convention for the public surface (``ttc/_exports.py``): every package exports its
names from one table, each public name has one home, and importing a package imports nothing
until a name is used."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "ttc",
    "ttc.adapters",
    "ttc.eval",
    "ttc.labels",
    "ttc.runtime",
    "ttc.scoring",
    "ttc.strategies",
    "ttc.testing",
]
HEAVY = ["aiohttp", "pydantic", "anyio", "litellm", "llama_cpp", "torch", "transformers", "vllm"]


def _table_and_typing_block(package: str) -> tuple[dict[str, str], dict[str, str]]:
    """``name -> module`` from the package's ``export`` table and from its
    ``if TYPE_CHECKING:`` re-exports."""
    path = ROOT / Path(*package.split(".")) / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    table: dict[str, str] = {}
    typing_block: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            func = stmt.value.func
            if isinstance(func, ast.Name) and func.id == "export":
                literal = ast.literal_eval(stmt.value.args[1])
                table = {name: module for module, names in literal.items() for name in names}
        if isinstance(stmt, ast.If) and ast.unparse(stmt.test) == "TYPE_CHECKING":
            for node in stmt.body:
                assert isinstance(node, ast.ImportFrom) and node.module is not None
                for alias in node.names:
                    assert alias.asname == alias.name, f"{package}: import {alias.name} as itself"
                    typing_block[alias.name] = node.module
    return table, typing_block


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_exports_from_one_table_that_type_checkers_see_too(package: str) -> None:
    table, typing_block = _table_and_typing_block(package)
    assert table, f"{package} exports through ttc._exports.export"
    assert typing_block == table
    module = importlib.import_module(package)
    assert module.__all__ == sorted(table)
    for name, home in table.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name)
    assert set(table) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        module.Nope  # noqa: B018


def test_each_public_name_has_one_home() -> None:
    """A name is exported by one area's package; ``ttc`` re-exports everyday names from
    their homes (not from a module of their own)."""
    homes: dict[str, str] = {}
    for package in PACKAGES[1:]:
        for name in importlib.import_module(package).__all__:
            assert name not in homes, f"{name} exported by {homes.get(name)} and {package}"
            homes[name] = package
    top, _ = _table_and_typing_block("ttc")
    for name, home in top.items():
        if home in PACKAGES:
            assert homes.get(name) == home, f"ttc.{name} is re-exported from {home}"
        else:
            assert home in ("ttc.types", "ttc.errors")


def test_internals_are_not_public_names_but_stay_importable() -> None:
    import ttc
    import ttc.runtime

    for name in ("Charge", "RawResponse", "parse_rate_limit_headers"):
        assert name not in ttc.runtime.__all__
    from ttc.runtime.budget import Charge  # noqa: F401
    from ttc.runtime.model import RawResponse  # noqa: F401
    from ttc.runtime.ratelimit import parse_rate_limit_headers  # noqa: F401
    from ttc.types import BudgetStop, Routing

    assert ttc.BudgetStop is BudgetStop and ttc.Routing is Routing


def test_import_ttc_adapters_loads_no_adapter() -> None:
    """``import ttc.adapters`` is as cheap as ``import ttc``: no adapter module, no HTTP
    client, no pydantic, no engine (the adapter loads when its name is first used)."""
    code = (
        "import json, sys\n"
        "import ttc.adapters\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'ttc' or m.startswith("
        f"'ttc.') or m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["ttc", "ttc._exports", "ttc.adapters"]
