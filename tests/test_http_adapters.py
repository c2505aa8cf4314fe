"""The OpenAI-compatible adapters against the loopback fake provider: the real client code,
the real HTTP, the providers' documented quirks and errors."""

from __future__ import annotations

import logging
import time

import pytest

from ttc import Budget, ConfigError, SamplingParams
from ttc.adapters import Cerebras, Groq, LlamaCppServer, OpenAI, OpenAICompatible, VLLMServer
from ttc.errors import (
    AuthenticationError,
    ContextLengthError,
    NotFoundError,
    RateLimitError,
)
from ttc.runtime.model import Capabilities
from ttc.runtime.retry import RetryPolicy
from ttc.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

KEY = "sk-test-secret"


def _usage_matches(model: OpenAICompatible, server: FakeProvider) -> None:
    usage = model.usage
    assert usage.requests == server.stats.requests
    assert usage.prompt_tokens == server.stats.billed_prompt_tokens
    assert usage.completion_tokens == server.stats.billed_completion_tokens


async def test_openai_native_n_is_one_request() -> None:
    async with FakeProvider("openai", api_key=KEY) as server:
        async with OpenAI("gpt-4o-mini", base_url=server.base_url, api_key=KEY) as model:
            out = await model.generate("What is 17 * 23?", n=16)
        assert len(out) == 16
        assert server.stats.requests == 1
        assert all(c.text and c.finish_reason == "stop" for c in out)
        _usage_matches(model, server)
        # gpt-4o-mini is in the price table: the cost is real and positive.
        assert model.usage.cost_usd > 0
        assert model.usage.unpriced_models == frozenset()


async def test_groq_fans_out_and_refuses_logprobs_before_sending() -> None:
    async with FakeProvider("groq", api_key=KEY) as server:
        model = Groq("llama-3.1-8b-instant", base_url=server.base_url, api_key=KEY)
        out = await model.generate("hi", n=5)
        assert len(out) == 5
        assert server.stats.requests == 5
        with pytest.raises(ConfigError, match="logprobs"):
            await model.generate("hi", SamplingParams(logprobs=True))
        assert server.stats.requests == 5
        _usage_matches(model, server)
        # Not in the price table: reported, not priced at zero silently.
        assert model.usage.unpriced_models == {"groq/llama-3.1-8b-instant"}
        await model.aclose()


async def test_cerebras_stop_limit_and_temperature() -> None:
    reply = lambda prompt, i, rng: "one two STOP5 three STOP1 four"  # noqa: E731
    async with FakeProvider("cerebras", api_key=KEY, reply=reply) as server:
        model = Cerebras("llama3.1-8b", base_url=server.base_url, api_key=KEY)
        stops = ("STOP1", "STOP2", "STOP3", "STOP4", "STOP5", "STOP6")
        out = await model.generate("x", SamplingParams(stop=stops, temperature=0.5))
        # The server accepts only four stop strings; the fifth is applied on our side.
        assert out[0].text == "one two "
        assert out[0].finish_reason == "stop"
        with pytest.raises(ConfigError, match="temperature"):
            await model.generate("x", SamplingParams(temperature=1.8))
        assert server.stats.faults["bad_request"] == 0
        await model.aclose()


async def test_fewer_choices_than_asked_are_refilled(caplog: pytest.LogCaptureFixture) -> None:
    # The llama.cpp server silently ignores n; an adapter that believes in native n must notice.
    async with FakeProvider("llamacpp") as server:
        model = OpenAICompatible(
            "gemma", base_url=server.base_url, capabilities=Capabilities(native_n=True)
        )
        with caplog.at_level(logging.WARNING, logger="ttc.model"):
            out = await model.generate("q", n=4)
        assert len(out) == 4
        assert "returned 1 of 4 choices" in caplog.text
        _usage_matches(model, server)
        await model.aclose()
        # The preset knows the quirk and fans out from the start.
        preset = LlamaCppServer("gemma", base_url=server.base_url)
        server.reset_stats()
        assert len(await preset.generate("q", n=3)) == 3
        assert server.stats.requests == 3
        await preset.aclose()


async def test_completions_endpoint_and_logprobs() -> None:
    async with FakeProvider("vllm") as server:
        model = VLLMServer("m", base_url=server.base_url, endpoint="completions")
        out = await model.generate(
            "Question: 2+2?\nAnswer:", SamplingParams(logprobs=True, top_logprobs=2), n=2
        )
        assert len(out) == 2
        assert out[0].logprobs and out[0].logprobs[0].top
        assert model.usage.cost_usd == 0.0 and not model.usage.unpriced_models
        with pytest.raises(ConfigError, match="raw text"):
            await model.generate([{"role": "user", "content": "hi"}])  # type: ignore[list-item]
        await model.aclose()


async def test_errors_are_typed_not_retried_and_never_show_the_key() -> None:
    async with FakeProvider("openai", api_key=KEY, models=["known"], context_window=64) as server:
        bad_key = OpenAI("known", base_url=server.base_url, api_key="sk-wrong-key-123")
        with pytest.raises(AuthenticationError) as info:
            await bad_key.generate("hi")
        assert "sk-wrong-key-123" not in str(info.value)
        assert "sk-wrong-key-123" not in repr(bad_key)
        assert server.stats.requests == 1  # 401 is not retried
        await bad_key.aclose()

        model = OpenAI("unknown", base_url=server.base_url, api_key=KEY)
        with pytest.raises(NotFoundError):
            await model.generate("hi")
        await model.aclose()

        model = OpenAI("known", base_url=server.base_url, api_key=KEY)
        with pytest.raises(ContextLengthError):
            await model.generate("hi", SamplingParams(max_tokens=100))
        assert server.stats.requests == 3
        await model.aclose()


async def test_missing_key_fails_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"api_key.*GROQ_API_KEY"):
        Groq("llama-3.1-8b-instant")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-from-env")
    model = Groq("llama-3.1-8b-instant")
    assert model.api_key is not None
    assert "gsk-from-env" not in repr(model) and "gsk-from-env" not in repr(model.api_key)


async def test_rate_limit_retry_after_is_honoured() -> None:
    faults = Faults(rate_limit=0.5, retry_after=0.05)
    async with FakeProvider("groq", api_key=KEY, faults=faults, seed=3) as server:
        model = Groq("m", base_url=server.base_url, api_key=KEY, retry=RetryPolicy(max_attempts=20))
        out = await model.generate("q", n=8)
        assert len(out) == 8
        assert server.stats.faults["rate_limit"] > 0
        _usage_matches(model, server)
        await model.aclose()

    async with FakeProvider("groq", api_key=KEY, faults=Faults(rate_limit=1.0)) as server:
        model = Groq("m", base_url=server.base_url, api_key=KEY, retry=RetryPolicy(max_attempts=2))
        with pytest.raises(RateLimitError):
            await model.generate("q")
        assert server.stats.requests == 2
        await model.aclose()


async def test_provider_budget_stops_before_the_limit() -> None:
    async with FakeProvider("openai", api_key=KEY) as server:
        model = OpenAI(
            "gpt-4o-mini", base_url=server.base_url, api_key=KEY, budget=Budget(requests=3)
        )
        from ttc.errors import BudgetExceeded

        for _ in range(3):
            await model.generate("q")
        with pytest.raises(BudgetExceeded, match="requests limit 3"):
            await model.generate("q")
        assert server.stats.requests == 3
        await model.aclose()


async def test_server_rate_limit_headers_are_learned() -> None:
    async with FakeProvider("groq", api_key=KEY, tpm=400) as server:
        model = Groq("m", base_url=server.base_url, api_key=KEY)
        await model.generate("q", SamplingParams(max_tokens=20))
        # The provider's tokens-per-minute limit is adopted from its headers.
        bucket = model.rate_limiter._tokens
        assert bucket is not None and bucket.capacity == 400
        await model.aclose()


class _Scripted:
    """A loopback OpenAI-compatible server whose every answer comes from ``answer(index)``:
    for the odd but real responses the fake provider does not send."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.requests = 0

    async def __aenter__(self) -> str:
        from aiohttp import web

        async def handle(request: web.Request) -> web.StreamResponse:
            await request.read()
            self.requests += 1
            return self.answer(self.requests - 1)  # type: ignore[operator,no-any-return]

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def _chat(text: str, **extra: object) -> dict[str, object]:
    return {
        "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}],
        **extra,
    }


async def test_odd_success_bodies_keep_the_paid_answer_or_say_what_the_provider_said() -> None:
    from aiohttp import web

    from ttc.errors import MalformedResponseError

    answers = {
        "203": web.json_response(_chat("four", usage={"prompt_tokens": 3}), status=203),
        "usage": web.json_response(_chat("four", usage="unavailable")),
        "error": web.json_response({"error": {"message": "upstream model is overloaded"}}),
    }
    for case, answer in answers.items():
        async with _Scripted(lambda i, a=answer: a) as url:
            model = OpenAICompatible("m", base_url=url, retry=RetryPolicy(max_attempts=1))
            if case == "error":  # a 200 carrying an error: retried, and its message kept
                with pytest.raises(MalformedResponseError, match="upstream model is overloaded"):
                    await model.generate("q", SamplingParams(max_tokens=8))
            else:  # a 203, or a usage that is not an object: the answer was paid for
                got = await model.generate("q", SamplingParams(max_tokens=8))
                assert [c.text for c in got] == ["four"]
                assert model.usage.completion_tokens == 8  # not reported: the bound is charged
            await model.aclose()


async def test_a_429_without_retry_after_waits_for_the_exhausted_counts_reset() -> None:
    from aiohttp import web

    limited = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "0.4s"}

    def answer(index: int) -> web.Response:
        if index == 0:
            return web.json_response({"error": {"message": "tpm"}}, status=429, headers=limited)
        return web.json_response(_chat("ok"))

    async with _Scripted(answer) as url:
        model = OpenAICompatible("m", base_url=url, retry=RetryPolicy(initial_backoff=0))
        start = time.perf_counter()
        await model.generate("q", SamplingParams(max_tokens=8))
        assert time.perf_counter() - start >= 0.35  # waited for the reset, not a 0 s backoff
        await model.aclose()


# ---------------------------------------------------------------- retries that say what they do


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "ttc.retry" and r.levelno == logging.INFO and "retrying in" in r.getMessage()
    ]


async def test_a_refused_connection_is_retried_briefly_logged_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bug 4: a refused connection took 8 silent attempts over 17.6 s. Now: a short bounded
    retry (a server may be restarting), each retry logged, and an error that names the URL and
    the attempts and says it will fail every request alike."""
    from ttc.errors import ProviderUnreachableError

    url = _closed_port_url()
    model = OpenAICompatible("m", base_url=url, retry=RetryPolicy(initial_backoff=0.01))
    with (
        caplog.at_level(logging.INFO, logger="ttc"),
        pytest.raises(ProviderUnreachableError) as info,
    ):
        await model.generate("q")
    error = info.value
    assert error.attempts == 3 and error.fatal and error.url == f"{url}/chat/completions"
    assert f"{url}/chat/completions" in str(error) and "3 attempts" in str(error)
    lines = _retry_lines(caplog)
    assert len(lines) == 2
    assert "attempt 1 of at most 3 failed" in lines[0] and "cannot connect" in lines[0]
    assert url in lines[0] and "openai-compatible/m" in lines[0]
    assert any("giving up" in r.getMessage() for r in caplog.records)
    await model.aclose()


async def test_a_connection_that_never_opened_is_refunded_to_the_budget() -> None:
    """Nothing reached the provider: the budget keeps no worst case for it (the attempts still
    count as requests), and the usage does not call it undelivered."""
    from ttc.errors import ProviderUnreachableError

    model = OpenAICompatible(
        "m",
        base_url=_closed_port_url(),
        retry=RetryPolicy(initial_backoff=0.01),
        budget=Budget(tokens=10_000),
    )
    with pytest.raises(ProviderUnreachableError):
        await model.generate("q")
    assert model.ledger is not None
    assert model.ledger.spent_tokens == 0 and model.ledger.spent_requests == 3
    assert model.usage.undelivered_requests == 0
    await model.aclose()


async def test_a_server_that_accepts_and_never_answers_costs_max_timeouts_attempts() -> None:
    """Bug 4: a port that accepts and never answers took 29 s with ``timeout=1`` (8 attempts
    plus growing backoff). Timeouts now get ``max_timeouts`` attempts (default 2)."""
    import asyncio

    from ttc.errors import ProviderTimeoutError

    connections = 0
    never = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await never.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    model = OpenAICompatible(
        "m", base_url=f"http://127.0.0.1:{port}/v1", timeout=0.2, retry=RetryPolicy()
    )
    with pytest.raises(ProviderTimeoutError, match=r"no answer within 0.2 s .*2 attempts"):
        await model.generate("q")
    assert connections == 2
    never.set()
    server.close()
    await model.aclose()


def _page(status: int, title: str) -> object:
    from aiohttp import web

    html = (
        "<!DOCTYPE HTML>\n<html><head><title>"
        + title
        + "</title></head><body><h1>"
        + title
        + "</h1>"
        + "<p>filler</p>" * 200
        + "</body></html>"
    )
    return web.Response(status=status, text=html, content_type="text/html")


async def test_a_web_page_that_is_not_the_api_is_not_retried_and_is_summarized() -> None:
    """Bug 4: a 501 HTML page from something that is not an API was retried 8 times and its
    HTML landed in the message. Pages from a server that is not the API fail at once, with a
    summary; a gateway's 502 page (the API behind it restarting) is still retried."""
    from ttc.errors import NotAnAPIError, ServerError

    cases = [
        (501, "Error response", NotAnAPIError, 1),  # python -m http.server answering a POST
        (405, "405 Not Allowed", NotAnAPIError, 1),
        (500, "Internal error", NotAnAPIError, 1),
        (404, "Page not found", NotFoundError, 1),
        (502, "502 Bad Gateway", ServerError, 3),
    ]
    for status, title, kind, requests in cases:
        async with _Scripted(lambda i, s=status, t=title: _page(s, t)) as url:
            policy = RetryPolicy(max_attempts=3, initial_backoff=0)
            model = OpenAICompatible("m", base_url=url, retry=policy)
            with pytest.raises(kind) as info:
                await model.generate("q")
            await model.aclose()
        message = str(info.value)
        assert type(info.value) is kind, (status, type(info.value))
        assert "<" not in message and "filler" not in message and title in message
        assert f"HTTP {status}" in message and url in message
        assert info.value.fatal == (kind is not ServerError)
        assert info.value.attempts == requests


async def test_retries_are_logged_and_a_request_that_succeeds_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeProvider("openai", api_key=KEY) as server:
        model = OpenAI("gpt-4o-mini", base_url=server.base_url, api_key=KEY)
        with caplog.at_level(logging.DEBUG, logger="ttc"):
            await model.generate("q", n=2)
        assert not [r for r in caplog.records if r.name.startswith("ttc")]
        await model.aclose()

    faults = Faults(server_error=1.0)
    async with FakeProvider("openai", api_key=KEY, faults=faults) as server:
        policy = RetryPolicy(max_attempts=3, initial_backoff=0)
        model = OpenAI("gpt-4o-mini", base_url=server.base_url, api_key=KEY, retry=policy)
        with caplog.at_level(logging.INFO, logger="ttc"), pytest.raises(Exception) as info:
            await model.generate("q")
        lines = _retry_lines(caplog)
        assert [line.split(" failed")[0].split(": ")[-1] for line in lines] == [
            "attempt 1 of at most 3",
            "attempt 2 of at most 3",
        ]
        assert all(
            "HTTP 500 ServerError" in line and "retrying in 0.00 s" in line for line in lines
        )
        assert server.stats.requests == 3 and info.value.attempts == 3  # type: ignore[attr-defined]
        assert "3 attempts" in str(info.value)
        await model.aclose()


async def test_a_spent_quota_is_not_retried_and_is_fatal() -> None:
    from aiohttp import web

    body = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    async with _Scripted(lambda i: web.json_response(body, status=429)) as url:
        model = OpenAICompatible("m", base_url=url)
        with pytest.raises(RateLimitError) as info:
            await model.generate("q")
        await model.aclose()
    assert info.value.fatal and not info.value.retryable and info.value.attempts == 1


# ---------------------------------------------------------------- keys echoed by a gateway

LONG_KEY = "sk-proj-Zq8vN3xK0pL7mW2rT5yB9cD4fG6hJ1"


def _assert_no_key(exc: BaseException, key: str, *, logs: str = "", traces: str = "") -> None:
    """The key is nowhere a user or a log collector could see it: the message, the repr, the
    formatted traceback, any exception in the chain and its attributes, logs, traces."""
    import traceback

    assert key not in str(exc) and key not in repr(exc)
    assert key not in "".join(traceback.format_exception(exc))
    seen: BaseException | None = exc
    while seen is not None:
        assert key not in str(seen) and key not in repr(seen)
        assert key not in repr({k: v for k, v in vars(seen).items()})
        seen = seen.__cause__ or seen.__context__
    assert key not in logs and key not in traces


async def test_keys_echoed_by_a_gateway_never_reach_errors_logs_or_traces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bug 11: a server whose error bodies quote the key and the Authorization header."""
    from ttc.runtime.context import run_scope

    def explode(prompt: str, index: int, rng: object) -> str:
        raise RuntimeError("upstream broke")

    async with FakeProvider("openai", api_key=LONG_KEY, echo_auth=True, models=["known"]) as s:
        policy = RetryPolicy(max_attempts=2, initial_backoff=0)
        cases = [
            OpenAI("known", base_url=s.base_url, api_key=LONG_KEY[::-1], retry=policy),  # 401
            OpenAI("unknown", base_url=s.base_url, api_key=LONG_KEY, retry=policy),  # 404
            OpenAI("known", base_url=s.base_url, api_key=LONG_KEY, retry=policy),  # 400
        ]
        for model, prompt, params in [
            (cases[0], "q", SamplingParams()),
            (cases[1], "q", SamplingParams()),
            (cases[2], "q", SamplingParams(temperature=1.0, top_p=1.0, max_tokens=10**6)),
        ]:
            key = model.api_key.get_secret_value()  # type: ignore[union-attr]
            with (
                caplog.at_level(logging.DEBUG, logger="ttc"),
                run_scope() as run,
                pytest.raises(Exception) as info,
            ):
                await model.generate(prompt, params)
            traces = repr(run.trace)
            assert s.stats.requests and "[redacted]" in str(info.value)
            _assert_no_key(info.value, key, logs=caplog.text, traces=traces)
            await model.aclose()

    # retried 500s (logged at INFO and DEBUG on each retry): the reply function raising, and
    # an injected fault
    for options in ({"reply": explode}, {"faults": Faults(server_error=1.0)}):
        async with FakeProvider("openai", api_key=LONG_KEY, echo_auth=True, **options) as s:
            model = OpenAI("gpt-4o-mini", base_url=s.base_url, api_key=LONG_KEY, retry=policy)
            with (
                caplog.at_level(logging.DEBUG, logger="ttc"),
                run_scope() as run,
                pytest.raises(Exception) as info,
            ):
                await model.generate("q")
            assert s.stats.requests == 2 and "retrying" in caplog.text
            assert run.trace and all(e.error and "[redacted]" in e.error for e in run.trace)
            _assert_no_key(info.value, LONG_KEY, logs=caplog.text, traces=repr(run.trace))
            await model.aclose()


# ---------------------------------------------------------------- per-candidate token counts


@pytest.mark.parametrize(
    ("flavor", "preset"),
    [
        ("openai", OpenAI),
        ("groq", Groq),
        ("cerebras", Cerebras),
        ("vllm", VLLMServer),
        ("llamacpp", LlamaCppServer),
    ],
)
async def test_every_http_preset_counts_each_samples_tokens(flavor: str, preset: type) -> None:
    """Bug 15: ``completion_tokens`` was ``None`` on every HTTP preset even with n = 1 (and
    so with fan-out, which sends n = 1 requests)."""
    async with FakeProvider(flavor, api_key=KEY) as server:  # type: ignore[arg-type]
        model = preset("m", base_url=server.base_url, api_key=KEY)
        n = 1 if model.capabilities.native_n else 3
        out = await model.generate("What is 17 * 23?", SamplingParams(max_tokens=32), n=n)
        assert len(out) == n
        assert all(c.completion_tokens is not None and c.completion_tokens > 0 for c in out)
        assert sum(c.completion_tokens or 0 for c in out) == server.stats.billed_completion_tokens
        await model.aclose()


async def test_native_n_counts_each_sample_from_its_logprobs_and_otherwise_says_unknown() -> None:
    """With native ``n`` the usage is a sum over the choices: a choice's own count is exact
    from its logprobs, else unknown (``None``) rather than a guess."""
    async with FakeProvider("openai", api_key=KEY) as server:
        model = OpenAI("gpt-4o-mini", base_url=server.base_url, api_key=KEY)
        out = await model.generate("q", SamplingParams(max_tokens=32, logprobs=True), n=4)
        assert sum(c.completion_tokens or 0 for c in out) == server.stats.billed_completion_tokens
        assert all(c.completion_tokens == len(c.logprobs or ()) for c in out)
        out = await model.generate("q", SamplingParams(max_tokens=32), n=4)
        assert all(c.completion_tokens is None for c in out)
        await model.aclose()


async def test_native_n_too_big_for_a_token_budget_is_split_into_chunks_that_fit() -> None:
    """OpenAI with n=16 and 5,000 tokens: one request reserves 16 x 512 tokens and cannot
    fit, but the samples do (about 20 tokens each); the runtime splits the request (8, 4, ...
    down to 1 sample a request) instead of returning nothing."""
    from ttc import RepeatedSample

    async with (
        FakeProvider("openai", api_key=KEY) as server,
        OpenAI(
            "gpt-4o-mini", base_url=server.base_url, api_key=KEY, budget=Budget(tokens=5000)
        ) as model,
    ):
        result = await RepeatedSample(model, n=16, params=SamplingParams(seed=3)).run(
            "What is 17 * 23?"
        )
        assert len(result.candidates) == 16 and result.stopped_by is None
        assert 1 < server.stats.requests < 16
        assert model.ledger is not None and model.ledger.spent_tokens <= 5000
        _usage_matches(model, server)
        # Seeds stay distinct across the split chunks: no sample is drawn twice.
        assert len({c.text for c in result.candidates}) > 1
        # A budget too small for even one sample still stops with nothing sent.
        tiny = OpenAI(
            "gpt-4o-mini", base_url=server.base_url, api_key=KEY, budget=Budget(tokens=100)
        )
        sent = server.stats.requests
        stopped = await RepeatedSample(tiny, n=4).run("What is 17 * 23?")
        assert stopped.stopped_by == "budget" and stopped.candidates == []
        assert stopped.budget_stop is not None and stopped.budget_stop.scope.startswith("openai/")
        assert server.stats.requests == sent
        await tiny.aclose()
