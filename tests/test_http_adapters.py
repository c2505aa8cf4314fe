"""The OpenAI-compatible adapters against the loopback fake provider: the real client code,
the real HTTP, the providers' documented quirks and errors."""

from __future__ import annotations

import logging

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
