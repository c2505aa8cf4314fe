"""How a ttc package exports its public names: from one table, loaded on first use.

A package's ``__init__`` writes its names once, by module, and calls ``export``::

    export(globals(), {
        "ttc.adapters.openai": ("OpenAI",),
        "ttc.adapters.groq": ("Groq",),
    })

which derives ``__all__``, a module ``__getattr__`` that imports a name's module on first use
(so importing the package imports nothing else), and ``__dir__``. Type checkers and IDEs do
not run this: the package repeats the names in an ``if TYPE_CHECKING:`` block as
``from module import Name as Name`` (explicit re-exports), and ``tests/test_exports.py``
checks that the block and the table agree.

Each public name has one home: the package of its area (``ttc.strategies``, ``ttc.runtime``,
``ttc.adapters``, ``ttc.scoring``, ``ttc.eval``, ``ttc.testing``) or a module (``ttc.types``,
``ttc.errors``). The top-level ``ttc`` re-exports the everyday ones from their homes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def export(namespace: dict[str, Any], table: Mapping[str, tuple[str, ...]]) -> None:
    """Give the package whose globals are ``namespace`` the names of ``table`` (module ->
    names defined or exported there): ``__all__``, ``__getattr__`` and ``__dir__``."""
    package = namespace["__name__"]
    homes: dict[str, str] = {}
    for module, names in table.items():
        for name in names:
            if name in homes:
                raise RuntimeError(f"{package}: {name!r} is exported twice")
            homes[name] = module
    namespace["__all__"] = sorted(homes)
    namespace["__getattr__"] = _loader(package, namespace, homes)
    namespace["__dir__"] = lambda: sorted(set(namespace) | set(homes))


def _loader(package: str, namespace: dict[str, Any], homes: dict[str, str]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        module = homes.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups find it without this call
        return value

    return __getattr__
