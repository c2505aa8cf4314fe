"""Fallback and Router over loopback fake providers with injected outages and 429s: runs
complete on the providers that remain, nothing is billed twice, each provider's own budget
holds, and samples are spread by weight or by remaining rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from ttc import BestOfN, Budget, ConfigError, SamplingParams
from ttc.adapters import Groq, OpenAI
from ttc.errors import RateLimitError, ServerError
from ttc.runtime.fallback import Fallback, Router
from ttc.runtime.model import Model
from ttc.runtime.retry import RetryPolicy
from ttc.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

PARAMS = SamplingParams(max_tokens=24)
QUICK = RetryPolicy(max_attempts=2, initial_backoff=0.0, max_backoff=0.0)
ONCE = RetryPolicy(max_attempts=1)


@asynccontextmanager
async def servers(
    *faults: Faults | None, flavor: str = "groq"
) -> AsyncIterator[list[FakeProvider]]:
    async with AsyncExitStack() as stack:
        out = []
        for i, f in enumerate(faults):
            fake = FakeProvider(flavor, api_key="k", faults=f, seed=i)  # type: ignore[arg-type]
            out.append(await stack.enter_async_context(fake))
        yield out


def groq(server: FakeProvider, **kw: object) -> Groq:
    kw.setdefault("retry", QUICK)
    return Groq("llama-3.1-8b-instant", base_url=server.base_url, api_key="k", **kw)  # type: ignore[arg-type]


def assert_billed_once(models: list[Model], fakes: list[FakeProvider]) -> None:
    """Every model's usage is what its own server billed: nothing counted twice or lost."""
    for model, fake in zip(models, fakes):
        usage = model.usage
        assert usage.requests == fake.stats.requests
        assert usage.prompt_tokens == fake.stats.billed_prompt_tokens
        assert usage.completion_tokens == fake.stats.billed_completion_tokens


async def test_an_outage_on_the_primary_moves_every_sample_to_the_secondary() -> None:
    async with servers(Faults(server_error=1.0), None) as (down, up):
        primary, secondary = groq(down), groq(up)
        fallback = Fallback(primary, secondary)
        result = await BestOfN(fallback, n=8, params=PARAMS).run("What is 12 * 13?")
        await fallback.aclose()
    assert len(result.candidates) == 8 and result.stopped_by is None
    assert down.stats.requests == 8 * QUICK.max_attempts and down.stats.ok == 0
    assert up.stats.ok == 8
    assert_billed_once([primary, secondary], [down, up])
    # The run's usage is the two providers' together, each reported on its own.
    assert result.usage == primary.usage + secondary.usage == fallback.usage
    by_model = fallback.usage_by_model()
    assert by_model[primary.name].completion_tokens == 0
    assert by_model[f"{secondary.name}#2"] == secondary.usage
    assert fallback.fallbacks == [1, 0]


async def test_samples_paid_for_on_a_rate_limited_primary_are_kept_and_only_the_rest_move() -> None:
    async with servers(Faults(rate_limit=0.5, retry_after=0.0), None) as (limited, up):
        primary, secondary = groq(limited, retry=ONCE), groq(up)
        fallback = Fallback(primary, secondary)
        result = await BestOfN(fallback, n=16, params=PARAMS).run("What is 7 * 8?")
        await fallback.aclose()
    assert len(result.candidates) == 16
    assert 0 < limited.stats.ok < 16  # some samples came from the primary...
    assert limited.stats.ok + up.stats.ok == 16  # ...and the secondary drew only the rest
    assert limited.stats.faults["rate_limit"] == 16 - limited.stats.ok
    assert_billed_once([primary, secondary], [limited, up])
    assert result.usage.completion_tokens == sum(
        c.completion_tokens or 0 for c in result.candidates
    )


async def test_an_unreachable_primary_falls_over_on_connection_errors() -> None:
    async with servers(None, None) as (gone, up):
        primary, secondary = groq(gone), groq(up)
        await gone.stop()  # nothing listens on the port any more
        fallback = Fallback(primary, secondary)
        result = await BestOfN(fallback, n=4, params=PARAMS).run("What is 3 * 4?")
        await fallback.aclose()
    assert len(result.candidates) == 4 and up.stats.ok == 4


async def test_failures_not_named_in_on_are_raised_not_fallen_over() -> None:
    async with servers(Faults(server_error=1.0), None) as (down, up):
        fallback = Fallback(groq(down), groq(up), on=("rate_limit",))
        with pytest.raises(ServerError):
            await fallback.generate("What is 2 * 2?", PARAMS, 2)
        await fallback.aclose()
    assert up.stats.requests == 0


async def test_when_every_provider_fails_the_last_error_says_so() -> None:
    async with servers(Faults(rate_limit=1.0, retry_after=0.0), Faults(server_error=1.0)) as fakes:
        fallback = Fallback(groq(fakes[0], retry=ONCE), groq(fakes[1], retry=ONCE))
        with pytest.raises(ServerError):
            await fallback.generate("What is 2 * 2?", PARAMS, 1)
        await fallback.aclose()


async def test_a_primary_whose_own_budget_is_spent_hands_over_but_a_run_budget_stops() -> None:
    async with servers(None, None) as (a, b):
        primary = groq(a, budget=Budget(requests=3))
        secondary = groq(b)
        fallback = Fallback(primary, secondary)
        result = await BestOfN(fallback, n=10, params=PARAMS).run("What is 9 * 9?")
        assert len(result.candidates) == 10
        assert a.stats.requests == 3 and b.stats.requests == 7  # the primary's limit held
        # A run's budget is everyone's: no provider may pass it.
        capped = await BestOfN(fallback, n=10, params=PARAMS, budget=Budget(requests=4)).run(
            "What is 9 * 8?"
        )
        await fallback.aclose()
    assert capped.stopped_by == "budget" and len(capped.candidates) == 4
    assert a.stats.requests == 3 and b.stats.requests == 11
    assert_billed_once([primary, secondary], [a, b])


async def test_a_failed_model_waits_behind_the_others_during_its_cooldown() -> None:
    async with servers(Faults(server_error=1.0), None) as (down, up):
        fallback = Fallback(groq(down, retry=ONCE), groq(up), cooldown=60)
        await fallback.generate("What is 5 * 5?", PARAMS, 1)
        await fallback.generate("What is 5 * 6?", PARAMS, 1)
        await fallback.aclose()
    assert down.stats.requests == 1 and up.stats.ok == 2


@pytest.mark.parametrize("flavor", ["groq", "openai"])
async def test_best_of_64_over_two_providers_is_dealt_by_weight(flavor: str) -> None:
    async with servers(None, None, flavor=flavor) as fakes:
        preset = Groq if flavor == "groq" else OpenAI
        models = [
            preset("m", base_url=f.base_url, api_key="k")  # type: ignore[abstract]
            for f in fakes
        ]
        router = Router(models, weights=(3, 1))
        result = await BestOfN(router, n=64, params=PARAMS).run("What is 21 * 2?")
        await router.aclose()
    assert len(result.candidates) == 64
    assert [f.stats.choices for f in fakes] == [48, 16]
    assert router.dealt == [48, 16]
    if flavor == "openai":  # native n: one request a provider
        assert [f.stats.requests for f in fakes] == [1, 1]
    assert_billed_once(models, fakes)  # type: ignore[arg-type]


async def test_small_calls_follow_the_weights_too() -> None:
    """Smooth round-robin: sixteen one-sample calls (a judge, a beam) go 3:1, not 16:0."""
    async with servers(None, None) as fakes:
        router = Router([groq(f) for f in fakes], weights=[3, 1])
        for i in range(16):
            await router.generate(f"What is {i} * 2?", PARAMS, 1)
        await router.aclose()
    assert [f.stats.requests for f in fakes] == [12, 4]


async def test_the_router_moves_an_outaged_providers_samples_to_the_others() -> None:
    async with servers(
        Faults(server_error=1.0), Faults(rate_limit=0.3, retry_after=0.0), None
    ) as fakes:
        models = [groq(f, retry=ONCE) for f in fakes]
        router = Router(models)
        result = await BestOfN(router, n=30, params=PARAMS).run("What is 4 * 11?")
        await router.aclose()
    assert len(result.candidates) == 30 and result.stopped_by is None
    assert fakes[0].stats.ok == 0
    assert fakes[1].stats.ok + fakes[2].stats.ok == 30
    assert fakes[1].stats.faults["rate_limit"] > 0
    assert_billed_once(models, fakes)
    assert result.usage == sum((m.usage for m in models[1:]), models[0].usage)


async def test_each_providers_budget_holds_under_the_router() -> None:
    async with servers(None, None) as (a, b):
        capped, free = groq(a, budget=Budget(requests=10)), groq(b)
        router = Router([capped, free])
        result = await BestOfN(router, n=64, params=PARAMS).run("What is 6 * 7?")
        await router.aclose()
    assert len(result.candidates) == 64
    assert a.stats.requests == 10 and b.stats.requests == 54


async def test_routing_by_rate_limit_favours_the_provider_with_room() -> None:
    async with servers(None, None) as (a, b):
        tight, roomy = groq(a, rpm=8), groq(b)
        router = Router([tight, roomy], by="rate_limit")
        await router.generate("What is 8 * 8?", PARAMS, 32)
        assert 0 < a.stats.requests <= 8 and a.stats.requests + b.stats.requests == 32
        tight.rate_limiter.pause(30)  # as after a 429 with retry-after: no room now
        before = a.stats.requests
        await router.generate("What is 8 * 9?", PARAMS, 4)
        await router.aclose()
    assert a.stats.requests == before  # all four went to the one with room


async def test_wrappers_check_their_settings() -> None:
    async with servers(None) as (a,):
        model = groq(a)
        with pytest.raises(ConfigError, match="on: unknown failure kind"):
            Fallback(model, on=("429",))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="weights: 1 weights for 2 models"):
            Router([model, groq(a)], weights=[1])
        with pytest.raises(ConfigError, match=r"weights\[1\]"):
            Router([model, groq(a)], weights=[1, 0])
        with pytest.raises(ConfigError, match="twice"):
            Fallback(model, model)
        with pytest.raises(ConfigError, match=r"models\[1\]"):
            Fallback(model, "groq")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="by must be"):
            Router([model], by="latency")  # type: ignore[arg-type]
        await model.aclose()


async def test_capabilities_are_what_every_inner_model_can_do() -> None:
    async with servers(None, None) as (a, b):
        openai = OpenAI("m", base_url=a.base_url, api_key="k")
        fallback = Fallback(openai, groq(b))
        assert not fallback.capabilities.native_n and not fallback.capabilities.logprobs
        with pytest.raises(ConfigError, match="logprobs"):
            await fallback.generate("hi", SamplingParams(logprobs=True), 1)
        nested = Router([fallback, OpenAI("m", base_url=b.base_url, api_key="k")])
        assert nested.name.startswith("router(fallback(")
        await nested.aclose()


async def test_a_429_on_every_provider_after_retries_keeps_what_arrived() -> None:
    async with servers(Faults(rate_limit=0.5, retry_after=0.0), Faults(rate_limit=1.0)) as fakes:
        models = [groq(f, retry=ONCE) for f in fakes]
        fallback = Fallback(*models)
        result = await BestOfN(fallback, n=12, params=PARAMS).run("What is 2 * 9?")
        await fallback.aclose()
    assert result.stopped_by == "error"
    assert len(result.candidates) == fakes[0].stats.ok > 0
    assert any("RateLimit" in e or "429" in e for e in result.errors)
    assert_billed_once(models, fakes)
    assert RateLimitError  # the kind that moved the samples on


async def test_a_step_search_runs_over_a_fallback_in_raw_text() -> None:
    import random

    from ttc import BeamPRM
    from ttc.adapters import OpenAICompatible
    from ttc.scoring import ArithmeticPRM

    def steps(prompt: str, index: int, rng: random.Random) -> str:
        depth = prompt.count("\n\n") - 1
        if depth >= 2:
            return "So the answer is 7."
        return f"Step {depth}: {index} + 1 = {index + 1 + index % 2}\n\nmore"

    async with AsyncExitStack() as stack:
        down = await stack.enter_async_context(
            FakeProvider("openai", api_key="k", faults=Faults(server_error=1.0))
        )
        up = await stack.enter_async_context(FakeProvider("openai", api_key="k", reply=steps))
        models = [
            OpenAICompatible(
                "m", base_url=f.base_url, api_key="k", endpoint="completions", retry=ONCE
            )
            for f in (down, up)
        ]
        fallback = Fallback(*models)
        assert fallback.endpoint is None  # raw text: every model takes it as is
        search = BeamPRM(fallback, ArithmeticPRM(), n=4, width=2, params=PARAMS)
        result = await search.run("Question: 3 + 4?\n\n")
        await fallback.aclose()
    assert result.answer == "7" and result.stopped_by is None
    assert result.tree is not None and result.tree[0]["path"] == "completion"
    assert down.stats.ok == 0 and up.stats.ok == result.usage.requests - down.stats.requests
    assert_billed_once(models, [down, up])  # type: ignore[arg-type]
