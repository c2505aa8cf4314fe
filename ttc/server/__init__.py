"""``ttc serve``: an OpenAI-compatible server with ttc's strategies behind it, API keys and
budgets per key (the ``server`` extra: ``pip install 'ttc-sdk[server]'``).

``create_app(config, store=...)`` is the aiohttp application; ``serve(config)`` runs it until
SIGINT/SIGTERM; ``open_key_store(dsn)`` opens the keys' ledger (SQLite or PostgreSQL).
Names load lazily, so that the ``ttc`` command's start does not import the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ttc.server.app import create_app
    from ttc.server.keys import (
        KeyBudgetExceeded,
        KeyInfo,
        KeyStore,
        SQLiteKeyStore,
        open_key_store,
    )
    from ttc.server.runner import serve

__all__ = [
    "KeyBudgetExceeded",
    "KeyInfo",
    "KeyStore",
    "SQLiteKeyStore",
    "create_app",
    "open_key_store",
    "serve",
]

_WHERE = {
    "create_app": "ttc.server.app",
    "serve": "ttc.server.runner",
    "KeyBudgetExceeded": "ttc.server.keys",
    "KeyInfo": "ttc.server.keys",
    "KeyStore": "ttc.server.keys",
    "SQLiteKeyStore": "ttc.server.keys",
    "open_key_store": "ttc.server.keys",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ttc.server' has no attribute {name!r}")
