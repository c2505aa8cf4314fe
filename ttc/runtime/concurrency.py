"""A first-come, first-served concurrency limit for one provider's requests.

``asyncio.Semaphore`` (3.11) scans its whole waiter queue on every release, which turns
thousands of queued requests into quadratic CPU time; anyio's limiter costs more per call.
This one hands a released slot straight to the oldest waiter: O(1) per acquire and release.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class ConcurrencyLimit:
    """At most ``limit`` holders at once; others wait in arrival order. One event loop."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a free slot without waiting (no coroutine: the common case on the hot path);
        ``False`` means ``acquire`` must wait its turn."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        turn = self.queue()
        try:
            await turn
        except asyncio.CancelledError:
            self.leave(turn)
            raise

    def queue(self) -> asyncio.Future[None]:
        """Join the queue (after ``try_acquire`` said no): the slot is the caller's once the
        future is done. A caller that awaits it itself, rather than through ``acquire``, keeps
        one coroutine fewer alive per waiting request; it must call ``leave`` if cancelled."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    def leave(self, turn: asyncio.Future[None]) -> None:
        """A wait on ``queue()``'s future was cancelled: give up the place in the queue, or
        pass on the slot if it was handed over as the wait was cancelled."""
        if turn.done() and not turn.cancelled():
            self.release()
        elif turn in self._waiters:  # a release may already have dropped it
            self._waiters.remove(turn)

    def release(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot goes straight to the oldest waiter
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
