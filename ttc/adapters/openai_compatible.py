"""The OpenAI-compatible wire format on aiohttp: chat and text completions.

aiohttp because it costs about 100 µs of client CPU a request, flat up to hundreds in flight,
where httpx or the openai SDK cost 0.5-1.5 ms (measurements in the docs' performance page).
One pooled session per adapter and event loop, sized above the concurrency limit. This module
only translates requests and responses; retries, limits and budgets are the runtime's.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import SecretStr

from ttc.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    RetryableError,
    ServerError,
)
from ttc.runtime.model import Capabilities, Model, RawResponse
from ttc.runtime.ratelimit import parse_duration, parse_rate_limit_headers
from ttc.types import Completion, FinishReason, GenerateRequest, TokenLogprob

Endpoint = Literal["chat", "completions"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


class OpenAICompatible(Model):
    """Any server that speaks OpenAI's chat or text completions API.

    Args:
        model: the model name the server expects.
        base_url: the API root, e.g. ``https://api.openai.com/v1``.
        api_key: the key, or ``None`` to read ``api_key_env``. Held as a ``SecretStr``: it is
            never printed, logged or put in an exception.
        api_key_env: the environment variable with the key.
        endpoint: ``"chat"`` (``/chat/completions``; raw text becomes one user message) or
            ``"completions"`` (``/completions``; raw text for base models).
        headers: extra HTTP headers.
        extra_body: extra JSON fields for every request (e.g. vLLM's sampling options).
        **runtime: budget, max_concurrency, rpm, tpm, retry, price, params, timeout,
            capabilities (see ``ttc.Model``).
    """

    provider: ClassVar[str] = "openai-compatible"
    default_base_url: ClassVar[str | None] = None
    default_api_key_env: ClassVar[str | None] = None
    requires_api_key: ClassVar[bool] = False
    max_tokens_field: ClassVar[str] = "max_tokens"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        api_key_env: str | None = None,
        endpoint: Endpoint = "chat",
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        **runtime: Any,
    ) -> None:
        super().__init__(model, **runtime)
        url = base_url or self.default_base_url
        if not url:
            raise ConfigError(f"base_url: {type(self).__name__} needs the server's API root")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {url!r}")
        self.base_url = url.rstrip("/")
        if endpoint not in ("chat", "completions"):
            raise ConfigError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if endpoint == "completions" and not self.capabilities.completions:
            raise ConfigError(f"endpoint: {type(self).__name__} has no text completions endpoint")
        self.endpoint: Endpoint = endpoint
        self.api_key_env = api_key_env or self.default_api_key_env
        key = api_key if api_key is not None else self._key_from_env()
        if key is None and self.requires_api_key:
            raise ConfigError(
                f"api_key: no API key given and the environment variable "
                f"{self.api_key_env} is not set"
            )
        self.api_key: SecretStr | None = SecretStr(key) if isinstance(key, str) else key
        self.headers = dict(headers or {})
        self.extra_body = dict(extra_body or {})
        self._url = f"{self.base_url}/{'chat/completions' if endpoint == 'chat' else 'completions'}"

    def _key_from_env(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"

    # ------------------------------------------------------------------ session

    def _session(self) -> aiohttp.ClientSession:
        resources = self._loop_resources()
        session: aiohttp.ClientSession | None = resources.get("session")
        if session is None or session.closed:
            headers = {"Content-Type": "application/json", **self.headers}
            if self.api_key is not None:
                headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
            connector = aiohttp.TCPConnector(
                limit=self.max_concurrency + 8, ttl_dns_cache=300, keepalive_timeout=60
            )
            session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                raise_for_status=False,
            )
            resources["session"] = session
        return session

    async def _close_loop_resources(self, resources: dict[str, Any]) -> None:
        session: aiohttp.ClientSession | None = resources.pop("session", None)
        if session is not None and not session.closed:
            await session.close()

    @staticmethod
    def _release_loop_resources(resources: dict[str, Any]) -> None:
        session: aiohttp.ClientSession | None = resources.pop("session", None)
        if session is None or session.closed:
            return
        connector = session.connector
        session.detach()  # the session counts as closed: no "Unclosed client session"
        if connector is not None:
            # What aiohttp's own finalizer does, minus its warning: drop the pooled
            # connections without awaiting (their loop may be gone).
            connector._close()

    # ------------------------------------------------------------------ wire format

    def build_payload(self, request: GenerateRequest) -> dict[str, Any]:
        """The JSON body for ``request`` on this endpoint."""
        p = request.params
        body: dict[str, Any] = {"model": self.model}
        if self.endpoint == "chat":
            prompt = request.prompt
            body["messages"] = (
                [{"role": "user", "content": prompt}]
                if isinstance(prompt, str)
                else [{"role": m.role, "content": m.content} for m in prompt]
            )
        else:
            if not isinstance(request.prompt, str):
                raise ConfigError("prompt: the completions endpoint takes raw text, not messages")
            body["prompt"] = request.prompt
        if request.n != 1:
            body["n"] = request.n
        body["temperature"] = p.temperature
        body["top_p"] = p.top_p
        body[self.max_tokens_field] = p.max_tokens
        stops = self._wire_stops(p.stop)
        if stops:
            body["stop"] = list(stops)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.logprobs:
            if self.endpoint == "chat":
                body["logprobs"] = True
                if p.top_logprobs:
                    body["top_logprobs"] = p.top_logprobs
            else:
                body["logprobs"] = p.top_logprobs or 0
        if p.prompt_logprobs is not None:  # a vLLM extension; capabilities gate it
            body["prompt_logprobs"] = p.prompt_logprobs
        if self.extra_body:
            body.update(self.extra_body)
        return body

    async def _send(self, request: GenerateRequest) -> RawResponse:
        body = json.dumps(self.build_payload(request)).encode()
        session = self._session()
        try:
            async with session.post(self._url, data=body) as resp:
                raw = await resp.read()  # bytes: no charset sniffing, json takes them as they are
                status = resp.status
                headers = resp.headers
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise self._transport_error(exc) from exc
        if not 200 <= status < 300:
            error = self._error(status, raw.decode("utf-8", "replace"), headers)
            error.rate_limits = parse_rate_limit_headers(headers)
            raise error
        try:
            data = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError included
            raise MalformedResponseError(
                f"response is not JSON ({len(raw)} bytes)",
                provider=self.provider,
                model=self.model,
            ) from exc
        return self._parse(data, request, parse_rate_limit_headers(headers))

    def _parse(self, data: Any, request: GenerateRequest, rate_limits: Any) -> RawResponse:
        try:
            choices = data["choices"]
            if len(choices) > 1:
                choices = sorted(choices, key=lambda c: c.get("index", 0))
            cut_stops = len(request.params.stop) > len(self._wire_stops(request.params.stop))
            completions = [self._completion(choice, request, cut_stops) for choice in choices]
            usage = data.get("usage")
        except (KeyError, TypeError, AttributeError) as exc:
            error = data.get("error") if isinstance(data, dict) else None
            if error:  # a 200 that carries an error object (some gateways send these)
                message, _ = _error_message(json.dumps(data))
                detail = f"answered 200 with an error: {message}"
            else:
                detail = f"response lacks the documented fields ({exc!r})"
            raise MalformedResponseError(detail, provider=self.provider, model=self.model) from exc
        if not isinstance(usage, dict):
            usage = {}  # absent or not the documented object: counted from the bounds instead
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        return RawResponse(
            completions=completions,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            completion_tokens=completion_tokens if isinstance(completion_tokens, int) else None,
            rate_limits=rate_limits,
        )

    def _completion(
        self, choice: dict[str, Any], request: GenerateRequest, cut_stops: bool
    ) -> Completion:
        """One choice as a ``Completion``; ``cut_stops``: apply the stop strings the provider
        could not take."""
        params = request.params
        text = (
            (choice["message"].get("content") or "") if self.endpoint == "chat" else choice["text"]
        )
        if not isinstance(text, str):
            raise TypeError("completion text is not a string")
        finish: FinishReason = _FINISH.get(choice.get("finish_reason") or "", "unknown")
        if cut_stops:
            text, cut = _cut_at_stops(text, params.stop)
            if cut:
                finish = "stop"
        logprobs = parse_logprobs(choice.get("logprobs")) if params.logprobs else None
        prompt_logprobs = (
            _parse_prompt_logprobs(choice.get("prompt_logprobs"))
            if params.prompt_logprobs is not None
            else None
        )
        return Completion(
            text=text,
            finish_reason=finish,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            model=self.model,
        )

    def _transport_error(self, exc: BaseException) -> ProviderError:
        """The typed error for a request that got no answer: timed out, or the connection
        failed or broke."""
        if isinstance(exc, asyncio.TimeoutError):
            return ProviderTimeoutError(
                f"no answer within {self.timeout:g} s", provider=self.provider, model=self.model
            )
        return ProviderConnectionError(
            f"{type(exc).__name__}: {exc}", provider=self.provider, model=self.model
        )

    def _error(self, status: int, text: str, headers: Any) -> ProviderError:
        message, code = _error_message(text)
        retry_after = _retry_after(headers)
        kwargs: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "status": status,
            "retry_after": retry_after,
        }
        if status == 429:
            return RateLimitError(message, **kwargs)
        if status >= 500:
            return ServerError(message, **kwargs)
        if status in (408, 409):
            return RetryableError(message, **kwargs)
        if status == 401:
            return AuthenticationError(message, **kwargs)
        if status == 403:
            return PermissionDeniedError(message, **kwargs)
        if status == 404:
            return NotFoundError(message, **kwargs)
        lowered = message.lower()
        if (
            code == "context_length_exceeded"
            or "context length" in lowered
            or ("context_length" in lowered)
        ):
            return ContextLengthError(message, **kwargs)
        return BadRequestError(message, **kwargs)


def _cut_at_stops(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Apply stop strings the provider could not take (it accepts only so many)."""
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _error_message(text: str) -> tuple[str, str | None]:
    try:
        data = json.loads(text)
    except ValueError:
        return (text[:300] or "no error message"), None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        return str(err.get("message") or err)[:500], code if isinstance(code, str) else None
    if isinstance(err, str):
        return err[:500], None
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])[:500], None
    return text[:300], None


def _retry_after(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    return parse_duration(value)


def parse_logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    if not raw:
        return None
    if isinstance(raw, dict) and isinstance(raw.get("content"), list):  # chat format
        return tuple(
            TokenLogprob(
                token=item["token"],
                logprob=float(item["logprob"]),
                top=tuple(
                    (alt["token"], float(alt["logprob"])) for alt in item.get("top_logprobs") or ()
                ),
            )
            for item in raw["content"]
        )
    if isinstance(raw, dict) and isinstance(raw.get("tokens"), list):  # legacy completions
        tops = raw.get("top_logprobs") or [None] * len(raw["tokens"])
        return tuple(
            TokenLogprob(
                token=tok,
                logprob=float(lp) if lp is not None else float("-inf"),
                top=tuple((k, float(v)) for k, v in (top or {}).items()),
            )
            for tok, lp, top in zip(raw["tokens"], raw.get("token_logprobs") or [], tops)
        )
    return None


def _parse_prompt_logprobs(raw: Any) -> tuple[TokenLogprob, ...] | None:
    """vLLM's ``prompt_logprobs``: per prompt position ``None`` (the first token, which has no
    context) or ``{token_id: {"logprob", "rank", "decoded_token"}}`` with the prompt's own
    token first and then the top alternatives."""
    if not isinstance(raw, list):
        return None
    out = []
    for position in raw:
        if not position:
            out.append(TokenLogprob(token="", logprob=float("nan")))
            continue
        entries = list(position.values())
        first = entries[0]
        out.append(
            TokenLogprob(
                token=str(first.get("decoded_token", "")),
                logprob=float(first["logprob"]),
                top=tuple(
                    (str(e.get("decoded_token", "")), float(e["logprob"])) for e in entries[1:]
                ),
            )
        )
    return tuple(out)


__all__ = ["Capabilities", "Endpoint", "OpenAICompatible"]
