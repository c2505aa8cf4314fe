"""Loading a local engine (a model held in this process) once, under a lock, off the event loop.

The in-process adapters (transformers, the transformers PRMs, llama.cpp, vLLM) all load their
engine lazily on the first request, or when asked (``load()`` for synchronous code, ``await
start()`` off the caller's loop), must load it once when several first requests arrive
together, and drop it on ``close()`` only once the request in progress lets go of it. An
``EngineLoader`` does that for each of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio.to_thread

__all__ = ["EngineLoader"]

T = TypeVar("T")

logger = logging.getLogger("ttc.runtime.loader")


class EngineLoader(Generic[T]):
    """An engine loaded on first use, and released on ``close``.

    Args:
        name: what the log line says was loaded.
        release: frees what was loaded (default: drop it for the garbage collector).

    ``get(load)`` and ``aget(load)`` take the function that builds the engine (blocking: it
    runs in a worker thread when called from async code) at each call, so the loader holds no
    reference to its owner: a model dropped without ``close()`` is freed at once, and its
    engine with it.

    ``run_lock`` is held by whoever uses the engine (one request at a time); ``close`` takes it
    too, so it waits for the request in progress. ``get`` may be called with ``run_lock`` held
    (both lock in that order). ``seconds`` is how long the last load took.
    """

    def __init__(self, *, name: str, release: Callable[[T], None] | None = None) -> None:
        self._release = release
        self.name = name
        self.load_lock = threading.Lock()
        self.run_lock = threading.Lock()
        self.value: T | None = None
        self.seconds: float | None = None

    def get(self, load: Callable[[], T]) -> T:
        """The engine, loaded first if need be (blocks; concurrent callers load it once)."""
        value = self.value
        if value is not None:
            return value
        with self.load_lock:
            if self.value is None:
                start = time.perf_counter()
                self.value = load()
                self.seconds = time.perf_counter() - start
                logger.info("loaded %s in %.1f s", self.name, self.seconds)
            return self.value

    async def aget(self, load: Callable[[], T]) -> T:
        """``get`` from async code: a load runs in a worker thread, so the loop never blocks."""
        value = self.value
        if value is not None:
            return value
        return await anyio.to_thread.run_sync(self.get, load)

    def close(self) -> None:
        """Drop the engine (a later ``get`` loads it again), after a load or a request in
        progress finishes."""
        with self.run_lock, self.load_lock:
            value, self.value = self.value, None
        if value is not None and self._release is not None:
            self._release(value)
