"""The OpenAI-compatible wire format on aiohttp: chat and text completions.

aiohttp because it costs the least client CPU a request, flat up to hundreds in flight, of the
HTTP clients measured (httpx and the openai SDK cost several times more: see the performance
page).
One pooled session per adapter and event loop, sized above the concurrency limit. This module
only translates requests and responses; retries, limits and budgets are the runtime's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import SecretStr

from ttc.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContextLengthError,
    MalformedResponseError,
    NotAnAPIError,
    NotFoundError,
    PermissionDeniedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnreachableError,
    RateLimitError,
    RetryableError,
    ServerError,
)
from ttc.runtime.model import Capabilities, Model, RawResponse, cut_at_stops
from ttc.runtime.ratelimit import parse_duration, parse_rate_limit_headers
from ttc.runtime.redact import header_secrets, redact
from ttc.types import Completion, FinishReason, GenerateRequest, Samples, TokenLogprob

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
        base_url: the API root, e.g. ``https://api.openai.com/v1``; ``None`` for the
            preset's ``<PROVIDER>_BASE_URL`` environment variable (``base_url_env``) if set,
            else its default.
        api_key: the key, or ``None`` to read ``api_key_env``. Held as a ``SecretStr``: it is
            never printed, logged or put in an exception, even when a server quotes it back
            (redacted, with the values of credential ``headers``).
        api_key_env: the environment variable with the key.
        endpoint: ``"chat"`` (``/chat/completions``; raw text becomes one user message) or
            ``"completions"`` (``/completions``; raw text for base models).
        headers: extra HTTP headers.
        extra_body: extra JSON fields for every request (e.g. vLLM's sampling options).
        **runtime: budget, max_concurrency, rpm, tpm, retry, price, params, timeout,
            capabilities (see ``ttc.Model``).

    Each sample's ``completion_tokens`` is the usage's figure when one choice came back (every
    fanned-out request). With native ``n`` > 1 the usage is a sum over the choices: a sample's
    own count comes from its logprobs when they were asked for, and is ``None`` otherwise.
    """

    provider: ClassVar[str] = "openai-compatible"
    default_base_url: ClassVar[str | None] = None
    default_api_key_env: ClassVar[str | None] = None
    #: The environment variable that relocates a preset (a proxy, a gateway, a mirror).
    base_url_env: ClassVar[str | None] = None
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
        from_env = os.environ.get(self.base_url_env, "").strip() if self.base_url_env else ""
        url = base_url or from_env or self.default_base_url
        if not url:
            raise ConfigError(f"base_url: {type(self).__name__} needs the server's API root")
        if not url.startswith(("http://", "https://")):
            setting = "base_url" if base_url or not from_env else f"base_url ({self.base_url_env})"
            raise ConfigError(f"{setting} must start with http:// or https://, got {url!r}")
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
        # Errors are raised outside the ``except`` blocks: an exception raised inside one keeps
        # the foreign exception (and the raw provider text it may hold) as its ``__context__``.
        failure: ProviderError | None = None
        try:
            async with session.post(self._url, data=body) as resp:
                raw = await resp.read()  # bytes: no charset sniffing, json takes them as they are
                status = resp.status
                headers = resp.headers
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            failure = self._transport_error(exc)
        if failure is not None:
            raise failure
        if not 200 <= status < 300:
            error = self._error(status, raw.decode("utf-8", "replace"), headers)
            error.rate_limits = parse_rate_limit_headers(headers)
            raise error
        try:
            data = json.loads(raw)
        except ValueError:  # UnicodeDecodeError included
            failure = MalformedResponseError(
                f"response is not JSON ({len(raw)} bytes)",
                provider=self.provider,
                model=self.model,
                url=self._url,
            )
        if failure is not None:
            raise failure
        return self._parse(data, request, parse_rate_limit_headers(headers))

    def _parse(self, data: Any, request: GenerateRequest, rate_limits: Any) -> RawResponse:
        failure: ProviderError | None = None
        try:
            choices = data["choices"]
            if len(choices) > 1 and not _in_index_order(choices):
                choices = sorted(choices, key=lambda c: c.get("index", 0))
            usage = data.get("usage")
            if not isinstance(usage, dict):
                usage = {}  # absent or not the documented object: counted from the bounds
            completion_tokens = usage.get("completion_tokens")
            if not isinstance(completion_tokens, int) or completion_tokens < 0:
                completion_tokens = None  # not a count: the runtime counts the choices
            # One choice: the usage is its own count. Several: only their logprobs say.
            single = completion_tokens if len(choices) == 1 else None
            params = request.params
            cut_stops = len(params.stop) > len(self._wire_stops(params.stop))
            if (
                cut_stops
                or params.logprobs
                or params.prompt_logprobs is not None
                or type(self)._completion is not OpenAICompatible._completion  # overridden
            ):
                samples = Samples.of(
                    [self._completion(choice, request, cut_stops, single) for choice in choices]
                )
            else:  # the common case, in one tight loop: hundreds of choices with native n
                samples = self._plain_samples(choices, single)
        except (KeyError, TypeError, AttributeError) as exc:
            error = data.get("error") if isinstance(data, dict) else None
            if error:  # a 200 that carries an error object (some gateways send these)
                message, _ = _error_message(json.dumps(data))
                detail = f"answered 200 with an error: {self._redact(message)[:500]}"
            else:
                detail = f"response lacks the documented fields ({exc!r})"
            failure = MalformedResponseError(
                detail, provider=self.provider, model=self.model, url=self._url
            )
        if failure is not None:
            raise failure
        prompt_tokens = usage.get("prompt_tokens")
        return RawResponse(
            samples=samples,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
            completion_tokens=completion_tokens,
            rate_limits=rate_limits,
        )

    def _plain_samples(self, choices: list[Any], tokens: int | None) -> Samples:
        """``_completion`` for choices with no stop strings to cut and no logprobs: the text
        and finish reason of each, checked here and not validated again, in columns (no
        object per sample unless someone asks for the completions)."""
        finish = _FINISH.get
        if self.endpoint == "chat":
            texts = [choice["message"].get("content") or "" for choice in choices]
        else:
            texts = [choice["text"] for choice in choices]
        for text in texts:
            if type(text) is not str:
                raise TypeError("completion text is not a string")
        finishes = [finish(choice.get("finish_reason") or "", "unknown") for choice in choices]
        return Samples(texts, finishes, tokens, self.model)

    def _completion(
        self,
        choice: dict[str, Any],
        request: GenerateRequest,
        cut_stops: bool,
        tokens: int | None = None,
    ) -> Completion:
        """One choice as a ``Completion``; ``cut_stops``: apply the stop strings the provider
        could not take; ``tokens``: its completion tokens, where the usage says (one choice).
        With several choices and logprobs, the logprobs count each choice's tokens exactly;
        otherwise the provider's usage is a sum over the choices and a choice's own count is
        unknown (``None``)."""
        params = request.params
        text = (
            (choice["message"].get("content") or "") if self.endpoint == "chat" else choice["text"]
        )
        if type(text) is not str:
            raise TypeError("completion text is not a string")
        finish: FinishReason = _FINISH.get(choice.get("finish_reason") or "", "unknown")
        if cut_stops:
            text, cut = cut_at_stops(text, params.stop)
            if cut:
                finish = "stop"
        logprobs = parse_logprobs(choice.get("logprobs")) if params.logprobs else None
        prompt_logprobs = (
            _parse_prompt_logprobs(choice.get("prompt_logprobs"))
            if params.prompt_logprobs is not None
            else None
        )
        if tokens is None and logprobs is not None:  # one entry per generated token
            tokens = len(logprobs)
        return Completion.parsed(text, finish, tokens, self.model, logprobs, prompt_logprobs)

    def _secrets(self) -> list[str | SecretStr | None]:
        """What must never appear in an error: the key and credential headers' values."""
        return [self.api_key, *header_secrets(self.headers)]

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def _transport_error(self, exc: BaseException, url: str | None = None) -> ProviderError:
        """The typed error for a request that got no answer: timed out, the connection could
        not be opened, or it broke."""
        where: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "url": url or self._url,
        }
        if isinstance(exc, asyncio.TimeoutError):
            return ProviderTimeoutError(f"no answer within {self.timeout:g} s", **where)
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, aiohttp.ClientConnectorError):  # nothing reached the server
            error = ProviderUnreachableError(f"cannot connect ({detail})", **where)
            if isinstance(exc, aiohttp.ClientSSLError):  # a certificate will not heal
                error.retryable = False
            return error
        return ProviderConnectionError(detail, **where)

    def _error(self, status: int, text: str, headers: Any, url: str | None = None) -> ProviderError:
        """The typed error for an HTTP error status, with the provider's message (keys
        redacted) or, for a page that is not an API answer, a summary of it."""
        kwargs: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "status": status,
            "retry_after": _retry_after(headers),
            "url": url or self._url,
        }
        text = self._redact(text)
        if not text.lstrip().startswith("{"):  # not the API's JSON: perhaps a web page
            page = html_page(text, headers.get("content-type"))
            if page is not None:
                return page_error(status, page, kwargs)
        message, code = _error_message(text)
        message = self._redact(message)[:500]  # again, unescaped: then cut
        if status == 429:
            error: ProviderError = RateLimitError(message, **kwargs)
            if code == "insufficient_quota":  # OpenAI's "you exceeded your current quota"
                error.retryable, error.fatal = False, True
            return error
        if status in (405, 501, 505):
            return NotAnAPIError(f"the server does not serve this API here: {message}", **kwargs)
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


def page_error(status: int | None, page: str, kwargs: dict[str, Any]) -> ProviderError:
    """The error for an HTML page where the API answers JSON, ``page`` its summary. Gateways in
    front of a real API send such pages while it restarts (408, 429, 502-504, Cloudflare's
    52x): those are retried. Any other page comes from a server that is not the API (a wrong
    port or path, a web server, a login portal): ``NotAnAPIError``, not retried, except that
    401/403/404 keep their usual types."""
    message = f"the answer is an HTML page, not the API's JSON ({page})"
    if status == 429:
        return RateLimitError(message, **kwargs)
    if status == 408:
        return RetryableError(message, **kwargs)
    if status is not None and (status in (502, 503, 504) or status >= 520):
        return ServerError(message, **kwargs)
    if status == 401:
        return AuthenticationError(message, **kwargs)
    if status == 403:
        return PermissionDeniedError(message, **kwargs)
    if status == 404:
        return NotFoundError(f"{message}; is base_url the API root?", **kwargs)
    return NotAnAPIError(f"{message}; is base_url the API root?", **kwargs)


_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>|<h1[^>]*>(.*?)</h1>")
_TAG = re.compile(r"(?s)<[^>]*>")


def html_page(text: str, content_type: str | None) -> str | None:
    """A short summary of ``text`` if it is (or quotes, near its start) an HTML page: its title,
    else its first words. ``None`` if it is not one."""
    head = text[:300].lower()
    if not (
        (content_type or "").lower().startswith("text/html")
        or "<!doctype html" in head
        or "<html" in head
    ):
        return None
    found = _TITLE.search(text)
    title = next((g for g in found.groups() if g), "") if found else ""
    words = " ".join(_TAG.sub(" ", title or text).split())
    words = words if len(words) <= 120 else words[:117] + "..."
    return f"{len(text)} characters" + (f": {words!r}" if words else "")


def _in_index_order(choices: list[Any]) -> bool:
    """Whether the choices already come in ``index`` order (they do from every server seen),
    so that sorting them can be skipped."""
    try:
        return [c["index"] for c in choices] == list(range(len(choices)))
    except (KeyError, TypeError, IndexError):
        return False


def _error_message(text: str) -> tuple[str, str | None]:
    """The provider's error message in a body, uncut (redact it, then cut it), and its code."""
    try:
        data = json.loads(text)
    except ValueError:
        return (text or "no error message"), None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        return str(err.get("message") or err), code if isinstance(code, str) else None
    if isinstance(err, str):
        return err, None
    if isinstance(data, dict) and "message" in data:
        return str(data["message"]), None
    return text, None


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
