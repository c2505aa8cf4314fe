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
