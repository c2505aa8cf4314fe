"""ttc's errors: one base class, a small hierarchy, messages that say what to change.

Provider errors never carry an API key: adapters build them from the status, the provider's
error message and the model name only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ttc.runtime.budget import Ledger
    from ttc.runtime.ratelimit import RateLimitInfo
    from ttc.types import Completion, Result


class TTCError(Exception):
    """Base class of every error ttc raises on purpose."""


class ConfigError(TTCError, ValueError):
    """A setting is invalid or unsupported; the message names the setting."""


class PromptError(ConfigError):
    """A prompt is not text or chat messages, is empty, or holds text no request can carry;
    the message says what was expected and where (message index, position)."""


class MissingDependencyError(TTCError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install 'ttc-sdk[{extra}]'")
        self.package = package
        self.extra = extra


class BudgetExceeded(TTCError):
    """A hard budget limit cannot pay for the next request.

    Raised *before* anything is sent, so the limit is never passed. ``completions`` holds what
    was already paid for in the same call, so nothing is lost.

    Attributes: ``limit`` (``"tokens"``, ``"usd"``, ``"requests"`` or ``"seconds"``),
    ``limit_value``, ``spent`` (spent or reserved when it was refused), ``needed`` (the
    request's worst case), ``scope`` (``"run"`` or the model's name), ``completions``, and
    ``result``: with a strategy's ``on_budget="raise"``, the best result the run had.
    """

    def __init__(
        self,
        limit: str,
        limit_value: float,
        spent: float,
        needed: float,
        scope: str,
        completions: Sequence[Completion] = (),
    ) -> None:
        super().__init__(
            f"{scope} budget: {limit} limit {limit_value:g} would be passed "
            f"(spent or reserved {spent:g}, this request needs up to {needed:g})"
        )
        self.limit = limit
        self.limit_value = limit_value
        self.spent = spent
        self.needed = needed
        self.scope = scope
        self.completions: list[Completion] = list(completions)
        self.ledger: Ledger | None = None
        #: With ``on_budget="raise"``: the best result the run had when the budget ran out.
        self.result: Result | None = None


class ProviderError(TTCError):
    """A provider or engine answered with an error, or not at all."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        where = "/".join(p for p in (provider, model) if p)
        prefix = f"{where}: " if where else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{prefix}{code}{message}")
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after
        #: What the error response's rate-limit headers said, where the adapter read them:
        #: the runtime learns from them as from a successful response's.
        self.rate_limits: RateLimitInfo | None = None


class RetryableError(ProviderError):
    """A failure worth retrying: rate limits, server errors, timeouts, broken connections."""

    retryable = True


class RateLimitError(RetryableError):
    """HTTP 429. ``retry_after`` is the provider's hint in seconds, if it sent one."""


class ServerError(RetryableError):
    """HTTP 5xx."""


class ProviderTimeoutError(RetryableError):
    """The provider did not answer within the request timeout."""


class ProviderConnectionError(RetryableError):
    """The connection failed or broke."""


class MalformedResponseError(RetryableError):
    """The provider answered 2xx with a body that is not what its API documents."""


class BadRequestError(ProviderError):
    """HTTP 400: the request is wrong; retrying will not help."""


class ContextLengthError(BadRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class AuthenticationError(ProviderError):
    """HTTP 401: the API key is missing or wrong."""


class PermissionDeniedError(ProviderError):
    """HTTP 403."""


class NotFoundError(ProviderError):
    """HTTP 404: usually a wrong model name or base URL."""


class GenerationError(TTCError):
    """Some samples of a call failed for good after retries.

    ``completions`` holds the samples that succeeded (paid for, so never dropped) and ``cause``
    the last provider error.
    """

    def __init__(
        self, cause: BaseException, completions: Sequence[Completion], wanted: int
    ) -> None:
        super().__init__(f"got {len(completions)} of {wanted} samples: {cause}")
        self.cause = cause
        self.completions: list[Completion] = list(completions)
        self.wanted = wanted
