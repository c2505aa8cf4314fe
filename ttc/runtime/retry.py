"""Retry policy: which failures to retry, how long to wait, when to give up.

Built on tenacity. Retryable: rate limits (429), server errors (5xx), timeouts, broken
connections and malformed bodies. Never retried: 400/401/403/404 and context-length errors,
which raise their typed error at once. A provider's ``retry-after`` wins over the backoff.
"""

from __future__ import annotations

import random

from pydantic import ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ttc.errors import ProviderError, RetryableError
from ttc.validation import Float, Int, Settings


class RetryPolicy(Settings):
    """How a model retries failed requests.

    ``max_attempts`` counts the first try. Waits grow as ``initial_backoff * 2**k`` with full
    jitter, capped at ``max_backoff``; a ``retry-after`` hint is used instead when present
    (capped at ``max_retry_after``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: Int = Field(8, ge=1)
    initial_backoff: Float = Field(0.25, ge=0)
    max_backoff: Float = Field(20.0, ge=0)
    max_retry_after: Float = Field(60.0, ge=0)

    def wait_seconds(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if isinstance(error, ProviderError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def retrying(self, done: int = 0) -> AsyncRetrying:
        """Tenacity's loop for the attempts left after ``done`` already made."""

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return self.wait_seconds(done + state.attempt_number, error)

        return AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts - done),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, RetryableError)),
            reraise=True,
        )
