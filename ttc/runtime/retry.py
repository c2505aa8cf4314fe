"""Retry policy: which failures to retry, how long to wait, when to give up, and saying so.

Retried (``ProviderError.retryable``): rate limits (429), server errors (5xx), broken
connections and malformed bodies, up to ``max_attempts``; timeouts and connections that cannot
be opened only a few times, since the first cost a whole timeout each and the second rarely heal.
Never retried: 400/401/403/404/405/501, context-length errors and pages from servers that are
not the API, which raise their typed error at once. A provider's ``retry-after`` wins over the
backoff. Each retry is logged on the ``ttc.retry`` logger (INFO: the model, URL, attempt,
reason and wait; DEBUG: the whole message); a request that succeeds at once logs nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from pydantic import ConfigDict, Field

from ttc.errors import ProviderError, ProviderTimeoutError, ProviderUnreachableError
from ttc.validation import Float, Int, Settings

logger = logging.getLogger("ttc.retry")

_T = TypeVar("_T")
_A = TypeVar("_A")


class RetryPolicy(Settings):
    """How a model retries failed requests.

    ``max_attempts`` counts the first try. Waits grow as ``initial_backoff * 2**k`` with full
    jitter, capped at ``max_backoff``; a ``retry-after`` hint is used instead when present
    (capped at ``max_retry_after``). A request gives up after ``max_timeouts`` attempts that
    timed out (so it takes at most about ``max_timeouts x timeout``) and after
    ``max_connect_failures`` attempts whose connection could not be opened.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: Int = Field(8, ge=1)
    initial_backoff: Float = Field(0.25, ge=0)
    max_backoff: Float = Field(20.0, ge=0)
    max_retry_after: Float = Field(60.0, ge=0)
    max_timeouts: Int = Field(
        2, ge=1, description="Attempts that may time out before the request gives up."
    )
    max_connect_failures: Int = Field(
        3,
        ge=1,
        description="Attempts whose connection may fail to open (refused, unknown host) "
        "before the request gives up: enough for a server that is restarting.",
    )

    def wait_seconds(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if isinstance(error, ProviderError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def attempts_for(self, error: ProviderError) -> int:
        """The most attempts a request may make while it fails with errors like ``error``."""
        if not error.retryable:
            return 1
        if isinstance(error, ProviderTimeoutError):
            return min(self.max_attempts, self.max_timeouts)
        if isinstance(error, ProviderUnreachableError):
            return min(self.max_attempts, self.max_connect_failures)
        return self.max_attempts

    async def retry_after(
        self,
        first: ProviderError,
        attempt: Callable[[_A, int], Awaitable[_T]],
        arg: _A,
        name: str,
    ) -> _T:
        """The attempts ``attempt(arg, number)`` after a first one that failed with ``first``,
        as this policy allows; ``name`` (the model's) goes into the log lines. Raises the last
        error, which then says how many attempts were made."""
        error = first
        made = 1
        timeouts = connect_failures = 0
        while True:
            if isinstance(error, ProviderTimeoutError):
                timeouts += 1
            elif isinstance(error, ProviderUnreachableError):
                connect_failures += 1
            if (
                not error.retryable
                or made >= self.max_attempts
                or timeouts >= self.max_timeouts
                or connect_failures >= self.max_connect_failures
            ):
                error.gave_up(made)
                if made > 1 or error.retryable:
                    logger.info("giving up: %s", error)
                raise error
            wait = self.wait_seconds(made, error)
            if logger.isEnabledFor(logging.INFO):
                logger.info(
                    "%s: attempt %d of at most %d failed (%s); retrying in %.2f s",
                    _where(name, error),
                    made,
                    self.attempts_for(error),
                    _reason(error),
                    wait,
                )
                logger.debug("%s: attempt %d failed: %s", name, made, error)
            await anyio.sleep(wait)
            made += 1
            try:
                return await attempt(arg, made)
            except ProviderError as exc:
                error = exc


def _where(name: str, error: ProviderError) -> str:
    return f"{name} at {error.url}" if error.url else name


def _reason(error: ProviderError) -> str:
    """A short reason for a log line: the status or kind of failure and the start of the
    provider's message."""
    code = f"HTTP {error.status} " if error.status is not None else ""
    text = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{code}{type(error).__name__}: {text}"
