"""ttc serve through the official openai client (sync, async, streaming) and ttc's own
adapter, with the loopback FakeProvider upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from threaded_fake import threaded_fake

from ttc.config import KeyLimits, TTCConfig, parse_config
from ttc.server.keys import SQLiteKeyStore
from ttc.server.testing import ServerThread
from ttc.testing import FakeProvider

CONFIG = """\
[models.fake]
model = "openai-compatible/fake-model@{url}"
price = {{ input_per_million = 1.0, output_per_million = 2.0 }}
params = {{ max_tokens = 64 }}

[models.dead]
model = "openai-compatible/fake-model@http://127.0.0.1:9/v1"
retry = {{ max_attempts = 1, max_connect_failures = 1 }}

[profiles.math]
strategy = "self-consistency"
n = 5
model = "fake"

[server]
max_body_bytes = 4096
{server}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeProvider]:
    with threaded_fake("openai", latency=0.0) as fake:
        yield fake


def make_config(fake: FakeProvider, server: str = "") -> TTCConfig:
    return parse_config(CONFIG.format(url=fake.base_url, server=server))


def new_key(path: Path, name: str, limits: KeyLimits | None = None) -> str:
    async def go() -> str:
        store = SQLiteKeyStore(path)
        try:
            return (await store.create(name, limits))[1]
        finally:
            await store.close()

    return anyio.run(go)


@pytest.fixture(scope="module")
def server(upstream: FakeProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = tmp_path_factory.mktemp("keys") / "keys.sqlite"
    key = new_key(path, "alice")
    with ServerThread(make_config(upstream), store_path=path) as running:
        running.key = key
        yield running


def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=server.key, max_retries=0)


def test_a_plain_model_answers_chat_with_n_choices_and_usage(server: Any) -> None:
    reply = client(server).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "What is 6 * 7?"}], n=3, seed=1
    )
    assert len(reply.choices) == 3
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all("6 * 7" in (c.message.content or "") for c in reply.choices)
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    extra = reply.model_extra or {}
    assert extra["ttc"]["strategy"] == "none"
    assert extra["ttc"]["requests"] == 1
    assert extra["ttc"]["cost_usd"] > 0


def test_a_strategy_by_model_name_answers_with_every_call_in_usage(server: Any) -> None:
    reply = client(server).chat.completions.create(
        model="best-of-6/fake",
        messages=[{"role": "user", "content": "What is 12 * 3?"}],
        extra_body={"ttc": {"candidates": True}},
    )
    assert len(reply.choices) == 1
    ttc = (reply.model_extra or {})["ttc"]
    assert ttc["strategy"] == "best-of-n"
    run = ttc["runs"][0]
    assert run["answer"] == max(run["votes"], key=run["votes"].get)  # no scorer: a vote
    assert f"The answer is {run['answer']}" in (reply.choices[0].message.content or "")
    assert len(ttc["runs"][0]["candidates"]) == 6
    calls = ttc["calls"]
    assert sum(c["prompt_tokens"] for c in calls) == reply.usage.prompt_tokens  # type: ignore[union-attr]
    assert sum(c["completion_tokens"] for c in calls) == reply.usage.completion_tokens  # type: ignore[union-attr]


def test_a_profile_and_the_ttc_field_choose_the_strategy(server: Any) -> None:
    c = client(server)
    reply = c.chat.completions.create(
        model="math", messages=[{"role": "user", "content": "What is 5 * 5?"}]
    )
    ttc = (reply.model_extra or {})["ttc"]
    assert ttc["strategy"] == "self-consistency"
    assert sum(ttc["runs"][0]["votes"].values()) == 5
    reply = c.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "What is 5 * 5?"}],
        extra_body={"ttc": {"strategy": "beam-prm", "n": 4, "params": {"width": 2}, "tree": True}},
    )
    ttc = (reply.model_extra or {})["ttc"]
    assert ttc["strategy"] == "beam-prm"
    assert ttc["runs"][0]["tree"]


def test_text_completions_take_a_list_of_prompts(server: Any) -> None:
    reply = client(server).completions.create(
        model="self-consistency-3/fake", prompt=["What is 2 * 3?", "What is 4 * 4?"], max_tokens=40
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert "2 * 3" in reply.choices[0].text and "4 * 4" in reply.choices[1].text


def test_models_lists_models_and_profiles(server: Any) -> None:
    c = client(server)
    ids = [m.id for m in c.models.list()]
    assert ids == ["fake", "dead", "math"]
    found = c.models.retrieve("best-of-8/fake")
    assert found.id == "best-of-8/fake"
    assert (found.model_extra or {})["ttc"] == {"strategy": "best-of-n", "n": 8}
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")


def test_the_async_client_runs_requests_concurrently(server: Any) -> None:
    async def go() -> list[str]:
        c = openai.AsyncOpenAI(base_url=server.url, api_key=server.key, max_retries=0)
        replies = await asyncio.gather(
            *[
                c.chat.completions.create(
                    model="self-consistency-4/fake",
                    messages=[{"role": "user", "content": f"What is {i} * 10?"}],
                )
                for i in range(1, 9)
            ]
        )
        await c.close()
        return [r.choices[0].message.content or "" for r in replies]

    texts = asyncio.run(go())
    assert all(f"{i} * 10" in text for i, text in enumerate(texts, 1))


def test_streaming_sends_content_chunks_then_usage(server: Any) -> None:
    stream = client(server).chat.completions.create(
        model="best-of-4/fake",
        messages=[{"role": "user", "content": "What is 7 * 8?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "7 * 8" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert (chunks[-1].model_extra or {})["ttc"]["strategy"] == "best-of-n"


def test_ttcs_own_adapter_works_against_the_server(server: Any) -> None:
    from ttc.adapters import OpenAICompatible
    from ttc.strategies import SelfConsistency

    async def go() -> Any:
        model = OpenAICompatible("self-consistency-3/fake", base_url=server.url, api_key=server.key)
        try:
            return await SelfConsistency(model, 2).run("What is 9 * 9?")
        finally:
            await model.aclose()

    result = anyio.run(go)
    assert result.answer is not None
    assert result.usage.requests >= 1


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), 400, "model"),
        (json.dumps({"model": "fake", "messages": []}).encode(), 400, "messages"),
        (
            json.dumps(
                {"model": "fake", "messages": [{"role": "user", "content": "x"}], "n": 0}
            ).encode(),
            400,
            "n",
        ),
        (
            json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(),
            404,
            "model",
        ),
        (
            json.dumps(
                {"model": "best-of-x/fake", "messages": [{"role": "user", "content": "x"}]}
            ).encode(),
            404,
            "model",
        ),
        (
            json.dumps(
                {
                    "model": "fake",
                    "messages": [{"role": "user", "content": "x"}],
                    "ttc": {"strategy": "nope"},
                }
            ).encode(),
            400,
            "ttc",
        ),
        (
            json.dumps(
                {"model": "fake", "messages": [{"role": "user", "content": "x" * 5000}]}
            ).encode(),
            413,
            None,
        ),
    ],
)
def test_bad_input_gets_openai_errors_and_nothing_is_charged(
    server: Any, body: bytes, status: int, param: str | None
) -> None:
    import urllib.error
    import urllib.request

    def spent() -> tuple[int, ...]:
        async def go() -> tuple[int, ...]:
            store = SQLiteKeyStore(server.store_path)
            key = await store.get("alice")
            assert key is not None
            charge = await store.spent(key)
            await store.close()
            return (charge.tokens, charge.requests)

        return anyio.run(go)

    before = spent()
    request = urllib.request.Request(
        server.url + "/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == status
    error = json.loads(info.value.read())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    assert spent() == before


def test_a_missing_or_unknown_key_is_401(server: Any) -> None:
    bad = openai.OpenAI(base_url=server.url, api_key="ttc-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 401
    assert "Incorrect API key" in str(info.value)


def test_an_unknown_model_is_404_naming_the_grammar(server: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(server).chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "x"}]
        )
    assert "best-of-8/<model>" in str(info.value)


def test_health_ready_and_metrics(server: Any) -> None:
    import urllib.request

    root = server.url.removesuffix("/v1")
    assert json.loads(urllib.request.urlopen(root + "/health").read()) == {"status": "ok"}
    assert json.loads(urllib.request.urlopen(root + "/ready").read()) == {"status": "ready"}
    client(server).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "1*1"}]
    )
    text = urllib.request.urlopen(root + "/metrics").read().decode()
    assert 'ttc_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert "ttc_tokens_total" in text and "ttc_cost_usd_total" in text


def test_request_ids_are_echoed(server: Any) -> None:
    raw = client(server).chat.completions.with_raw_response.create(
        model="fake",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"X-Request-Id": "abc-123"},
    )
    assert raw.headers["x-request-id"] == "abc-123"
    assert (raw.parse().model_extra or {})["ttc"]["request_id"] == "abc-123"


def test_an_upstream_failure_is_502_and_in_a_stream_an_error_event(server: Any) -> None:
    c = client(server)
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="dead", messages=messages)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    assert "The model failed" in str(info.value)
    stream = c.chat.completions.create(
        model="best-of-2/dead",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
    )
    with pytest.raises(openai.APIError, match="cannot connect"):
        list(stream)


def test_the_model_name_grammar_and_the_ttc_field(upstream: FakeProvider) -> None:
    from ttc.errors import ConfigError
    from ttc.server.routing import UnknownModel, plan_request

    config = make_config(upstream)
    assert plan_request(config, "fake", None).spec is None
    plan = plan_request(config, "best-of-12/fake", None)
    assert plan.spec is not None and (plan.spec.name, plan.spec.n) == ("best-of-n", 12)
    plan = plan_request(config, "self-consistency-3/fake", {"n": 7})
    assert plan.spec is not None and (plan.spec.name, plan.spec.n) == ("self-consistency", 7)
    plan = plan_request(config, "dvts/fake", None)
    assert plan.spec is not None and plan.spec.n == 16 and plan.spec.prm == "arithmetic"
    plan = plan_request(config, "fake", {"profile": "math"})
    assert plan.profile == "math" and plan.spec is not None and plan.spec.n == 5
    for name in ("best-of-4/nope", "beam/fake", "fake/extra"):
        with pytest.raises(UnknownModel):
            plan_request(config, name, None)
    for ttc, field in (
        ({"colour": 1}, "ttc.colour"),
        ({"strategy": "nope"}, "ttc.strategy"),
        ({"n": 3}, "ttc.strategy"),
        ({"strategy": "beam-prm", "n": 6, "params": {"width": 4}}, "ttc.strategy"),
        ({"profile": "other"}, "ttc.profile"),
    ):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            plan_request(config, "fake", ttc)


def test_usage_counts_the_scorers_calls_too(server: Any) -> None:
    reply = client(server).chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "What is 3 * 4?"}],
        extra_body={
            "ttc": {
                "strategy": "best-of-n",
                "n": 2,
                "params": {"scorer": "prm"},
                "prm": "step-judge",
            }
        },
    )
    ttc = (reply.model_extra or {})["ttc"]
    calls = ttc["calls"]
    assert len(calls) > 1  # the samples, then the judge's calls on their steps
    assert reply.usage is not None
    assert sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls) == (
        reply.usage.total_tokens
    )
    assert ttc["requests"] == len(calls)


def test_a_request_without_a_key_is_401(server: Any) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        server.url + "/chat/completions",
        data=json.dumps({"model": "fake", "messages": [{"role": "user", "content": "x"}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 401
    error = json.loads(info.value.read())["error"]
    assert error["code"] == "invalid_api_key" and "didn't provide an API key" in error["message"]


def test_text_completions_stream_with_n_choices(server: Any) -> None:
    stream = client(server).completions.create(
        model="self-consistency-2/fake", prompt="What is 5 * 6?", n=2, stream=True
    )
    chunks = list(stream)
    texts = {0: "", 1: ""}
    finished = set()
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1}
    assert all("5 * 6" in text for text in texts.values())
    assert chunks[-1].usage is not None
