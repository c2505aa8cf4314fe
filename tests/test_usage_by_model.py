"""Usage per model on every result (``Usage.by_model``): a run over a Router or a Fallback
reports what each provider did and cost, adding up to the run's totals, over loopback fake
providers (one with an injected outage)."""

from __future__ import annotations

import pytest

from ttc import BestOfN, Price, SamplingParams, Usage
from ttc.adapters import OpenAICompatible
from ttc.runtime.fallback import Fallback, Router
from ttc.runtime.retry import RetryPolicy
from ttc.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

PARAMS = SamplingParams(max_tokens=24)


def model(name: str, fake: FakeProvider, usd_in: float, usd_out: float) -> OpenAICompatible:
    return OpenAICompatible(
        name,
        base_url=fake.base_url,
        api_key="k",
        price=Price.per_million(usd_in, usd_out),
        retry=RetryPolicy(max_attempts=1),
    )


def alone(usage: Usage) -> Usage:
    """``usage`` without its per-model breakdown."""
    return usage.model_copy(update={"by_model": {}})


async def test_a_router_run_reports_each_providers_usage_and_cost() -> None:
    async with (
        FakeProvider("openai", api_key="k", seed=1) as fa,
        FakeProvider("openai", api_key="k", seed=2) as fb,
    ):
        a, b = model("model-a", fa, 1.0, 2.0), model("model-b", fb, 10.0, 20.0)
        router = Router([a, b], weights=(3, 1))
        result = await BestOfN(router, n=8, params=PARAMS).run("What is 12 * 13?")
        await router.aclose()
    usage = result.usage
    assert set(usage.by_model) == {"openai-compatible/model-a", "openai-compatible/model-b"}
    got_a, got_b = usage.by_model[a.name], usage.by_model[b.name]
    # Each entry is what that provider billed, at its own price...
    assert (got_a.requests, got_a.prompt_tokens, got_a.completion_tokens) == (
        fa.stats.requests,
        fa.stats.billed_prompt_tokens,
        fa.stats.billed_completion_tokens,
    )
    assert got_b.completion_tokens == fb.stats.billed_completion_tokens > 0
    assert got_b.cost_usd == pytest.approx(
        (fb.stats.billed_prompt_tokens * 10 + fb.stats.billed_completion_tokens * 20) / 1e6
    )
    assert got_a == alone(a.usage) and got_b == alone(b.usage)
    assert got_a.by_model == {}
    # ...and the entries add up to the run's totals.
    assert alone(got_a + got_b) == alone(usage)
    assert usage == router.usage == a.usage + b.usage


async def test_a_fallback_run_shows_the_failed_requests_on_the_primary() -> None:
    async with (
        FakeProvider("openai", api_key="k", faults=Faults(server_error=1.0)) as down,
        FakeProvider("openai", api_key="k") as up,
    ):
        primary, secondary = model("primary", down, 1.0, 1.0), model("secondary", up, 1.0, 1.0)
        fallback = Fallback(primary, secondary)
        result = await BestOfN(fallback, n=4, params=PARAMS).run("What is 7 * 8?")
        await fallback.aclose()
    failed, answered = result.usage.by_model[primary.name], result.usage.by_model[secondary.name]
    assert failed.requests == down.stats.requests == 1 and failed.total_tokens == 0
    assert failed.cost_usd == 0.0
    assert answered.completion_tokens == result.usage.completion_tokens > 0
    assert answered.cost_usd == result.usage.cost_usd


def test_usages_add_up_per_model() -> None:
    one = Usage(requests=1, prompt_tokens=5, cost_usd=0.5)
    two = Usage(requests=2, completion_tokens=7, unpriced_models=frozenset({"x/b"}))
    left = Usage(requests=1, prompt_tokens=5, cost_usd=0.5, by_model={"x/a": one})
    right = Usage(
        requests=3,
        prompt_tokens=5,
        completion_tokens=7,
        cost_usd=0.5,
        unpriced_models=frozenset({"x/b"}),
        by_model={"x/a": one, "x/b": two},
    )
    total = left + right
    assert total.by_model == {"x/a": one + one, "x/b": two}
    assert total.requests == 4 and total.unpriced_models == {"x/b"}
    assert Usage() + Usage() == Usage()
    # Still hashable (equal usages hash alike), as before by_model.
    assert hash(total) == hash(left + right) and len({Usage(), Usage()}) == 1
