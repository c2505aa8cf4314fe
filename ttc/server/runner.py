"""Running the server: JSON logs, the listening socket, signals and a graceful shutdown.

On SIGTERM or SIGINT the server stops accepting connections, answers ``/ready`` with 503, lets
requests in flight finish for up to ``server.shutdown_timeout`` seconds, then cancels the rest;
a cancelled request still settles its key's ledger to what its calls cost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ttc.config import TTCConfig
from ttc.server.app import create_app
from ttc.server.keys import KeyStore, open_key_store

__all__ = ["JSONFormatter", "serve", "serve_async"]


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        rid = getattr(record, "request_id", None)
        if rid is not None:
            data["request_id"] = rid
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def _setup_logging(json_logs: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JSONFormatter() if json_logs else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    logger = logging.getLogger("ttc.server")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


async def serve_async(
    config: TTCConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    store: KeyStore | None = None,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set). ``ready`` gets the API root
    (``http://host:port/v1``) once the socket listens."""
    server = config.server
    if store is None and server.auth:
        store = open_key_store(server.database())
    app = create_app(config, store=store)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=server.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(
        runner,
        host or server.host,
        server.port if port is None else port,
        shutdown_timeout=server.shutdown_timeout,
        backlog=4096,
    )
    await site.start()
    bound = runner.addresses[0]
    url = f"http://{bound[0]}:{bound[1]}/v1"
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("ttc.server").info(
        "listening", extra={"fields": {"url": url, "auth": server.auth}}
    )
    if ready is not None:
        ready(url)
    try:
        await stop.wait()
    finally:
        started = time.perf_counter()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        logging.getLogger("ttc.server").info(
            "stopped", extra={"fields": {"shutdown_s": round(time.perf_counter() - started, 3)}}
        )


def serve(
    config: TTCConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """``serve_async`` in a new event loop, with JSON logs on stderr (``server.log_json``)."""
    _setup_logging(config.server.log_json)
    asyncio.run(serve_async(config, host=host, port=port, ready=ready))
