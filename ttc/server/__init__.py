"""``ttc serve``: an OpenAI-compatible server with ttc's strategies behind it, API keys and
budgets per key (the ``server`` extra: ``pip install 'ttc-sdk[server]'``).

``create_app(config, store=...)`` is the aiohttp application; ``serve(config)`` runs it until
SIGINT/SIGTERM; ``open_key_store(dsn)`` opens the keys' ledger (SQLite or PostgreSQL).
"""

from ttc.server.app import create_app
from ttc.server.keys import KeyBudgetExceeded, KeyInfo, KeyStore, SQLiteKeyStore, open_key_store
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
