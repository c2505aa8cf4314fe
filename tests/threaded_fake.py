"""A FakeProvider served from its own event loop in a thread, for tests whose code under test
runs its own loop (the CLI, ``ttc serve``) or none."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ttc.testing import FakeProvider


@contextmanager
def threaded_fake(flavor: str = "openai", **options: Any) -> Iterator[FakeProvider]:
    """A started ``FakeProvider(flavor, **options)``; stopped, with its loop, on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    provider = FakeProvider(flavor, **options)  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(provider.start(), loop).result(60)
    try:
        yield provider
    finally:
        asyncio.run_coroutine_threadsafe(provider.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
