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
