"""Response caches against the loopback provider: what is cached, what is never served from
the cache, what a hit costs, and a cache on disk shared by two model objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttc import BestOfN, Budget, MemoryCache, SamplingParams, SQLiteCache
from ttc.adapters import Groq, OpenAI, VLLMServer
from ttc.errors import ConfigError
from ttc.runtime.cache import ResponseCache
from ttc.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

KEY = "sk-cache"
GREEDY = SamplingParams(temperature=0.0, max_tokens=16)


async def test_greedy_requests_are_answered_from_the_cache_for_free() -> None:
    cache = MemoryCache()
    async with FakeProvider("openai", api_key=KEY) as server:
        model = OpenAI("gpt-4o-mini", base_url=server.base_url, api_key=KEY, cache=cache)
        first = await model.generate("What is 2 + 2?", GREEDY)
        again = await model.generate("What is 2 + 2?", GREEDY)
        assert again == first
        assert server.stats.requests == 1 and model.usage.requests == 1
        assert (cache.hits, cache.misses) == (1, 1)
        # Anything that shapes the answer is part of the key: another prompt, parameter or n.
        await model.generate("What is 2 + 3?", GREEDY)
        await model.generate("What is 2 + 2?", GREEDY.model_copy(update={"max_tokens": 8}))
        await model.generate("What is 2 + 2?", GREEDY, n=2)
        assert server.stats.requests == 4
        # A hit costs no budget: a run limited to zero requests is still answered.
        strategy = BestOfN(model, n=1, params=GREEDY, budget=Budget(requests=0))
        result = await strategy.run("What is 2 + 2?")
        assert result.stopped_by is None and result.candidates[0].text == first[0].text
        assert result.usage.requests == 0 and server.stats.requests == 4


async def test_unseeded_samples_are_never_replayed_unless_asked() -> None:
    sampled = SamplingParams(temperature=0.8, max_tokens=16)
    async with FakeProvider("openai", api_key=KEY) as server:
        model = OpenAI("m", base_url=server.base_url, api_key=KEY, cache=MemoryCache())
        await model.generate("q", sampled, n=4)
        await model.generate("q", sampled, n=4)
        assert server.stats.requests == 2  # repeated sampling keeps drawing new samples
        replay = OpenAI("m", base_url=server.base_url, api_key=KEY, cache=MemoryCache(sampled=True))
        one = await replay.generate("q", sampled, n=4)
        assert await replay.generate("q", sampled, n=4) == one
        assert server.stats.requests == 3


async def test_seeded_fan_out_caches_each_sample_under_its_own_seed() -> None:
    cache = MemoryCache()
    seeded = SamplingParams(temperature=0.8, max_tokens=16, seed=7)
    async with FakeProvider("groq", api_key=KEY) as server:
        model = Groq("llama-3.1-8b-instant", base_url=server.base_url, api_key=KEY, cache=cache)
        first = await model.generate("q", seeded, n=4)
        assert server.stats.requests == 4 and len(cache) == 4
        assert await model.generate("q", seeded, n=4) == first
        assert server.stats.requests == 4 and cache.hits == 4
        # samples 0-5 of seed 7: the first four come from the cache, two are new
        more = await model.generate("q", seeded, n=6)
        assert more[:4] == first and server.stats.requests == 6


async def test_the_server_endpoint_and_extra_fields_are_part_of_the_key() -> None:
    cache = MemoryCache()
    async with FakeProvider("vllm") as a, FakeProvider("vllm") as b:
        one = VLLMServer("m", base_url=a.base_url, cache=cache)
        other = VLLMServer("m", base_url=b.base_url, cache=cache)
        extra = VLLMServer("m", base_url=a.base_url, cache=cache, extra_body={"top_k": 5})
        for model in (one, other, extra):
            await model.generate("q", GREEDY)
        assert (a.stats.requests, b.stats.requests) == (2, 1) and cache.hits == 0


async def test_failures_and_short_answers_are_not_cached() -> None:
    cache = MemoryCache()
    faults = Faults(fewer_choices=1.0)
    async with FakeProvider("openai", api_key=KEY, faults=faults, seed=3) as server:
        model = OpenAI("m", base_url=server.base_url, api_key=KEY, cache=cache)
        out = await model.generate("q", GREEDY, n=3)  # refilled one by one after a short answer
        assert len(out) == 3
        assert len(cache) == 0  # the short answer was not stored as if it were complete


async def test_sqlite_cache_is_shared_across_models_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "responses.sqlite"
    async with FakeProvider("openai", api_key=KEY) as server:
        first = OpenAI("m", base_url=server.base_url, api_key=KEY, cache=SQLiteCache(path))
        answer = await first.generate("What is 6 * 7?", GREEDY)
        reopened = SQLiteCache(path)
        second = OpenAI("m", base_url=server.base_url, api_key=KEY, cache=reopened)
        assert await second.generate("What is 6 * 7?", GREEDY) == answer
        assert server.stats.requests == 1 and len(reopened) == 1
        reopened.close()


def test_cache_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="cache must be"):
        OpenAI("m", base_url="http://127.0.0.1:9/v1", api_key=KEY, cache={})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_entries"):
        MemoryCache(0)
    assert isinstance(MemoryCache(), ResponseCache)


def test_sqlite_cache_needs_a_file_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder"):
        SQLiteCache(tmp_path)


async def test_a_sampled_replay_of_a_fan_out_gives_back_every_sample() -> None:
    """``sampled=True`` replays an experiment: the n unseeded requests of a fan-out are n
    entries, not one entry overwritten n times."""
    from ttc import SelfConsistency
    from ttc.adapters import FunctionModel

    answers = ["7", "7", "8", "9"]
    model = FunctionModel(
        lambda request, i: f"The answer is {answers[i % 4]}.",
        native_n=False,
        max_concurrency=1,
        cache=MemoryCache(sampled=True),
    )
    first = await SelfConsistency(model, n=4).run("q")
    replay = await SelfConsistency(model, n=4).run("q")
    assert sorted(c.answer or "" for c in replay.candidates) == sorted(answers)
    assert [c.answer for c in replay.candidates] == [c.answer for c in first.candidates]
    assert model.samples == 4 and replay.usage.requests == 0


async def test_a_function_model_is_answered_from_its_cache() -> None:
    """The model's sample counter changes with every call; it is no part of the cache key."""
    from ttc.adapters import FunctionModel

    model = FunctionModel(lambda request, i: f"reply {i}", cache=MemoryCache())
    greedy = SamplingParams(temperature=0.0, max_tokens=8)
    first = await model.generate("q", greedy)
    again = await model.generate("q", greedy)
    assert [c.text for c in again] == [c.text for c in first] == ["reply 0"]
    assert model.samples == 1 and model.cache is not None and model.cache.hits == 1
