"""A ``ttc serve`` in a background thread, for tests, examples and benchmarks that drive it
with synchronous clients (the official ``openai`` client, ``requests``)::

    with ServerThread(config, store_path="keys.sqlite") as server:
        client = openai.OpenAI(base_url=server.url, api_key=key)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ttc.config import TTCConfig
from ttc.server.keys import KeyStore, SQLiteKeyStore

__all__ = ["ServerThread"]


class ServerThread:
    """Serve ``config`` on a free loopback port in a thread with its own event loop.

    ``store_path`` is the SQLite ledger (``None`` with ``server.auth`` off); ``store`` a ready
    ledger instead. ``url`` is the API root once started; ``stop()`` shuts down gracefully.
    """

    def __init__(
        self,
        config: TTCConfig,
        *,
        store_path: str | Path | None = None,
        store: KeyStore | None = None,
        models: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.store_path = store_path
        self.key = ""
        self.store = store
        self.models = models
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="ttc-serve", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from aiohttp import web

        from ttc.server.app import create_app

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        store = self.store
        if store is None and self.store_path is not None:
            store = SQLiteKeyStore(self.store_path)
        app = create_app(self.config, store=store, models=self.models)
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.config.server.shutdown_timeout
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> ServerThread:
        """Start serving; returns once ``url`` answers (or raises what stopped it)."""
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise RuntimeError("ttc serve did not start within 30 s")
        return self

    def stop(self) -> None:
        """Shut down gracefully: requests in flight get ``server.shutdown_timeout``."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
