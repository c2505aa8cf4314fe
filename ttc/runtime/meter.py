"""One request metered: what every request a ``Model`` sends goes through, once.

Generation (``Model.generate``) and calls that generate nothing (a PRM served on the model's
server, through ``Model.metered``) both send inside ``async with model._metering(worst) as m``:

- entering takes a concurrency slot, the rate limit's tokens, the budget reservation of the
  worst case, and opens the run's deadline (the request is cut there);
- the body sends, and reports what the provider said with ``m.delivered(...)``;
- leaving settles: what was reported when it was delivered; nothing when the provider refused
  (an error status, a connection that never opened: nothing was processed); the worst case when
  nobody knows what was generated and billed (cancelled, timed out, cut off, a broken body);
  then usage and the trace event, once.

A class rather than a generator-based context manager: it is on every request's path, and the
client's CPU per request is a speed target (``benchmarks/overhead.py``).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from ttc.errors import (
    BudgetExceeded,
    MalformedResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnreachableError,
)
from ttc.runtime import tracing
from ttc.runtime.budget import (
    Charge,
    Ledger,
    deadline_seconds,
    ledger_lock,
    reserve_when_affordable,
    try_reserve,
)
from ttc.runtime.context import RunContext, current_run
from ttc.runtime.ratelimit import RateLimitInfo
from ttc.types import GenerateRequest, TraceEvent

if TYPE_CHECKING:
    from ttc.runtime.concurrency import ConcurrencyLimit
    from ttc.runtime.model import Model

# Failures after which nobody knows what the provider generated (and billed).
_UNKNOWN_OUTCOME = (
    ProviderTimeoutError,
    ProviderConnectionError,
    MalformedResponseError,
    BudgetExceeded,  # the run's deadline cancelled the request in flight
)


def unknown_outcome(error: BaseException | None) -> bool:
    """Whether the provider may have generated (and billed) something for a failed request:
    not for a connection that never opened (``ProviderUnreachableError``: nothing was sent)."""
    return isinstance(error, _UNKNOWN_OUTCOME) and not isinstance(error, ProviderUnreachableError)


def deadline_passed(ledgers: tuple[Ledger, ...]) -> BudgetExceeded:
    """The error for a run whose ``seconds`` budget ran out (the earliest deadline's)."""
    ledger = min(ledgers, key=lambda lg: lg.remaining_seconds() or float("inf"))
    assert ledger.budget.seconds is not None
    return BudgetExceeded("seconds", ledger.budget.seconds, ledger.budget.seconds, 0, ledger.scope)


class MeteredRequest:
    """One request under a model's runtime (see the module's docstring).

    ``worst`` is the charge reserved before sending; ``None`` for a generation ``request``,
    whose worst case is worked out once the concurrency slot is held (a prompt's exact token
    count may have arrived meanwhile). Not a closure: thousands of requests may wait for a
    slot at once, and a closure is four more objects each for the collector to walk.
    ``kind`` names a request that generates nothing in the trace (``"pooling"``); ``request``
    is the generation request, read only when a trace event is built (its operation name)."""

    __slots__ = (
        "_choices",
        "_completion_tokens",
        "_delivered",
        "_ledgers",
        "_limiter",
        "_prompt_tokens",
        "_rate_limits",
        "_reservation",
        "_run",
        "_scope",
        "_start",
        "_worst",
        "attempt",
        "kind",
        "model",
        "n",
        "request",
    )

    def __init__(
        self,
        model: Model,
        worst: Charge | None,
        attempt: int = 1,
        n: int = 1,
        kind: str | None = None,
        request: GenerateRequest | None = None,
    ) -> None:
        self.model = model
        self.request = request
        self._worst = worst
        self.attempt = attempt
        self.n = n
        self.kind = kind
        self._delivered = False
        self._scope: anyio.CancelScope | None = None
        self._rate_limits: RateLimitInfo | None = None

    def delivered(
        self,
        prompt_tokens: int,
        completion_tokens: int = 0,
        choices: int = 0,
        rate_limits: RateLimitInfo | None = None,
    ) -> None:
        """Record what the provider answered: this is what the request is charged."""
        self._delivered = True
        self._prompt_tokens = prompt_tokens
        self._completion_tokens = completion_tokens
        self._choices = choices
        self._rate_limits = rate_limits

    async def __aenter__(self) -> MeteredRequest:
        model = self.model
        ledgers = self._ledgers = model._ledgers()
        run = self._run = current_run()
        if run is not None and run.out_of_spec:
            model._refuse_out_of_spec(run.out_of_spec)
        if model.price is None and ledgers:
            model._check_priced(ledgers)
        limiter: ConcurrencyLimit = model._loop_state().limiter
        if not limiter.try_acquire():
            turn = limiter.queue()  # awaited here: no ``acquire`` coroutine per waiting request
            try:
                await turn
            except asyncio.CancelledError:
                limiter.leave(turn)
                raise
        try:
            worst = self._worst
            if worst is None:
                request = self.request
                assert request is not None
                worst = self._worst = model._worst_case(request, model._prompt_token_bound(request))
            rate_limiter = model.rate_limiter
            if not rate_limiter.try_acquire(worst.tokens):
                await rate_limiter.acquire(worst.tokens)
            reservation = try_reserve(ledgers, worst)
            if reservation is None:
                reservation = await reserve_when_affordable(ledgers, worst)
        except BaseException:
            limiter.release()
            raise
        self._limiter = limiter
        self._reservation = reservation
        deadline = deadline_seconds(ledgers) if ledgers else None
        if deadline is not None:
            scope = self._scope = anyio.move_on_after(deadline)
            scope.__enter__()
        self._start = time.perf_counter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Settle: charge what the provider reported and refund the rest of the worst case,
        or keep the worst case when the outcome is unknown; then usage and the trace. Usage
        reports only what the provider reported (nothing when the outcome is unknown)."""
        model = self.model
        error = exc
        try:
            scope = self._scope
            if scope is not None and scope.__exit__(exc_type, exc, tb):
                # The run's deadline cut the request: its outcome is unknown.
                error = deadline_passed(self._ledgers)
            seconds = time.perf_counter() - self._start
            rate_limiter = model.rate_limiter
            worst = self._worst
            assert isinstance(worst, tuple)
            if self._delivered:
                prompt_tokens = self._prompt_tokens
                completion_tokens = self._completion_tokens
                choices = self._choices
                undelivered = False
            else:
                prompt_tokens = completion_tokens = choices = 0
                if isinstance(error, ProviderError):
                    if error.status == 429 and error.retry_after:
                        rate_limiter.pause(error.retry_after)
                    if error.rate_limits is not None:  # e.g. a 429 saying which count ran out
                        rate_limiter.observe(error.rate_limits)
                # Cancelled (no ``Exception``), or failed without knowing what was generated.
                undelivered = not isinstance(error, Exception) or unknown_outcome(error)
            price = model.price
            cost = price.cost(prompt_tokens, completion_tokens) if price is not None else None
            if undelivered:
                self._reservation.settle(worst)
            else:
                self._reservation.settle(
                    Charge(prompt_tokens + completion_tokens, cost or 0.0, 1, completion_tokens)
                )
                rate_limiter.refund(worst.tokens - prompt_tokens - completion_tokens)
                if self._rate_limits is not None:
                    # After the refund: what the provider says remains has the last word.
                    rate_limiter.observe(self._rate_limits)
            name = model.name
            with ledger_lock:  # a model may be shared by threads
                model._usage.add(
                    prompt_tokens, completion_tokens, 1, cost, seconds, name, undelivered
                )
            run: RunContext | None = self._run
            if run is not None:
                event = None
                if run.traced:
                    if not isinstance(error, Exception):
                        error_text = None if self._delivered else "cancelled"
                    else:
                        error_text = f"{type(error).__name__}: {error}"
                    event = TraceEvent.model_construct(
                        model=name if self.kind is None else f"{name} ({self.kind})",
                        n=self.n,
                        attempt=self.attempt,
                        seconds=seconds,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        choices=choices,
                        error=error_text,
                        operation=self.kind
                        if self.kind is not None or self.request is None
                        else tracing.request_operation(self.model, self.request),
                    )
                run.record(
                    name, prompt_tokens, completion_tokens, cost, seconds, event, undelivered
                )
        finally:
            self._limiter.release()
        if error is not exc and error is not None:
            raise error from None
