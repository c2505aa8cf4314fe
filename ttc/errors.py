"""ttc's errors: one base class, a small hierarchy, messages that say what to change.

Provider errors never carry an API key: adapters build them from the status, the provider's
error message (with every configured key redacted, see ``ttc.runtime.redact``), the model name
and the URL only, and never chain the foreign exception that held the raw text.
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

    Attributes: ``limit`` (``"tokens"``, ``"completion_tokens"``, ``"usd"``, ``"requests"``
    or ``"seconds"``), ``limit_value``, ``spent`` (spent or reserved when it was refused),
    ``needed`` (the request's worst case), ``scope`` (``"run"`` or the model's name),
    ``completions``, and ``result``: with a strategy's ``on_budget="raise"``, the best result
    the run had.
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
    """A provider or engine answered with an error, or not at all.

    Attributes: ``provider``, ``model``, ``status`` (the HTTP status, if any), ``retry_after``
    (the provider's hint in seconds), ``url`` (where the request went, where known),
    ``attempts`` (how many attempts the runtime made before giving up, set when it raises),
    ``message`` (the provider's own words, keys redacted), and two verdicts:

    - ``retryable``: whether another attempt may succeed (the runtime retries these);
    - ``fatal``: whether every request to this model will fail the same way (a wrong key or
      model name, an unreachable server, a URL that is not the API). A caller running many
      requests, such as ``ttc eval``, should stop at once rather than fail each one.

    Both are class defaults that an adapter may override on one error (``error.fatal =
    True``), e.g. for a 429 that says the account's quota is spent.
    """

    retryable: bool = False
    fatal: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after: float | None = None,
        url: str | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retry_after = retry_after
        self.url = url
        self.attempts: int | None = None
        #: What the error response's rate-limit headers said, where the adapter read them:
        #: the runtime learns from them as from a successful response's.
        self.rate_limits: RateLimitInfo | None = None
        super().__init__(self._text())

    def gave_up(self, attempts: int) -> None:
        """Record that the runtime made ``attempts`` attempts and gives up with this error (the
        message then says so)."""
        self.attempts = attempts
        self.args = (self._text(),)

    def _text(self) -> str:
        where = "/".join(p for p in (self.provider, self.model) if p)
        prefix = f"{where}: " if where else ""
        code = f"HTTP {self.status}: " if self.status is not None else ""
        notes = [self.url] if self.url else []
        if self.attempts is not None and (self.attempts > 1 or self.retryable):
            notes.append(f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        tail = f" ({', '.join(notes)})" if notes else ""
        return f"{prefix}{code}{self.message}{tail}"


class RetryableError(ProviderError):
    """A failure worth retrying: rate limits, server errors, timeouts, broken connections."""

    retryable = True


class RateLimitError(RetryableError):
    """HTTP 429. ``retry_after`` is the provider's hint in seconds, if it sent one."""


class ServerError(RetryableError):
    """HTTP 5xx."""


class ProviderTimeoutError(RetryableError):
    """The provider did not answer within the request timeout. Retried fewer times than other
    failures (``RetryPolicy.max_timeouts``): each attempt already took the whole timeout."""


class ProviderConnectionError(RetryableError):
    """The connection failed or broke."""


class ProviderUnreachableError(ProviderConnectionError):
    """The connection could not be opened (refused, unknown host, no route, a certificate that
    does not match): nothing reached the provider. Retried only briefly
    (``RetryPolicy.max_connect_failures``), for a server that is restarting; ``fatal``."""

    fatal = True


class MalformedResponseError(RetryableError):
    """The provider answered 2xx with a body that is not what its API documents."""


class NotAnAPIError(ProviderError):
    """The URL does not serve the provider's API: HTTP 405 or 501, or an HTML page where the
    API answers JSON (a web server, a login portal, a wrong port). Not retried; ``fatal``:
    check ``base_url``."""

    fatal = True


class BadRequestError(ProviderError):
    """HTTP 400: the request is wrong; retrying will not help."""


class ContextLengthError(BadRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class AuthenticationError(ProviderError):
    """HTTP 401: the API key is missing or wrong."""

    fatal = True


class PermissionDeniedError(ProviderError):
    """HTTP 403: the key may not use this model or endpoint."""

    fatal = True


class NotFoundError(ProviderError):
    """HTTP 404: usually a wrong model name or base URL."""

    fatal = True


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
