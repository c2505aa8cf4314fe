"""Run a coroutine from synchronous code, also where an event loop is already running.

In a notebook (or any code already inside an event loop) ``asyncio.run`` refuses to start;
we then run the coroutine on a fresh loop in a worker thread and wait for it. Models keep
their sessions per event loop, so the same model works from both places.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Call ``fn()`` and run the awaitable it returns to completion."""

    async def main() -> T:
        try:
            return await fn()
        finally:
            # This loop ends with the call: close the sessions models opened on it.
            from ttc.runtime.model import close_models_on_this_loop

            await close_models_on_this_loop()

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    from ttc.runtime.budget import loop_blocked

    ctx = contextvars.copy_context()
    # The caller's loop is blocked until the worker is done: budgets must not wait for what
    # its tasks hold (see ``loop_blocked``).
    with (
        loop_blocked(loop),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttc-run-sync") as pool,
    ):
        return pool.submit(ctx.run, asyncio.run, main()).result()
