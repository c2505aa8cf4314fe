"""The long tail of providers through litellm (imported lazily: about 3 s and 200 MiB).

Model names carry litellm's provider prefix (``groq/llama-3.1-8b-instant``,
``anthropic/claude-...``). litellm's own retries are switched off: the ttc runtime retries, paces
and budgets every call as it does for the built-in adapters. litellm's price map is fetched from
the network at import unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set; we set it (to ``True``)
before importing, so nothing but the configured provider is contacted.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from pydantic import SecretStr

from ttc.adapters.openai_compatible import html_page, page_error, parse_logprobs
from ttc.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    MalformedResponseError,
    MissingDependencyError,
    NotAnAPIError,
    NotFoundError,
    PermissionDeniedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnreachableError,
    RateLimitError,
    ServerError,
)
from ttc.runtime.model import Capabilities, Model, RawResponse, cut_at_stops, user_message
from ttc.runtime.pricing import lookup_price
from ttc.runtime.ratelimit import parse_rate_limit_headers
from ttc.runtime.redact import environment_secrets, header_secrets, redact
from ttc.types import Completion, FinishReason, GenerateRequest, TokenLogprob

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
}


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError as exc:
        raise MissingDependencyError("litellm", "litellm", "The LiteLLM adapter") from exc
    # litellm prints a "Give Feedback / Get Help" banner on every exception it raises: once per
    # failed attempt here, where the runtime retries and reports errors itself.
    litellm.suppress_debug_info = True
    return litellm


class LiteLLM(Model):
    """Any provider litellm knows, by its ``provider/model`` name.

    Args:
        model: litellm's model name, e.g. ``"anthropic/claude-3-5-haiku-latest"``.
        api_key: the key (else litellm reads the provider's usual environment variable).
        api_base: a different API root (e.g. a proxy, or a local server with ``openai/...``).
        native_n: whether the provider honours ``n`` > 1 in one request (default: fan out,
            the safe choice; the runtime checks the number of choices either way).
        litellm_kwargs: extra keyword arguments for ``litellm.acompletion``.
        **runtime: budget, max_concurrency, rpm, tpm, retry, price, params, timeout.
    """

    provider: ClassVar[str] = "litellm"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | SecretStr | None = None,
        api_base: str | None = None,
        native_n: bool = False,
        litellm_kwargs: dict[str, Any] | None = None,
        **runtime: Any,
    ) -> None:
        if "price" not in runtime or runtime["price"] is None:
            prefix, _, name = model.partition("/")
            runtime["price"] = lookup_price(model) or (lookup_price(name, prefix) if name else None)
        runtime.setdefault(
            "capabilities",
            # litellm passes at most 4 stop strings on (dropping the rest without a word): the
            # rest are applied here, as the presets do for providers with such a limit.
            Capabilities(
                native_n=native_n, max_n=128 if native_n else 1, completions=False, max_stop=4
            ),
        )
        super().__init__(model, **runtime)
        self.api_key: SecretStr | None = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.api_base = api_base
        self.litellm_kwargs = dict(litellm_kwargs or {})
        self._litellm: Any = None

    def _module(self) -> Any:
        if self._litellm is None:
            self._litellm = _import_litellm()
        return self._litellm

    async def _send(self, request: GenerateRequest) -> RawResponse:
        litellm = self._module()
        p = request.params
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": m.role, "content": m.content} for m in user_message(request.prompt)
            ],
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
            "timeout": self.timeout,
            "num_retries": 0,
            **self.litellm_kwargs,
        }
        if request.n != 1:
            kwargs["n"] = request.n
        wire_stops = self._wire_stops(p.stop)
        if wire_stops:
            kwargs["stop"] = list(wire_stops)
        if p.seed is not None:
            kwargs["seed"] = p.seed
        if p.logprobs:
            kwargs["logprobs"] = True
            if p.top_logprobs:
                kwargs["top_logprobs"] = p.top_logprobs
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        if self.api_base:
            kwargs["api_base"] = self.api_base
        # The error is raised outside the ``except``: raised inside, it would keep litellm's
        # exception as its ``__context__``, and with it the request's headers and the key.
        failure: ProviderError | None = None
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:
            failure = self._translate(litellm, exc)
        if failure is not None:
            raise failure
        try:
            usage = getattr(response, "usage", None)
            reported = getattr(usage, "completion_tokens", None)
            # One choice: the usage is its own count (several: only the sum is known).
            single = reported if len(response.choices) == 1 else None
            completions = [
                self._completion(choice, request, len(wire_stops) < len(p.stop), single)
                for choice in response.choices
            ]
        except (AttributeError, TypeError) as exc:
            raise MalformedResponseError(
                f"unexpected response shape: {exc}", provider=self.provider, model=self.model
            ) from exc
        # litellm keeps the provider's response headers here: its x-ratelimit-* ones pace us
        hidden = getattr(response, "_hidden_params", None)
        headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
        return RawResponse(
            completions=completions,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=reported,
            rate_limits=parse_rate_limit_headers(headers) if isinstance(headers, dict) else None,
        )

    def _completion(
        self, choice: Any, request: GenerateRequest, cut: bool, tokens: Any = None
    ) -> Completion:
        """One of litellm's choices as a ``Completion``; ``cut``: apply the stop strings that
        were not sent; ``tokens``: its completion tokens, where the usage says (one choice);
        with several, the logprobs count each one's tokens, and without them it is unknown."""
        text = choice.message.content or ""
        finish: FinishReason = _FINISH.get(choice.finish_reason or "", "unknown")
        if cut:
            text, stopped = cut_at_stops(text, request.params.stop)
            if stopped:
                finish = "stop"
        logprobs = _logprobs(choice) if request.params.logprobs else None
        if not isinstance(tokens, int) or tokens < 0:  # several choices: their logprobs say
            tokens = len(logprobs) if logprobs is not None else None
        return Completion(
            text=text,
            finish_reason=finish,
            completion_tokens=tokens,
            logprobs=logprobs,
            model=self.model,
        )

    def _secrets(self) -> list[str | SecretStr | None]:
        """What must never appear in an error: the key given here or to litellm, credential
        headers, and the environment's keys (litellm reads the key from there when none is
        given)."""
        extra = self.litellm_kwargs
        headers = extra.get("extra_headers") or extra.get("headers") or {}
        given = extra.get("api_key")
        return [
            self.api_key,
            given if isinstance(given, str) else None,
            *(header_secrets(headers) if isinstance(headers, dict) else ()),
            *environment_secrets(),
        ]

    def _translate(self, litellm: Any, exc: Exception) -> ProviderError:
        """Map litellm's exceptions onto ttc's, keeping the message and never the key: it is
        redacted before the message is cut, so no prefix of a key survives the cut."""
        status = getattr(exc, "status_code", None)
        text = redact(str(getattr(exc, "message", None) or exc), self._secrets())
        message = text[:500]
        kwargs: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "status": status if isinstance(status, int) else None,
            "url": self.api_base,
        }
        # litellm reports a refused connection and a broken 200 body as a 500
        # (InternalServerError); what it wraps says what happened, and so whether the provider
        # may have billed the request.
        underlying = _underlying(exc)
        if isinstance(underlying, json.JSONDecodeError):
            kwargs["status"] = None  # a 200 whose body broke, not a server error
            return MalformedResponseError(f"response is not JSON: {message}", **kwargs)
        if type(underlying).__name__ in ("ConnectError", "ClientConnectorError") or isinstance(
            underlying, ConnectionRefusedError
        ):
            kwargs["status"] = None  # nothing reached the provider
            return ProviderUnreachableError(
                f"cannot connect ({type(underlying).__name__}): {message}", **kwargs
            )
        if isinstance(underlying, ConnectionError):
            kwargs["status"] = None
            return ProviderConnectionError(f"{type(underlying).__name__}: {message}", **kwargs)
        page = html_page(text, None) or _response_page(exc, self._secrets())
        if page is not None:
            return page_error(kwargs["status"], page, kwargs)
        if kwargs["status"] in (405, 501, 505):
            return NotAnAPIError(f"the server does not serve this API here: {message}", **kwargs)
        table: list[tuple[str, type[ProviderError]]] = [
            ("ContextWindowExceededError", ContextLengthError),
            ("RateLimitError", RateLimitError),
            ("Timeout", ProviderTimeoutError),
            ("AuthenticationError", AuthenticationError),
            ("PermissionDeniedError", PermissionDeniedError),
            ("NotFoundError", NotFoundError),
            ("BadRequestError", BadRequestError),
            ("APIConnectionError", ProviderConnectionError),
            ("InternalServerError", ServerError),
            ("ServiceUnavailableError", ServerError),
            ("BadGatewayError", ServerError),
        ]
        for name, ours in table:
            theirs = getattr(litellm, name, None)
            if isinstance(theirs, type) and isinstance(exc, theirs):
                if ours is RateLimitError:
                    kwargs["retry_after"] = _retry_after(exc)
                return ours(message, **kwargs)
        if isinstance(status, int) and (status >= 500 or status == 429):
            return ServerError(message, **kwargs)
        if isinstance(status, int):
            return BadRequestError(message, **kwargs)
        return ProviderConnectionError(f"{type(exc).__name__}: {message}", **kwargs)


def _response_page(exc: Exception, secrets: list[str | SecretStr | None]) -> str | None:
    """A summary of the HTML page in the response litellm's exception holds, if it is one
    (litellm's message then says only "Error code: 501")."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    try:
        content_type = headers.get("content-type") if headers is not None else None
        body = response.text if response is not None else None
    except Exception:  # a response without a body to read
        return None
    if not isinstance(body, str) or not isinstance(content_type, str):
        return None
    return html_page(redact(body, secrets), content_type)


def _underlying(exc: BaseException) -> BaseException | None:
    """The innermost exception in ``exc``'s chain of causes (a few levels at most)."""
    inner: BaseException | None = None
    seen = exc.__cause__ or exc.__context__
    for _ in range(12):
        if seen is None:
            break
        inner = seen
        seen = seen.__cause__ or seen.__context__
    return inner


def _logprobs(choice: Any) -> tuple[TokenLogprob, ...] | None:
    """litellm hands back OpenAI's chat logprobs, as a pydantic object or a dict."""
    raw: Any = getattr(choice, "logprobs", None)
    dump = getattr(raw, "model_dump", None)
    return parse_logprobs(dump() if callable(dump) else raw)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
