"""Hard budgets: reserve the worst case before a request, settle to the real usage after.

A ``Budget`` is the user's limits; a ``Ledger`` is their live state (spent, reserved, clock).
Reservation checks every ledger that applies (the provider's, the run's, an outer run's) and
then reserves in all of them under one lock, with no ``await`` in between, so no two requests
(on one event loop, or on loops in several threads) can both pass a check that only one of them
fits: the spend never passes a limit, at any concurrency.

A model and its ledgers may be shared across threads and event loops: a request that waits for
other requests' reservations to settle waits on a future of its own loop, which a settlement on
any loop wakes (``call_soon_threadsafe``). It never waits for reservations held by a loop that
cannot progress: ``run_sync`` called inside a running loop (a notebook) blocks that loop until
it returns, so the reservations of that loop's tasks count as spent for it (a budget stop)
rather than as something to wait for, which would hang.

A *remote* ledger (``Ledger.remote``) is one whose limits another process keeps, e.g. the one
ledger actor of a Ray evaluation that all workers share: after the local checks pass,
``reserve_when_affordable`` awaits its ``acquire``, and settling calls its ``release``. Plain
ledgers never take that path, so the local hot path has no extra ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar, NamedTuple

from pydantic import ConfigDict, Field

from ttc.errors import BudgetExceeded
from ttc.validation import Float, Int, Settings


class Budget(Settings):
    """Hard limits. ``None`` means no limit.

    - ``tokens``: prompt plus completion tokens;
    - ``completion_tokens``: generated tokens only (prompts free): what "accuracy against
      generated tokens" compares, and a step-wise search re-reading its prefixes is not
      charged for the re-reading;
    - ``usd``: cost from the price table (a model with no known price cannot be charged against
      a USD limit, and is refused with a clear error);
    - ``requests``: requests sent, retries included;
    - ``seconds``: wall-clock seconds from the first request charged to this budget (for a
      run's budget: from the start of the run). Requests still in flight at the deadline are
      cancelled.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: Int | None = Field(None, ge=0)
    usd: Float | None = Field(None, ge=0)
    requests: Int | None = Field(None, ge=0)
    seconds: Float | None = Field(None, gt=0)
    completion_tokens: Int | None = Field(None, ge=0)


class Charge(NamedTuple):
    """An amount to reserve or settle. A named tuple: two are made per request."""

    tokens: int = 0
    usd: float = 0.0
    requests: int = 0
    completion_tokens: int = 0


_LIMITS = ("tokens", "usd", "requests", "completion_tokens")

# Guards every ledger's counters and waiters: check-and-reserve and settle are atomic across
# threads. Held only for synchronous bookkeeping (never across an ``await``), so uncontended on
# one loop, where it costs a fraction of a microsecond a request.
_lock = threading.Lock()
#: The same lock, for other shared counters updated with no ``await`` (a model's usage).
ledger_lock = _lock

# Event loops blocked by a ``run_sync`` running inside them (see ``loop_blocked``), with how
# many such calls block each.
_blocked: dict[asyncio.AbstractEventLoop, int] = {}


@contextmanager
def loop_blocked(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Mark ``loop`` as unable to progress while the block runs (``run_sync`` waiting, inside
    that loop, for a worker thread): requests elsewhere must not wait for its reservations."""
    with _lock:
        _blocked[loop] = _blocked.get(loop, 0) + 1
    try:
        yield
    finally:
        with _lock:
            if _blocked[loop] <= 1:
                del _blocked[loop]
            else:
                _blocked[loop] -= 1


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Ledger:
    """The live state of one ``Budget``: what is spent, what is reserved, when time runs out."""

    #: ``True`` for a ledger whose limits another process keeps (see ``acquire``).
    remote: ClassVar[bool] = False

    def __init__(self, budget: Budget, scope: str) -> None:
        self.budget = budget
        self.scope = scope
        self.spent_tokens = 0
        self.spent_usd = 0.0
        self.spent_requests = 0
        self.spent_completion_tokens = 0
        self.reserved_tokens = 0
        self.reserved_usd = 0.0
        self.reserved_requests = 0
        self.reserved_completion_tokens = 0
        self.started_at: float | None = None
        #: Requests waiting for a settlement: each a future on its own event loop.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        #: Reservations not yet settled. Counted apart from the reserved amounts, whose float
        #: sums need not return to exactly zero.
        self.outstanding = 0
        #: Outstanding reservations per event loop that made them (``None``: no loop).
        self._held: dict[asyncio.AbstractEventLoop | None, int] = {}

    def start_clock(self) -> None:
        """Start the ``seconds`` clock, if it has not started yet."""
        if self.started_at is None:
            self.started_at = time.monotonic()

    def remaining_seconds(self) -> float | None:
        """Seconds left before the ``seconds`` limit; ``None`` without one."""
        if self.budget.seconds is None:
            return None
        if self.started_at is None:
            return self.budget.seconds
        return self.budget.seconds - (time.monotonic() - self.started_at)

    def _check(self, charge: Charge) -> None:
        left = self.remaining_seconds()
        if left is not None and left <= 0:
            assert self.budget.seconds is not None
            raise BudgetExceeded(
                "seconds", self.budget.seconds, self.budget.seconds - left, 0, self.scope
            )
        for name in _LIMITS:
            limit = getattr(self.budget, name)
            if limit is None:
                continue
            used = getattr(self, f"spent_{name}") + getattr(self, f"reserved_{name}")
            need = getattr(charge, name)
            # A tiny tolerance keeps float USD sums from refusing an exact fit.
            if used + need > limit * (1 + 1e-12):
                raise BudgetExceeded(name, limit, used, need, self.scope)

    def _add_reserved(
        self, charge: Charge, sign: int, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        self.outstanding += sign
        held = self._held
        count = held.get(loop, 0) + sign
        if count:
            held[loop] = count
        else:
            held.pop(loop, None)
        self.reserved_tokens += sign * charge.tokens
        self.reserved_usd += sign * charge.usd
        self.reserved_requests += sign * charge.requests
        self.reserved_completion_tokens += sign * charge.completion_tokens

    def _add_spent(self, charge: Charge) -> None:
        self.spent_tokens += charge.tokens
        self.spent_usd += charge.usd
        self.spent_requests += charge.requests
        self.spent_completion_tokens += charge.completion_tokens

    def _notify(self) -> None:
        """Wake every waiter, each on its own loop (called with ``_lock`` held)."""
        waiters = self._waiters
        if not waiters:
            return
        self._waiters = []
        here = asyncio._get_running_loop()
        for loop, future in waiters:
            if loop is here:
                _wake(future)
            else:
                # A closed loop raises RuntimeError: nobody is waiting there any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_wake, future)

    def _settling_elsewhere(self) -> int:
        """Outstanding reservations that can still settle: those of loops that are not blocked
        by a ``run_sync`` inside them (called with ``_lock`` held)."""
        if not _blocked:
            return self.outstanding
        return self.outstanding - sum(
            count for loop, count in self._held.items() if loop in _blocked
        )

    def _add_waiter(self) -> asyncio.Future[None]:
        """A future that the next settlement in this ledger completes (``_lock`` held)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((loop, future))
        return future

    def _drop_waiter(self, future: asyncio.Future[None]) -> None:
        with _lock:
            self._waiters = [w for w in self._waiters if w[1] is not future]

    @property
    def spent(self) -> Charge:
        """What settled requests have cost so far (reservations not included)."""
        return Charge(
            self.spent_tokens, self.spent_usd, self.spent_requests, self.spent_completion_tokens
        )

    def would_exceed(self, charge: Charge) -> bool:
        """Whether reserving ``charge`` now would pass a limit (or the clock has run out)."""
        try:
            with _lock:
                self._check(charge)
        except BudgetExceeded:
            return True
        return False

    async def acquire(self, charge: Charge) -> object:
        """Remote ledgers only: reserve ``charge`` where the limits are kept, waiting while
        other requests' reservations block it, and return a handle for ``release``; raise
        ``BudgetExceeded`` when it cannot fit. Awaited by ``reserve_when_affordable`` once
        every local check has passed."""
        raise NotImplementedError(f"{type(self).__name__} is not a remote ledger")

    def release(self, handle: object, actual: Charge) -> None:
        """Remote ledgers only: settle the reservation ``acquire`` returned ``handle`` for,
        to what the request really cost. Called from synchronous code: it must not block."""
        raise NotImplementedError(f"{type(self).__name__} is not a remote ledger")

    def __repr__(self) -> str:
        reserved = Charge(
            self.reserved_tokens,
            self.reserved_usd,
            self.reserved_requests,
            self.reserved_completion_tokens,
        )
        return f"Ledger({self.scope!r}, spent={self.spent}, reserved={reserved})"


class Reservation:
    """A worst-case charge held in several ledgers until the request settles."""

    __slots__ = ("charge", "ledgers", "loop", "remote", "settled")

    def __init__(
        self,
        ledgers: Sequence[Ledger],
        charge: Charge,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.ledgers = ledgers
        self.charge = charge
        self.settled = False
        #: The event loop that made the reservation (``None``: none was running).
        self.loop = loop
        #: The remote ledgers whose ``acquire`` succeeded, with the handle each returned.
        self.remote: tuple[tuple[Ledger, object], ...] = ()

    def settle(self, actual: Charge) -> None:
        """Replace the reserved worst case by what the request really cost. Idempotent."""
        with _lock:
            if self.settled:
                return
            self.settled = True
            for ledger in self.ledgers:
                ledger._add_reserved(self.charge, -1, self.loop)
                ledger._add_spent(actual)
                ledger._notify()
        for ledger, handle in self.remote:
            ledger.release(handle, actual)

    async def _acquire_remote(self) -> None:
        """Reserve in the remote ledgers too; on failure (or cancellation) undo everything."""
        acquired: list[tuple[Ledger, object]] = []
        try:
            for ledger in self.ledgers:
                if ledger.remote:
                    acquired.append((ledger, await ledger.acquire(self.charge)))
        except BaseException:
            self.remote = tuple(acquired)
            self.settle(Charge())
            raise
        self.remote = tuple(acquired)


def reserve(ledgers: Sequence[Ledger], charge: Charge) -> Reservation:
    """Reserve ``charge`` in every ledger, or in none (raising ``BudgetExceeded``).

    Synchronous on purpose, and under the ledgers' lock: no other task or thread runs between
    the checks and the reservations.
    """
    with _lock:
        return _reserve_locked(ledgers, charge)


def _reserve_locked(ledgers: Sequence[Ledger], charge: Charge) -> Reservation:
    for ledger in ledgers:
        ledger.start_clock()
        try:
            ledger._check(charge)
        except BudgetExceeded as exc:
            exc.ledger = ledger
            raise
    loop = asyncio._get_running_loop()
    for ledger in ledgers:
        ledger._add_reserved(charge, +1, loop)
    return Reservation(ledgers, charge, loop)


def try_reserve(ledgers: Sequence[Ledger], charge: Charge) -> Reservation | None:
    """The common case without a coroutine: no ledgers at all, or local ledgers with room.
    ``None`` means ``reserve_when_affordable`` must decide (wait, raise, or ask a remote)."""
    if not ledgers:
        return Reservation(ledgers, charge)
    if any(ledger.remote for ledger in ledgers):
        return None
    try:
        return reserve(ledgers, charge)
    except BudgetExceeded:
        return None


async def reserve_when_affordable(ledgers: Sequence[Ledger], charge: Charge) -> Reservation:
    """Reserve ``charge``; if a limit is only blocked by other requests' reservations, wait
    for them to settle (their real usage is usually far below the worst case) and try again.

    Raises ``BudgetExceeded`` once the spend alone, or the clock, leaves no room; the
    reservations of a loop blocked by ``run_sync`` (see ``loop_blocked``) count as spent here,
    since waiting for them would never end.
    """
    while True:
        with _lock:
            try:
                reservation = _reserve_locked(ledgers, charge)
                break
            except BudgetExceeded as exc:
                blocking = exc.ledger
                if (
                    blocking is None
                    or exc.limit == "seconds"
                    or blocking._settling_elsewhere() <= 0
                ):
                    raise
                # Registered before the lock is released: no settlement can slip in between.
                future = blocking._add_waiter()
        try:
            await future
        except BaseException:  # cancelled while waiting
            blocking._drop_waiter(future)
            raise
    if any(ledger.remote for ledger in ledgers):
        await reservation._acquire_remote()
    return reservation


def deadline_seconds(ledgers: Sequence[Ledger]) -> float | None:
    """Seconds until the earliest deadline among ``ledgers``, or ``None`` if none has one."""
    lefts = [left for ledger in ledgers if (left := ledger.remaining_seconds()) is not None]
    return min(lefts) if lefts else None
