"""The LiteLLM adapter, with the real litellm, against the loopback provider."""

from __future__ import annotations

import pytest

from ttc import SamplingParams, SelfConsistency
from ttc.adapters import LiteLLM
from ttc.errors import AuthenticationError
from ttc.runtime.retry import RetryPolicy
from ttc.testing import FakeProvider, Faults

pytest.importorskip("litellm")
pytestmark = [pytest.mark.anyio, pytest.mark.litellm]


async def test_litellm_through_the_runtime() -> None:
    async with FakeProvider("openai", api_key="sk-lite") as server:
        model = LiteLLM("openai/fake-model", api_base=server.base_url, api_key="sk-lite")
        result = await SelfConsistency(model, n=3).run("What is 2 + 5?")
        assert len(result.candidates) == 3
        assert server.stats.requests == 3  # fan-out by default
        assert result.usage.prompt_tokens == server.stats.billed_prompt_tokens
        assert result.usage.completion_tokens == server.stats.billed_completion_tokens
        [sample] = await model.generate("hi", SamplingParams(logprobs=True, top_logprobs=2))
        assert sample.logprobs and all(len(t.top) == 2 for t in sample.logprobs)

        wrong = LiteLLM("openai/fake-model", api_base=server.base_url, api_key="sk-wrong-999")
        with pytest.raises(AuthenticationError) as info:
            await wrong.generate("hi")
        assert "sk-wrong-999" not in str(info.value)


async def test_litellm_errors_are_retried_by_our_runtime() -> None:
    faults = Faults(server_error=0.5, retry_after=0.0)
    async with FakeProvider("openai", api_key="k", faults=faults, seed=5) as server:
        model = LiteLLM(
            "openai/fake-model",
            api_base=server.base_url,
            api_key="k",
            retry=RetryPolicy(max_attempts=20, initial_backoff=0.01),
        )
        out = await model.generate("q", n=4)
        assert len(out) == 4
        assert server.stats.faults["server_error"] > 0
        assert model.usage.requests == server.stats.requests


async def test_litellm_groq_route_learns_the_rate_limit_headers() -> None:
    """litellm's ``groq/`` route against the fake Groq (which sends what Groq sends, its
    ``x_groq`` and ``service_tier`` fields included); the x-ratelimit-* headers litellm passes
    on teach our limiter the provider's tokens per minute."""
    async with FakeProvider("groq", api_key="gsk-1", tpm=50_000) as server:
        model = LiteLLM("groq/llama-3.1-8b-instant", api_base=server.base_url, api_key="gsk-1")
        out = await model.generate("What is 2 + 5?", n=2)
        assert len(out) == 2 and server.stats.requests == 2
        bucket = model.rate_limiter._tokens
        assert bucket is not None and bucket.capacity == 50_000


async def test_litellm_keeps_the_presets_promises_on_stops_and_failures() -> None:
    """litellm passes 4 stop strings on and drops the rest: ttc applies them. A refused
    connection and a broken 200 body are what they are (litellm calls both a 500), so budgets
    keep the worst case of a request whose outcome is unknown."""
    import socket

    from ttc import Budget, Price
    from ttc.errors import MalformedResponseError, ProviderConnectionError

    once = RetryPolicy(max_attempts=1)
    stops = SamplingParams(max_tokens=32, stop=["zz1", "zz2", "zz3", "zz4", " compute"])
    async with FakeProvider("openai", api_key="sk-lite") as server:
        model = LiteLLM("openai/fake-model", api_base=server.base_url, api_key="sk-lite")
        [sample] = await model.generate("What is 12 * 13?", stops)
        assert sample.text == "Let me" and sample.finish_reason == "stop"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    refused = LiteLLM("openai/m", api_base=closed, api_key="sk-lite", retry=once)
    with pytest.raises(ProviderConnectionError):
        await refused.generate("q")

    async with FakeProvider("openai", api_key="sk-lite", faults=Faults(malformed=1.0)) as server:
        broken = LiteLLM(
            "openai/m",
            api_base=server.base_url,
            api_key="sk-lite",
            retry=once,
            budget=Budget(tokens=10**6),
            price=Price.free(),
        )
        with pytest.raises(MalformedResponseError):
            await broken.generate("q", SamplingParams(max_tokens=50))
        assert broken.ledger is not None and broken.ledger.spent.tokens > 50  # the worst case


LONG_KEY = "sk-lite-Zq8vN3xK0pL7mW2rT5yB9cD4fG6hJ1aa"


def _assert_no_key(exc: BaseException, key: str, *, logs: str = "", traces: str = "") -> None:
    """The key is nowhere: the message, the repr, the formatted traceback, any exception in the
    chain (litellm's exceptions hold the request and its headers) and its attributes, logs,
    traces."""
    import traceback

    assert key not in str(exc) and key not in repr(exc)
    assert key not in "".join(traceback.format_exception(exc))
    seen: BaseException | None = exc
    while seen is not None:
        assert type(seen).__module__.startswith("ttc"), type(seen)  # no foreign exception
        assert key not in str(seen) and key not in repr(seen) and key not in repr(vars(seen))
        seen = seen.__cause__ or seen.__context__
    assert key not in logs and key not in traces


async def test_litellm_keeps_echoed_keys_out_of_errors_chains_logs_and_traces(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug 11: with litellm the key was reachable through ``__context__`` (litellm's exception
    and the request it holds) in most error cases; bug 15: litellm's banner was printed on
    every failed attempt."""
    import logging

    from ttc.runtime.context import run_scope

    policy = RetryPolicy(max_attempts=2, initial_backoff=0)
    async with FakeProvider("openai", api_key=LONG_KEY, echo_auth=True, models=["known"]) as s:
        cases = [
            ("known", LONG_KEY[::-1], SamplingParams()),  # 401, quoting the wrong key
            ("unknown", LONG_KEY, SamplingParams()),  # 404
            ("known", LONG_KEY, SamplingParams(max_tokens=10**6)),  # 400, context length
        ]
        for name, key, params in cases:
            model = LiteLLM(f"openai/{name}", api_base=s.base_url, api_key=key, retry=policy)
            with (
                caplog.at_level(logging.DEBUG, logger="ttc"),
                run_scope() as run,
                pytest.raises(Exception) as info,
            ):
                await model.generate("q", params)
            assert "[redacted]" in str(info.value)
            _assert_no_key(info.value, key, logs=caplog.text, traces=repr(run.trace))

    async with FakeProvider(
        "openai", api_key=LONG_KEY, echo_auth=True, faults=Faults(server_error=1.0)
    ) as s:
        model = LiteLLM("openai/m", api_base=s.base_url, api_key=LONG_KEY, retry=policy)
        with (
            caplog.at_level(logging.DEBUG, logger="ttc"),
            run_scope() as run,
            pytest.raises(Exception) as info,
        ):
            await model.generate("q")
        assert s.stats.requests == 2 and "retrying" in caplog.text
        _assert_no_key(info.value, LONG_KEY, logs=caplog.text, traces=repr(run.trace))
    captured = capsys.readouterr()
    assert "Give Feedback" not in captured.out + captured.err


def test_litellm_redacts_the_key_before_cutting_the_message() -> None:
    """Bug 14: the message was cut to 500 characters before the key was redacted, so a key
    crossing the cut left its prefix behind."""
    import litellm

    model = LiteLLM("openai/m", api_key=LONG_KEY)
    for pad in range(440, 520, 3):
        exc = litellm.BadRequestError(
            message="x" * pad + f" key={LONG_KEY} tail", model="m", llm_provider="openai"
        )
        error = model._translate(litellm, exc)
        assert LONG_KEY[:10] not in str(error), pad


async def test_litellm_refused_connection_and_pages_that_are_not_the_api() -> None:
    """Bug 4 through litellm: a refused connection gets a few quick attempts and is fatal; a
    501 HTML page is not retried and its HTML does not land in the message."""
    import socket

    from aiohttp import web

    from ttc.errors import NotAnAPIError, ProviderUnreachableError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    refused = LiteLLM(
        "openai/m", api_base=closed, api_key="sk-lite", retry=RetryPolicy(initial_backoff=0)
    )
    with pytest.raises(ProviderUnreachableError) as info:
        await refused.generate("q")
    assert info.value.fatal and info.value.attempts == 3 and closed in str(info.value)

    requests = 0

    async def page(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        html = "<!DOCTYPE HTML><html><head><title>Error response</title></head><body>"
        return web.Response(status=501, text=html + "<p>x</p>" * 100, content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    model = LiteLLM("openai/m", api_base=f"http://127.0.0.1:{port}/v1", api_key="sk-lite")
    try:
        with pytest.raises(NotAnAPIError) as page_info:
            await model.generate("q")
    finally:
        await runner.cleanup()
    assert requests == 1 and page_info.value.fatal
    assert "<p>" not in str(page_info.value) and "Error response" in str(page_info.value)


async def test_litellm_counts_a_single_samples_tokens() -> None:
    async with FakeProvider("openai", api_key="sk-lite") as server:
        model = LiteLLM("openai/fake-model", api_base=server.base_url, api_key="sk-lite")
        out = await model.generate("What is 2 + 5?", SamplingParams(max_tokens=32), n=3)
        assert all(c.completion_tokens for c in out)
        assert sum(c.completion_tokens or 0 for c in out) == server.stats.billed_completion_tokens


async def test_litellm_redacts_a_key_it_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without ``api_key=``, litellm sends the provider's key from the environment: that key
    is kept out of errors too."""
    monkeypatch.setenv("OPENAI_API_KEY", LONG_KEY[::-1])
    async with FakeProvider("openai", api_key=LONG_KEY, echo_auth=True) as server:
        model = LiteLLM("openai/m", api_base=server.base_url, retry=RetryPolicy(max_attempts=1))
        with pytest.raises(AuthenticationError) as info:
            await model.generate("q")
    assert "[redacted]" in str(info.value)
    _assert_no_key(info.value, LONG_KEY[::-1])
