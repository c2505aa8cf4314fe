"""A loopback HTTP server that imitates OpenAI-compatible providers.

For tests, benchmarks and examples: ``FakeProvider`` serves ``POST /v1/chat/completions``,
``POST /v1/completions`` and ``GET /v1/models`` in the OpenAI formats, with the quirks of one
provider *flavor* (``"openai"``, ``"groq"``, ``"cerebras"``, ``"llamacpp"``, ``"vllm"``), its
rate-limit headers, optional real rpm/tpm enforcement, artificial latency and injected faults, and
it counts exactly what it billed::

    async with FakeProvider("groq", latency=0.05, faults=Faults(rate_limit=0.1)) as fake:
        ...  # point a client at fake.base_url
        assert fake.stats.billed_completion_tokens == ...

Run it in its own process (benchmarks keep the server's CPU out of the client's measurement)::

    python -m ttc.testing.fake_provider --flavor openai --port 8000 --latency 0.05

It prints ``listening on http://127.0.0.1:PORT/v1`` once ready and serves until SIGTERM/SIGINT.
``GET /_fake/stats`` returns the counters as JSON and ``POST /_fake/reset`` zeroes them (no auth);
``--print-stats`` prints them to stderr on exit. ``--help`` lists the other options.

Rules the server follows (write clients against these):

* **Tokens.** ``tokenize(text) == re.findall(r"\\s*\\S+|\\s+", text)``: a token is a word with the
  whitespace before it, and whitespace at the end of the text is one more token. So
  ``"a b  c"`` is 3 tokens, ``"a b\\n\\n"`` is 3, ``""`` is 0. A chat prompt costs the tokens of
  every message's content plus 4 per message (``chat_prompt_tokens``). Usage counts the prompt
  once per request whatever ``n`` is (a list of prompts: the sum of the prompts), and the
  completion tokens of every returned choice.
* **Generation.** Each choice's text is ``reply(prompt_text, index, rng)``; for chat the prompt text
  is the message contents joined by ``"\\n"``; ``index`` counts from 0 within one prompt. The text
  is cut at the earliest ``stop`` string (not included; ``finish_reason`` ``"stop"``), then
  truncated to ``max_tokens`` tokens (chat: ``max_completion_tokens`` wins over ``max_tokens``;
  completions default to 16; chat without a limit gets the rest of the context window), giving
  ``"length"``. With ``seed`` in the request the rng is
  ``random.Random(f"{seed}:{prompt_text}:{index}")``, else the server's seeded stream.
* **Errors** always have the body ``{"error": {"message", "type", "param", "code"}}``.
* **Accounting.** Every request to a generation endpoint adds 1 to ``requests`` on arrival. An
  error or fault adds 1 to ``faults[kind]`` when it is decided (before the latency), and a 200
  with a valid body adds to ``ok``, ``choices`` and the billed tokens when it is written (after
  the latency; a client that gave up by then is still billed, as real providers do). A request
  that ``stop()`` cancels is not billed. Once every request has been answered,
  ``requests == ok + sum(faults.values()) - faults["fewer_choices"]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import sys
import time
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, Literal, NamedTuple, get_args

from aiohttp import web

__all__ = [
    "ERROR_KINDS",
    "FAULT_KINDS",
    "FLAVORS",
    "FakeProvider",
    "Faults",
    "Flavor",
    "Reply",
    "Stats",
    "chat_prompt_tokens",
    "count_tokens",
    "default_answer",
    "default_reply",
    "main",
    "tokenize",
]

Flavor = Literal["openai", "groq", "cerebras", "llamacpp", "vllm"]
FLAVORS: Final[tuple[str, ...]] = get_args(Flavor)

Reply = Callable[[str, int, random.Random], str]
"""``(prompt text, choice index, rng) -> completion text``."""

FAULT_KINDS: Final = ("server_error", "rate_limit", "timeout", "malformed", "fewer_choices")
"""Injected faults, in the order the per-request draw checks them."""

ERROR_KINDS: Final = (
    "bad_request",  # 400/405: unparsable JSON, invalid or unsupported parameters, flavor quirks
    "unauthorized",  # 401: missing or wrong API key
    "model_not_found",  # 404: a model outside `models`
    "context_length_exceeded",  # 400: prompt + max tokens over the context window
    "rate_limited",  # 429: the real rpm/tpm limit was reached
    "unsupported",  # 500: what the real server fails on (llamacpp: a list of prompts)
    "internal_error",  # 500: the `reply` function raised (the message names the exception)
)
"""Error answers that are not injected faults; ``Stats.faults`` counts them too."""

CHAT_PATH: Final = "/v1/chat/completions"
COMPLETIONS_PATH: Final = "/v1/completions"
MODELS_PATH: Final = "/v1/models"
STATS_PATH: Final = "/_fake/stats"
RESET_PATH: Final = "/_fake/reset"

DEFAULT_MODEL: Final = "fake-model"
UNLIMITED_REQUESTS: Final = 1_000_000
"""The limit reported per window when ``rpm`` is not given (not enforced)."""
UNLIMITED_TOKENS: Final = 1_000_000_000
"""The limit reported per window when ``tpm`` is not given (not enforced)."""
COMPLETIONS_DEFAULT_MAX_TOKENS: Final = 16
CHAT_TOKENS_PER_MESSAGE: Final = 4
_SHUTDOWN_TIMEOUT: Final = 0.25
_BACKLOG: Final = 4096

# ---------------------------------------------------------------------------------------------
# Tokens and the default reply
# ---------------------------------------------------------------------------------------------

_TOKEN_RE: Final = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """The fake tokenizer: words with their leading whitespace, plus trailing whitespace.

    ``"".join(tokenize(text)) == text`` always holds.
    """
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """``len(tokenize(text))``."""
    return len(_TOKEN_RE.findall(text))


def chat_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat: the tokens of every content plus 4 per message.

    ``content`` may be a string, a list of ``{"type": "text", "text": ...}`` parts, or None.
    """
    return sum(
        count_tokens(_content_text(m.get("content"))) + CHAT_TOKENS_PER_MESSAGE for m in messages
    )


_OPERANDS_RE: Final = re.compile(r"(\d+)\s*[*x×]\s*(\d+)")
_ANSWER_OFFSETS: Final = (0, 0, 0, 0, 0, 1, -1, 10)


def _operands(prompt: str) -> tuple[int, int]:
    found = _OPERANDS_RE.findall(prompt)
    if found:
        a, b = found[-1]
        return int(a), int(b)
    h = zlib.crc32(prompt.encode("utf-8"))
    return 11 + h % 89, 11 + (h >> 8) % 89


def default_answer(prompt: str) -> int:
    """The answer that ``default_reply`` gives most often (5 times in 8) for this prompt.

    The last ``A * B`` (or ``A x B``) in the prompt gives the operands; without one they are
    derived from a CRC of the prompt, so every prompt has a stable "correct" answer.
    """
    a, b = _operands(prompt)
    return a * b


def default_reply(prompt: str, index: int, rng: random.Random) -> str:
    """``"Let me compute. 17 * 23 = 391. The answer is 391."``: the correct product 5 times in
    8, else off by +1, -1 or +10 (drawn from ``rng``), so majority votes have something to do.
    """
    a, b = _operands(prompt)
    answer = a * b + rng.choice(_ANSWER_OFFSETS)
    return f"Let me compute. {a} * {b} = {answer}. The answer is {answer}."


# ---------------------------------------------------------------------------------------------
# Public configuration and counters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """Per-request fault probabilities; one uniform draw from a seeded rng picks at most one.

    The five probabilities must sum to at most 1. Only requests that passed validation and the
    rate limits draw.
    """

    server_error: float = 0.0
    """500 with ``{"error": {..., "type": "server_error"}}``."""
    rate_limit: float = 0.0
    """429 with ``retry-after: <retry_after>`` and a JSON error body."""
    timeout: float = 0.0
    """Hold the request ``timeout_delay`` seconds, then answer a 200 that is not billed."""
    malformed: float = 0.0
    """200 with a truncated, invalid JSON body; not billed."""
    fewer_choices: float = 0.0
    """Return between 1 and n-1 choices (nothing happens when one choice was asked for);
    billed for what it returned."""
    retry_after: float = 0.05
    timeout_delay: float = 5.0

    def __post_init__(self) -> None:
        total = 0.0
        for kind in FAULT_KINDS:
            p = getattr(self, kind)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Faults.{kind} must be a probability in [0, 1], got {p!r}")
            total += p
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault probabilities must sum to at most 1, got {total}")
        if self.retry_after < 0 or self.timeout_delay < 0:
            raise ValueError("Faults.retry_after and Faults.timeout_delay must be >= 0")


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys((*FAULT_KINDS, *ERROR_KINDS), 0)


@dataclass
class Stats:
    """Exact counters (see the module docstring for when each one moves)."""

    requests: int = 0
    """Every request received on a generation endpoint."""
    ok: int = 0
    """200 responses with a valid body (including ``fewer_choices`` ones)."""
    billed_prompt_tokens: int = 0
    billed_completion_tokens: int = 0
    choices: int = 0
    """Choices returned in valid responses."""
    faults: dict[str, int] = field(default_factory=_zero_counts)
    """By kind: every name in ``FAULT_KINDS`` and ``ERROR_KINDS``, starting at 0."""
    max_in_flight: int = 0
    """The most generation requests held at once."""

    @property
    def billed_tokens(self) -> int:
        """Billed prompt plus completion tokens."""
        return self.billed_prompt_tokens + self.billed_completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------


class _HTTPError(Exception):
    """An error answer decided while planning a request."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers


def _bad(message: str, param: str | None = None, code: str | None = None) -> _HTTPError:
    return _HTTPError(400, "bad_request", message, param=param, code=code)


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


class _Choice(NamedTuple):
    text: str
    finish_reason: str
    stop: str | None
    tokens: list[str]


class _Plan(NamedTuple):
    """What a generation request will answer once its delay has passed."""

    status: int
    body: bytes
    fault: str | None
    billed: bool
    prompt_tokens: int
    completion_tokens: int
    choices: int
    hold: float
    extra_headers: dict[str, str] | None


class _Parsed(NamedTuple):
    """A validated generation request."""

    model: str
    n: int
    prompts: list[str]
    prompt_token_counts: list[int]
    prompt_tokens: int
    max_tokens: int | None
    stops: tuple[str, ...]
    seed: int | None
    logprobs: int | None
    """Top-k logprobs asked for (0: only the sampled token's), None: no logprobs."""
    echo: bool


class _RateWindow:
    """Fixed windows of ``length`` seconds; a window starts at the first request after the last
    one ended. Requests are charged on admission, tokens (the billed ones) when answered."""

    __slots__ = ("length", "requests", "rpm", "start", "tokens", "tpm")

    def __init__(self, rpm: int | None, tpm: int | None, length: float) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.length = length
        self.start: float | None = None
        self.requests = 0
        self.tokens = 0

    def _expire(self, now: float) -> None:
        if self.start is not None and now - self.start >= self.length:
            self.start = None
            self.requests = 0
            self.tokens = 0

    def reset_in(self, now: float) -> float:
        self._expire(now)
        if self.start is None:
            return 0.0
        return max(0.0, self.start + self.length - now)

    def admit(self, now: float) -> tuple[str, int, int, float] | None:
        """None if admitted, else (limit kind, limit, used, seconds to the reset)."""
        self._expire(now)
        if self.start is None:
            self.start = now
        reset = self.start + self.length - now
        if self.rpm is not None and self.requests >= self.rpm:
            return "requests", self.rpm, self.requests, reset
        if self.tpm is not None and self.tokens >= self.tpm:
            return "tokens", self.tpm, self.tokens, reset
        self.requests += 1
        return None

    def charge(self, tokens: int, now: float) -> None:
        self._expire(now)
        if self.start is None:
            self.start = now
        self.tokens += tokens


def _fmt_seconds(x: float) -> str:
    """Seconds with up to 3 decimals and no trailing zeros: 0.05 -> "0.05", 2.0 -> "2"."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _fmt_duration(seconds: float) -> str:
    """OpenAI-style durations: "20ms", "7.66s", "1s", "2m59.56s", "1h0m0s"."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(round(seconds, 2), 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{_fmt_seconds(round(secs, 2))}s"
    if hours or minutes:
        out = f"{int(minutes)}m{out}"
    if hours:
        out = f"{int(hours)}h{out}"
    return out


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise _bad("content parts must be {'type': 'text', 'text': ...}", "messages")
        return "".join(parts)
    raise _bad("'content' must be a string, a list of text parts or null", "messages")


def _get_int(req: Mapping[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    value = req.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"Invalid type for '{name}': expected an integer.", name)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise _bad(f"Invalid '{name}': {value}; it must be {bound}.", name)
    return value


def _get_number(
    req: Mapping[str, Any], name: str, lo: float, hi: float | None = None
) -> float | None:
    value = req.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"Invalid type for '{name}': expected a number.", name)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise _bad(f"Invalid '{name}': {value}; it must be {bound}.", name)
    return float(value)


def _get_stops(req: Mapping[str, Any]) -> tuple[str, ...]:
    value = req.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise _bad("'stop' must be a string, a list of strings or null.", "stop")


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, str | None]:
    cut = -1
    matched: str | None = None
    for s in stops:
        i = text.find(s)
        if i != -1 and (cut == -1 or i < cut):
            cut, matched = i, s
    return (text[:cut], matched) if cut != -1 else (text, None)


def _token_logprob(token: str) -> float:
    return -round(0.005 + (zlib.crc32(token.encode("utf-8")) % 2000) / 1000.0, 4)


def _chat_logprobs(tokens: list[str], top: int) -> dict[str, Any]:
    content = []
    for tok in tokens:
        lp = _token_logprob(tok)
        tok_bytes = list(tok.encode("utf-8"))
        alternatives = [{"token": tok, "logprob": lp, "bytes": tok_bytes}]
        for j in range(1, top):
            alt = f"<alt{j}>"
            alternatives.append({"token": alt, "logprob": lp - j, "bytes": list(alt.encode())})
        content.append(
            {"token": tok, "logprob": lp, "bytes": tok_bytes, "top_logprobs": alternatives[:top]}
        )
    return {"content": content, "refusal": None}


def _legacy_logprobs(
    tokens: list[str], top: int, prompt_tokens: list[str] | None
) -> dict[str, Any]:
    all_tokens = [*(prompt_tokens or ()), *tokens]
    logprobs: list[float | None] = [_token_logprob(t) for t in all_tokens]
    if prompt_tokens:
        logprobs[0] = None  # nothing predicts the first prompt token
    top_list: list[dict[str, float] | None] | None = None
    if top > 0:
        top_list = []
        for tok, lp in zip(all_tokens, logprobs, strict=True):
            if lp is None:
                top_list.append(None)
                continue
            entry = {tok: lp}
            for j in range(1, top):
                entry[f"<alt{j}>"] = lp - j
            top_list.append(entry)
    offsets = []
    pos = 0
    for tok in all_tokens:
        offsets.append(pos)
        pos += len(tok)
    return {
        "tokens": all_tokens,
        "token_logprobs": logprobs,
        "top_logprobs": top_list,
        "text_offset": offsets,
    }


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


class FakeProvider:
    """A loopback OpenAI-compatible server with one provider's quirks (see the module docs).

    ``rate_window`` is the length of the rate-limit window in seconds (60: per minute; tests
    shorten it to see a reset). ``rpm``/``tpm`` are enforced per window only when given.
    ``echo_auth`` quotes the request's key and ``Authorization`` header in every error message,
    as some gateways and proxies do: for testing that a client keeps keys out of its errors.
    """

    def __init__(
        self,
        flavor: Flavor = "openai",
        *,
        reply: Reply | None = None,
        latency: float = 0.0,
        faults: Faults | None = None,
        seed: int = 0,
        api_key: str | None = None,
        models: Collection[str] | None = None,
        context_window: int = 8192,
        rpm: int | None = None,
        tpm: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_window: float = 60.0,
        echo_auth: bool = False,
        parallel: bool = False,
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; expected one of {', '.join(FLAVORS)}")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if context_window < 1:
            raise ValueError("context_window must be >= 1")
        if (rpm is not None and rpm < 0) or (tpm is not None and tpm < 0):
            raise ValueError("rpm and tpm must be >= 0")
        if rate_window <= 0:
            raise ValueError("rate_window must be > 0")
        self.flavor: Flavor = flavor
        #: llamacpp only: imitate llama.cpp's C++ server started with ``--parallel``, which
        #: honours ``n`` but whose usage counts the completion tokens of one choice (the
        #: last); ``Stats`` still counts every choice generated.
        self.parallel = parallel
        self.reply: Reply = reply or default_reply
        self.latency = latency
        self.faults = faults or Faults()
        self.seed = seed
        self.api_key = api_key
        self.models: tuple[str, ...] | None = tuple(models) if models is not None else None
        self.context_window = context_window
        self.rpm = rpm
        self.tpm = tpm
        self.host = host
        self.port = port
        self.echo_auth = echo_auth
        self.stats = Stats()

        self._model_set = frozenset(self.models) if self.models is not None else None
        self._default_model = self.models[0] if self.models else DEFAULT_MODEL
        self._auth = f"Bearer {api_key}" if api_key is not None else None
        self._fault_rng = random.Random(f"{seed}:faults")
        self._reply_rng = random.Random(seed)
        cumulative = 0.0
        self._fault_table: list[tuple[str, float]] = []
        for kind in FAULT_KINDS:
            p = getattr(self.faults, kind)
            if p > 0:
                cumulative += p
                self._fault_table.append((kind, cumulative))
        self._window = _RateWindow(rpm, tpm, rate_window)
        self._ids = itertools.count(1)
        self._in_flight = 0
        self._runner: web.ServerRunner | None = None
        self._closing: asyncio.Event | None = None
        self._strict_openai = flavor in ("openai", "groq", "cerebras")

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; ``base_url`` is valid afterwards. ``port=0`` picks a free port."""
        if self._runner is not None:
            raise RuntimeError("FakeProvider is already started")
        self._closing = asyncio.Event()
        server = web.Server(self._dispatch, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=_BACKLOG)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving. Held (timeout-fault) requests are released at once; other requests
        still running after a short grace period are cancelled and not billed."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._closing is not None:
            self._closing.set()
        await runner.cleanup()

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1`` (after ``start``)."""
        if self._runner is None:
            raise RuntimeError("FakeProvider is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def in_flight(self) -> int:
        """Generation requests being handled right now."""
        return self._in_flight

    def reset_stats(self) -> None:
        """Zero the counters in place (references to ``stats`` stay valid). Call it while no
        request is in flight, or those requests land half in the old counts. The rate-limit
        window and the random streams are not reset."""
        fresh = Stats(max_in_flight=self._in_flight)
        for f in fields(Stats):
            setattr(self.stats, f.name, getattr(fresh, f.name))

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == CHAT_PATH:
            return await self._generation(request, chat=True)
        if path == COMPLETIONS_PATH:
            return await self._generation(request, chat=False)
        if path == MODELS_PATH and request.method == "GET":
            return self._list_models(request)
        if path == STATS_PATH and request.method == "GET":
            stats = {**self.stats.as_dict(), "in_flight": self._in_flight}
            return _json_response(200, json.dumps(stats).encode(), {})
        if path == RESET_PATH and request.method == "POST":
            self.reset_stats()
            return _json_response(200, b"{}", {})
        status = 405 if path in (MODELS_PATH, STATS_PATH, RESET_PATH) else 404
        message = f"Invalid URL ({request.method} {path})"
        return _json_response(status, _error_body(message, "invalid_request_error", None), {})

    def _list_models(self, request: web.BaseRequest) -> web.Response:
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            return _json_response(401, _unauthorized_body(), {})
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": self.flavor}
            for m in (self.models or (DEFAULT_MODEL,))
        ]
        return _json_response(200, json.dumps({"object": "list", "data": data}).encode(), {})

    async def _generation(self, request: web.BaseRequest, *, chat: bool) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        self._in_flight += 1
        if self._in_flight > stats.max_in_flight:
            stats.max_in_flight = self._in_flight
        try:
            try:
                plan = await self._plan(request, chat)
            except _HTTPError as err:
                stats.faults[err.kind] += 1
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                headers = self._rate_headers()
                if err.headers:
                    headers.update(err.headers)
                message = self._echoed(err.message, request)
                body = _error_body(message, err.type, err.code, err.param)
                return _json_response(err.status, body, headers)

            if plan.fault is not None:
                stats.faults[plan.fault] += 1
            if plan.hold > 0:
                await self._hold(plan.hold)
            elif self.latency > 0:
                await asyncio.sleep(self.latency)
            if plan.billed:
                stats.ok += 1
                stats.choices += plan.choices
                stats.billed_prompt_tokens += plan.prompt_tokens
                stats.billed_completion_tokens += plan.completion_tokens
                self._window.charge(plan.prompt_tokens + plan.completion_tokens, time.monotonic())
            headers = self._rate_headers()
            if plan.extra_headers:
                headers.update(plan.extra_headers)
            body = plan.body
            if self.echo_auth and plan.status >= 400:  # an injected fault's error body
                error = json.loads(body)["error"]
                error["message"] = self._echoed(error["message"], request)
                body = json.dumps({"error": error}).encode()
            return _json_response(plan.status, body, headers)
        finally:
            self._in_flight -= 1

    def _echoed(self, message: str, request: web.BaseRequest) -> str:
        """``message``, quoting the request's credentials when ``echo_auth`` is set."""
        if not self.echo_auth:
            return message
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ")
        return f"{message} (key received: {key}; headers: {{'Authorization': '{auth}'}})"

    async def _hold(self, seconds: float) -> None:
        closing = self._closing
        if closing is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(closing.wait(), seconds)

    # -- planning (no awaits after the body is read) ---------------------------------------------

    async def _plan(self, request: web.BaseRequest, chat: bool) -> _Plan:
        if request.method != "POST":
            raise _HTTPError(405, "bad_request", f"Invalid method {request.method}; use POST.")
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            raise _HTTPError(
                401,
                "unauthorized",
                "Incorrect API key provided. You can find your API key in your dashboard.",
                code="invalid_api_key",
            )
        raw = await request.read()
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            raise _bad(
                "We could not parse the JSON body of your request. The body must be a JSON object."
            )
        try:
            return self._plan_parsed(req, chat)
        except _HTTPError:
            raise
        except Exception as exc:  # a bug in `reply`: say so instead of a bare 500
            raise _HTTPError(
                500,
                "internal_error",
                f"fake provider: the reply function raised {exc!r}",
                type_="server_error",
            ) from exc

    def _plan_parsed(self, req: dict[str, Any], chat: bool) -> _Plan:
        p = self._parse(req, chat)
        self._check_context(p, chat)
        self._admit(p.model)
        fault = self._draw_fault()
        if fault == "server_error":
            return self._error_plan(
                500,
                fault,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            )
        if fault == "rate_limit":
            retry = _fmt_seconds(self.faults.retry_after)
            return self._error_plan(
                429,
                fault,
                f"Rate limit reached for {p.model}. Please try again in {retry}s.",
                "requests",
                "rate_limit_exceeded",
                {"retry-after": retry},
            )
        keep = len(p.prompts) * p.n
        if fault == "fewer_choices":
            if keep > 1:
                keep = self._fault_rng.randint(1, keep - 1)
            else:
                fault = None  # one choice asked for: nothing to drop
        body, completion_tokens, choices = self._completion_body(p, chat, keep)
        if fault == "malformed":
            # a strict prefix of a JSON object is never valid JSON
            return _Plan(200, body[: max(1, len(body) // 2)], fault, False, 0, 0, 0, 0.0, None)
        if fault == "timeout":
            return _Plan(200, body, fault, False, 0, 0, 0, self.faults.timeout_delay, None)
        return _Plan(200, body, fault, True, p.prompt_tokens, completion_tokens, choices, 0.0, None)

    def _parse(self, req: dict[str, Any], chat: bool) -> _Parsed:
        """Validate the request the way this flavor does; raise ``_HTTPError`` if it would."""
        model = self._parse_model(req)
        if req.get("stream"):
            raise _bad("stream=true is not supported by the fake provider.", "stream")
        n = self._parse_n(req)
        flavor = self.flavor
        if flavor == "groq":
            for name in ("logprobs", "top_logprobs", "logit_bias"):
                if req.get(name) is not None:
                    raise _bad(f"'{name}' is not supported by this model", name)
        stops = _get_stops(req)
        if self._strict_openai and len(stops) > 4:
            raise _bad(f"'stop' has {len(stops)} sequences; at most 4 are supported.", "stop")
        temperature_max = 1.5 if flavor == "cerebras" else 2.0 if self._strict_openai else None
        _get_number(req, "temperature", 0.0, temperature_max)
        _get_number(req, "top_p", 0.0, 1.0)
        seed = _get_int(req, "seed", -(2**63), 2**63 - 1)
        if chat:
            return self._parse_chat(req, model, n, stops, seed)
        return self._parse_text(req, model, n, stops, seed)

    def _parse_model(self, req: Mapping[str, Any]) -> str:
        model = req.get("model")
        if model is None:
            if self._strict_openai:
                raise _bad("you must provide a model parameter", "model")
            return self._default_model
        if not isinstance(model, str):
            raise _bad("Invalid type for 'model': expected a string.", "model")
        if (
            self._model_set is not None
            and self.flavor != "llamacpp"  # llama.cpp serves its one model under any name
            and model not in self._model_set
        ):
            raise _HTTPError(
                404,
                "model_not_found",
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
        return model

    def _parse_n(self, req: Mapping[str, Any]) -> int:
        flavor = self.flavor
        if flavor == "llamacpp" and not self.parallel:
            return 1  # silently ignored, like llama-cpp-python's server
        if flavor in ("groq", "cerebras"):
            n = req.get("n")
            if n is not None and n != 1:
                if flavor == "groq":
                    raise _bad("'n' : number must be at most 1", "n")
                raise _bad("n: only n=1 is supported", "n")
            return 1
        return _get_int(req, "n", 1, 128 if flavor == "openai" else None) or 1

    def _parse_chat(
        self,
        req: Mapping[str, Any],
        model: str,
        n: int,
        stops: tuple[str, ...],
        seed: int | None,
    ) -> _Parsed:
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("'messages' must be a non-empty array.", "messages")
        contents: list[str] = []
        prompt_tokens = 0
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _bad("each message must be an object with a 'role'.", "messages")
            text = _content_text(m.get("content"))
            contents.append(text)
            prompt_tokens += count_tokens(text) + CHAT_TOKENS_PER_MESSAGE
        max_tokens = _get_int(req, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = _get_int(req, "max_tokens", 1)
        flag = req.get("logprobs")
        if flag is not None and not isinstance(flag, bool):
            raise _bad("Invalid type for 'logprobs': expected a boolean.", "logprobs")
        top = _get_int(req, "top_logprobs", 0, 20)
        if top is not None and not flag:
            raise _bad("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
        return _Parsed(
            model=model,
            n=n,
            prompts=["\n".join(contents)],
            prompt_token_counts=[prompt_tokens],
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stops=stops,
            seed=seed,
            logprobs=(top or 0) if flag else None,
            echo=False,
        )

    def _parse_text(
        self,
        req: Mapping[str, Any],
        model: str,
        n: int,
        stops: tuple[str, ...],
        seed: int | None,
    ) -> _Parsed:
        prompt = req.get("prompt")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if self.flavor == "llamacpp":
                raise _HTTPError(
                    500,
                    "unsupported",
                    "a list of prompts is not supported by this server",
                    type_="server_error",
                )
            prompts = list(prompt)
        else:
            raise _bad("'prompt' must be a string or a non-empty array of strings.", "prompt")
        counts = [count_tokens(p) for p in prompts]
        max_tokens = _get_int(req, "max_tokens", 1)
        echo = req.get("echo")
        if echo is not None and not isinstance(echo, bool):
            raise _bad("Invalid type for 'echo': expected a boolean.", "echo")
        return _Parsed(
            model=model,
            n=n,
            prompts=prompts,
            prompt_token_counts=counts,
            prompt_tokens=sum(counts),
            max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            stops=stops,
            seed=seed,
            logprobs=_get_int(req, "logprobs", 0, 5 if self.flavor == "openai" else 20),
            echo=bool(echo),
        )

    def _check_context(self, p: _Parsed, chat: bool) -> None:
        window = self.context_window
        longest = max(p.prompt_token_counts)
        asked = longest + (p.max_tokens or 0)
        if asked > window or (p.max_tokens is None and longest >= window):
            where = "messages" if chat else "prompt"
            raise _HTTPError(
                400,
                "context_length_exceeded",
                f"This model's maximum context length is {window} tokens. However, you "
                f"requested {asked} tokens ({longest} in the {where}, {p.max_tokens or 0} in "
                f"the completion). Please reduce the length of the {where} or completion.",
                code="context_length_exceeded",
                param=where,
            )

    def _admit(self, model: str) -> None:
        """Charge one request to the rate window; 429 if rpm/tpm are given and reached."""
        refused = self._window.admit(time.monotonic())
        if refused is None:
            return
        kind, limit, used, reset = refused
        unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
        raise _HTTPError(
            429,
            "rate_limited",
            f"Rate limit reached for {model} on {unit}: Limit {limit}, Used {used}, "
            f"Requested 1. Please try again in {_fmt_seconds(reset)}s.",
            type_=kind,
            code="rate_limit_exceeded",
            headers={"retry-after": _fmt_seconds(max(reset, 0.001))},
        )

    def _draw_fault(self) -> str | None:
        """One uniform draw per admitted request picks at most one fault."""
        if not self._fault_table:
            return None
        u = self._fault_rng.random()
        for kind, upto in self._fault_table:
            if u < upto:
                return kind
        return None

    def _completion_body(self, p: _Parsed, chat: bool, keep: int) -> tuple[bytes, int, int]:
        """The JSON body with the first ``keep`` choices: (body, completion tokens, choices)."""
        echo_tokens = (
            [tokenize(text) for text in p.prompts] if p.echo and p.logprobs is not None else None
        )
        choices: list[dict[str, Any]] = []
        completion_tokens = last_tokens = 0
        for p_index, prompt_text in enumerate(p.prompts):
            limit = (
                p.max_tokens
                if p.max_tokens is not None
                else self.context_window - p.prompt_token_counts[p_index]
            )
            for j in range(min(p.n, keep - p_index * p.n)):
                c = self._generate(prompt_text, j, p.seed, p.stops, limit)
                completion_tokens += len(c.tokens)
                last_tokens = len(c.tokens)
                choices.append(
                    self._choice_json(
                        p_index * p.n + j,
                        c,
                        chat,
                        p.logprobs,
                        prompt_text if p.echo else None,
                        echo_tokens[p_index] if echo_tokens else None,
                    )
                )
        reported = last_tokens if self.parallel and self.flavor == "llamacpp" else completion_tokens
        payload: dict[str, Any] = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-fake{next(self._ids):012d}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": p.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": p.prompt_tokens,
                "completion_tokens": reported,
                "total_tokens": p.prompt_tokens + reported,
            },
        }
        if self.flavor == "groq":  # what Groq adds to every completion (litellm reads it)
            payload["system_fingerprint"] = "fp_fake"
            payload["x_groq"] = {"id": f"req_fake{next(self._ids):012d}"}
            payload["service_tier"] = "on_demand"
        body = json.dumps(payload, separators=(",", ":")).encode()
        return body, completion_tokens, len(choices)

    def _error_plan(
        self,
        status: int,
        fault: str,
        message: str,
        type_: str,
        code: str | None,
        headers: dict[str, str] | None = None,
    ) -> _Plan:
        body = _error_body(message, type_, code)
        return _Plan(status, body, fault, False, 0, 0, 0, 0.0, headers)

    def _generate(
        self,
        prompt_text: str,
        index: int,
        seed: int | None,
        stops: tuple[str, ...],
        max_tokens: int,
    ) -> _Choice:
        rng = (
            random.Random(f"{seed}:{prompt_text}:{index}") if seed is not None else self._reply_rng
        )
        text, matched = _cut_at_stop(self.reply(prompt_text, index, rng), stops)
        tokens = _TOKEN_RE.findall(text)
        if len(tokens) > max_tokens:
            del tokens[max_tokens:]
            return _Choice("".join(tokens), "length", None, tokens)
        return _Choice(text, "stop", matched, tokens)

    def _choice_json(
        self,
        index: int,
        c: _Choice,
        chat: bool,
        logprobs: int | None,
        echo_prompt: str | None,
        echo_tokens: list[str] | None,
    ) -> dict[str, Any]:
        choice: dict[str, Any]
        if chat:
            choice = {
                "index": index,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": _chat_logprobs(c.tokens, logprobs) if logprobs is not None else None,
                "finish_reason": c.finish_reason,
            }
        else:
            text = c.text if echo_prompt is None else echo_prompt + c.text
            choice = {
                "index": index,
                "text": text,
                "logprobs": (
                    _legacy_logprobs(c.tokens, logprobs, echo_tokens)
                    if logprobs is not None
                    else None
                ),
                "finish_reason": c.finish_reason,
            }
        if self.flavor == "vllm":
            choice["stop_reason"] = c.stop
        return choice

    # -- headers --------------------------------------------------------------------------------

    def _rate_headers(self) -> dict[str, str]:
        flavor = self.flavor
        if not self._strict_openai:
            return {}
        w = self._window
        reset = w.reset_in(time.monotonic())
        limit_r = self.rpm if self.rpm is not None else UNLIMITED_REQUESTS
        limit_t = self.tpm if self.tpm is not None else UNLIMITED_TOKENS
        left_r = str(max(0, limit_r - w.requests))
        left_t = str(max(0, limit_t - w.tokens))
        reset_r = reset if w.requests else 0.0
        reset_t = reset if w.tokens else 0.0
        if flavor == "cerebras":
            return {
                "x-ratelimit-limit-requests-day": str(limit_r),
                "x-ratelimit-limit-tokens-minute": str(limit_t),
                "x-ratelimit-remaining-requests-day": left_r,
                "x-ratelimit-remaining-tokens-minute": left_t,
                "x-ratelimit-reset-requests-day": f"{reset_r:.3f}",
                "x-ratelimit-reset-tokens-minute": f"{reset_t:.3f}",
            }
        return {
            "x-ratelimit-limit-requests": str(limit_r),
            "x-ratelimit-limit-tokens": str(limit_t),
            "x-ratelimit-remaining-requests": left_r,
            "x-ratelimit-remaining-tokens": left_t,
            "x-ratelimit-reset-requests": _fmt_duration(reset_r),
            "x-ratelimit-reset-tokens": _fmt_duration(reset_t),
        }


def _json_response(status: int, body: bytes, headers: dict[str, str]) -> web.Response:
    headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=body, headers=headers)


def _unauthorized_body() -> bytes:
    return _error_body(
        "Incorrect API key provided. You can find your API key in your dashboard.",
        "invalid_request_error",
        "invalid_api_key",
    )


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ttc.testing.fake_provider",
        description="Serve a fake OpenAI-compatible provider on loopback until SIGTERM/SIGINT.",
    )
    parser.add_argument("--flavor", choices=FLAVORS, default="openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--models", default=None, help="comma-separated model names")
    parser.add_argument("--context-window", type=int, default=8192)
    parser.add_argument("--rpm", type=int, default=None)
    parser.add_argument("--tpm", type=int, default=None)
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument(
        "--echo-auth", action="store_true", help="quote the request's key in error messages"
    )
    for kind in FAULT_KINDS:
        parser.add_argument(
            f"--{kind.replace('_', '-')}",
            type=float,
            default=0.0,
            metavar="P",
            help=f"probability of the {kind} fault",
        )
    parser.add_argument("--retry-after", type=float, default=0.05)
    parser.add_argument("--timeout-delay", type=float, default=5.0)
    parser.add_argument(
        "--print-stats", action="store_true", help="print the counters as JSON to stderr on exit"
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    faults = Faults(
        **{kind: getattr(args, kind) for kind in FAULT_KINDS},
        retry_after=args.retry_after,
        timeout_delay=args.timeout_delay,
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    provider = FakeProvider(
        args.flavor,
        latency=args.latency,
        faults=faults,
        seed=args.seed,
        api_key=args.api_key,
        models=models,
        context_window=args.context_window,
        rpm=args.rpm,
        tpm=args.tpm,
        host=args.host,
        port=args.port,
        rate_window=args.rate_window,
        echo_auth=args.echo_auth,
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows
            loop.add_signal_handler(sig, done.set)
    await provider.start()
    print(f"listening on {provider.base_url}", flush=True)
    try:
        await done.wait()
    finally:
        await provider.stop()
        if args.print_stats:
            print(json.dumps({"stats": provider.stats.as_dict()}), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m ttc.testing.fake_provider`` entry point."""
    args = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Windows: no signal handlers
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
