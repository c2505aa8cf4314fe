"""The fake OpenAI-compatible provider: formats, flavor quirks, headers, limits, faults, stats."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ttc.testing import (
    ERROR_KINDS,
    FAULT_KINDS,
    FakeProvider,
    Faults,
    chat_prompt_tokens,
    count_tokens,
    default_answer,
    default_reply,
    tokenize,
)

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAT = "/chat/completions"
COMPLETIONS = "/completions"
USER = [{"role": "user", "content": "What is 17 * 23?"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


async def post(
    session: aiohttp.ClientSession,
    fake: FakeProvider,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any, dict[str, str]]:
    """POST and return (status, parsed JSON or the raw text if it does not parse, headers)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    send = {"Content-Type": "application/json", **(headers or {})}
    limit = aiohttp.ClientTimeout(total=timeout)
    async with session.post(fake.base_url + path, data=data, headers=send, timeout=limit) as resp:
        text = await resp.text()
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return resp.status, parsed, {k.lower(): v for k, v in resp.headers.items()}


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **kw}


def words(n: int) -> Any:
    """A reply of n one-word tokens: "w0 w1 ... w{n-1}"."""
    return lambda prompt, index, rng: " ".join(f"w{i}" for i in range(n))


def parse_duration(value: str) -> float:
    """OpenAI/Groq reset durations: 1h2m3.5s, 2m59.56s, 7.66s, 1s, 20ms."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?", value)
    assert m is not None and value, value
    h, mi, s, ms = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0) + int(ms or 0) / 1000


def assert_error(body: Any, code: str | None = None) -> dict[str, Any]:
    err = body["error"]
    assert {"message", "type", "code"} <= err.keys()
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    return err  # type: ignore[no-any-return]


# -- tokenizer and default reply ----------------------------------------------------------------


def test_tokenizer_rule() -> None:
    assert tokenize("a b  c") == ["a", " b", "  c"]
    assert tokenize("a b\n\n") == ["a", " b", "\n\n"]
    assert tokenize("") == [] and count_tokens("   ") == 1
    text = " Let me compute.\n\n17 * 23 = 391. "
    assert "".join(tokenize(text)) == text
    assert count_tokens(text) == 9
    assert chat_prompt_tokens(USER) == count_tokens(USER[0]["content"]) + 4
    assert chat_prompt_tokens([{"role": "user", "content": [{"type": "text", "text": "a b"}]}]) == 6


def test_default_reply_varies_around_the_answer() -> None:
    import random

    rng = random.Random(0)
    replies = [default_reply("What is 17 * 23?", i, rng) for i in range(200)]
    answers = [int(r.rsplit(" ", 1)[1].rstrip(".")) for r in replies]
    assert default_answer("What is 17 * 23?") == 391
    assert max(set(answers), key=answers.count) == 391
    assert len(set(answers)) > 1
    assert replies[0].startswith("Let me compute. 17 * 23 = ")
    assert isinstance(default_answer("no numbers here"), int)


# -- formats -------------------------------------------------------------------------------------


async def test_chat_format_usage_and_stats(session: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", fake.base_url)
        status, body, headers = await post(session, fake, CHAT, chat())
        assert status == 200
        assert headers["content-type"].startswith("application/json")
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
        assert body["model"] == "m" and isinstance(body["created"], int)
        (choice,) = body["choices"]
        assert choice["index"] == 0 and choice["finish_reason"] == "stop"
        assert choice["message"]["role"] == "assistant"
        content = choice["message"]["content"]
        assert content.startswith("Let me compute. 17 * 23 = ")
        assert choice["logprobs"] is None
        usage = body["usage"]
        assert usage["prompt_tokens"] == chat_prompt_tokens(USER)
        assert usage["completion_tokens"] == count_tokens(content)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        s = fake.stats
        assert (s.requests, s.ok, s.choices) == (1, 1, 1)
        assert s.billed_prompt_tokens == usage["prompt_tokens"]
        assert s.billed_completion_tokens == usage["completion_tokens"]
        assert s.billed_tokens == usage["total_tokens"]
        assert set(s.faults) == {*FAULT_KINDS, *ERROR_KINDS}
        assert not any(s.faults.values())


async def test_completions_format_and_default_max_tokens(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("vllm", reply=words(40)) as fake:
        status, body, _ = await post(session, fake, COMPLETIONS, {"prompt": "Q: a b c\nA:"})
        assert status == 200
        assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
        assert body["model"] == "fake-model"  # vllm/llamacpp: model is optional
        (choice,) = body["choices"]
        assert choice["finish_reason"] == "length" and choice["stop_reason"] is None
        assert count_tokens(choice["text"]) == 16 == body["usage"]["completion_tokens"]
        assert body["usage"]["prompt_tokens"] == 5
        # a list of prompts: n choices per prompt, prompts summed once
        status, body, _ = await post(
            session, fake, COMPLETIONS, {"prompt": ["a", "b c"], "n": 2, "max_tokens": 3}
        )
        assert status == 200
        assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
        assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 12, "total_tokens": 15}


async def test_models_endpoint_and_unknown_routes(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(models=["a", "b"]) as fake:
        async with session.get(fake.base_url + "/models") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["a", "b"]
        async with session.get(fake.base_url + "/nothing") as resp:
            assert resp.status == 404
            assert_error(await resp.json())
        async with session.get(fake.base_url + CHAT) as resp:
            assert resp.status == 405
            assert_error(await resp.json())
        assert fake.stats.requests == 1 and fake.stats.faults["bad_request"] == 1


async def test_stop_max_tokens_and_finish_reason(session: aiohttp.ClientSession) -> None:
    def reply(prompt: str, index: int, rng: Any) -> str:
        return "Step one.\n\nStep two.\n\nThe answer is 4."

    async with FakeProvider(reply=reply) as fake:
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({}, "Step one.\n\nStep two.\n\nThe answer is 4.", "stop"),
            ({"stop": "\n\n"}, "Step one.", "stop"),
            ({"stop": ["answer", "two"]}, "Step one.\n\nStep ", "stop"),
            ({"stop": "nowhere"}, "Step one.\n\nStep two.\n\nThe answer is 4.", "stop"),
            ({"max_tokens": 3}, "Step one.\n\nStep", "length"),
            ({"max_completion_tokens": 2, "max_tokens": 50}, "Step one.", "length"),
            ({"max_tokens": 2, "stop": "\n\n"}, "Step one.", "stop"),
            ({"max_tokens": 1, "stop": "\n\n"}, "Step", "length"),
        ]
        for extra, text, finish in cases:
            status, body, _ = await post(session, fake, CHAT, chat(**extra))
            assert status == 200, body
            (choice,) = body["choices"]
            assert (choice["message"]["content"], choice["finish_reason"]) == (text, finish), extra
            assert body["usage"]["completion_tokens"] == count_tokens(text)
        status, body, _ = await post(
            session, fake, COMPLETIONS, {"model": "m", "prompt": "x", "stop": ["\n\n"]}
        )
        assert body["choices"][0]["text"] == "Step one."


async def test_n_honoured_by_openai_and_vllm(session: aiohttp.ClientSession) -> None:
    for flavor in ("openai", "vllm"):
        async with FakeProvider(flavor) as fake:
            status, body, _ = await post(session, fake, CHAT, chat(n=5))
            assert status == 200
            assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3, 4]
            texts = [c["message"]["content"] for c in body["choices"]]
            assert body["usage"]["prompt_tokens"] == chat_prompt_tokens(USER)  # once
            assert body["usage"]["completion_tokens"] == sum(map(count_tokens, texts))
            assert fake.stats.choices == 5


async def test_llamacpp_ignores_n_and_prompt_lists_fail(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("llamacpp", models=["x"]) as fake:
        status, body, headers = await post(session, fake, CHAT, chat(n=4))
        assert status == 200 and len(body["choices"]) == 1
        assert body["usage"]["completion_tokens"] > 0
        assert not any(h.startswith("x-ratelimit") for h in headers)
        status, body, _ = await post(session, fake, COMPLETIONS, {"prompt": ["a", "b"]})
        assert status == 500
        assert_error(body)
        assert fake.stats.faults["unsupported"] == 1


async def test_groq_quirks(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("groq") as fake:
        status, body, _ = await post(session, fake, CHAT, chat(n=2))
        assert status == 400
        assert assert_error(body)["message"] == "'n' : number must be at most 1"
        for extra in ({"logprobs": True}, {"top_logprobs": 2}, {"logit_bias": {"1": 2}}):
            status, body, _ = await post(session, fake, CHAT, chat(**extra))
            assert status == 400, extra
            assert_error(body)
        status, body, _ = await post(session, fake, CHAT, chat(n=1, logprobs=None))
        assert status == 200
        assert fake.stats.faults["bad_request"] == 4 and fake.stats.ok == 1


async def test_cerebras_quirks(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cerebras") as fake:
        bad: list[dict[str, Any]] = [
            {"n": 3},
            {"stop": ["a", "b", "c", "d", "e"]},
            {"temperature": 1.6},
            {"temperature": -0.1},
        ]
        for extra in bad:
            status, body, _ = await post(session, fake, CHAT, chat(**extra))
            assert status == 400, extra
            assert_error(body)
        status, body, _ = await post(
            session, fake, CHAT, chat(temperature=1.5, stop=["a", "b", "c", "d"], n=1)
        )
        assert status == 200


async def test_bad_requests(session: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        bad: list[Any] = [
            b"{not json",
            b"[1, 2]",
            {"messages": USER},  # openai needs a model
            {"model": "m"},
            {"model": "m", "messages": []},
            chat(n="2"),
            chat(n=0),
            chat(max_tokens=0),
            chat(temperature=2.5),
            chat(stop=[1]),
            chat(top_logprobs=3),  # without logprobs
            chat(stream=True),
        ]
        for body_in in bad:
            status, body, headers = await post(session, fake, CHAT, body_in)
            assert status == 400, body_in
            assert_error(body)
            assert "x-ratelimit-limit-requests" in headers
        assert fake.stats.requests == len(bad) == fake.stats.faults["bad_request"]
        assert fake.stats.ok == 0 and fake.stats.billed_tokens == 0


async def test_logprobs_formats(session: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        status, body, _ = await post(session, fake, CHAT, chat(logprobs=True, top_logprobs=3))
        assert status == 200
        choice = body["choices"][0]
        content = choice["logprobs"]["content"]
        assert "".join(t["token"] for t in content) == choice["message"]["content"]
        for t in content:
            assert t["logprob"] <= 0 and bytes(t["bytes"]).decode() == t["token"]
            assert len(t["top_logprobs"]) == 3 and t["top_logprobs"][0]["token"] == t["token"]
            assert {"token", "logprob", "bytes"} <= t["top_logprobs"][1].keys()

        status, body, _ = await post(
            session, fake, COMPLETIONS, {"model": "m", "prompt": "Q: 2 * 3", "logprobs": 2}
        )
        lp = body["choices"][0]["logprobs"]
        text = body["choices"][0]["text"]
        assert "".join(lp["tokens"]) == text
        assert len(lp["token_logprobs"]) == len(lp["tokens"]) == len(lp["top_logprobs"])
        assert all(len(d) == 2 for d in lp["top_logprobs"])
        assert lp["text_offset"][0] == 0
        assert [text[o:] for o in lp["text_offset"]][1] == text[len(lp["tokens"][0]) :]

        status, body, _ = await post(
            session,
            fake,
            COMPLETIONS,
            {"model": "m", "prompt": "Q: 2 * 3", "logprobs": 0, "echo": True, "max_tokens": 2},
        )
        lp = body["choices"][0]["logprobs"]
        assert body["choices"][0]["text"].startswith("Q: 2 * 3")
        assert lp["tokens"][:4] == tokenize("Q: 2 * 3") and lp["token_logprobs"][0] is None
        assert lp["top_logprobs"] is None
        assert body["usage"]["completion_tokens"] == 2  # the echo is not billed as completion


async def test_request_seed_is_deterministic(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(seed=1) as a, FakeProvider(seed=2) as b:
        first = await post(session, a, CHAT, chat(n=8, seed=7))
        second = await post(session, b, CHAT, chat(n=8, seed=7))
        assert first[1]["choices"] == second[1]["choices"]
    # without a request seed, the server seed decides
    outs = []
    for _ in range(2):
        async with FakeProvider(seed=3) as fake:
            outs.append((await post(session, fake, CHAT, chat(n=8)))[1]["choices"])
    assert outs[0] == outs[1]


# -- auth, models, context ----------------------------------------------------------------------


async def test_auth(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(api_key="sk-test") as fake:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, body, _ = await post(session, fake, CHAT, chat(), headers)
            assert status == 401
            err = assert_error(body, "invalid_api_key")
            assert err["type"] == "invalid_request_error"
        status, _, _ = await post(session, fake, CHAT, chat(), {"Authorization": "Bearer sk-test"})
        assert status == 200
        async with session.get(fake.base_url + "/models") as resp:
            assert resp.status == 401
        assert fake.stats.faults["unauthorized"] == 2 and fake.stats.ok == 1


async def test_echo_auth_quotes_the_key_in_every_error_body(
    session: aiohttp.ClientSession,
) -> None:
    """``echo_auth`` imitates gateways that quote the key: error answers (decided while
    planning, and injected faults) carry it; successes do not."""
    wrong = {"Authorization": "Bearer sk-wrong-key-0123456789"}
    async with FakeProvider(api_key="sk-test", echo_auth=True) as fake:
        status, body, _ = await post(session, fake, CHAT, chat(), wrong)
        assert status == 401
        message = assert_error(body, "invalid_api_key")["message"]
        assert "key received: sk-wrong-key-0123456789" in message
        assert "'Authorization': 'Bearer sk-wrong-key-0123456789'" in message
        right = {"Authorization": "Bearer sk-test"}
        status, body, _ = await post(session, fake, CHAT, chat(), right)
        assert status == 200 and "sk-test" not in json.dumps(body)
    async with FakeProvider(echo_auth=True, faults=Faults(server_error=1.0)) as fake:
        status, body, _ = await post(session, fake, CHAT, chat(), wrong)
        assert status == 500 and "sk-wrong-key-0123456789" in assert_error(body)["message"]


async def test_unknown_model(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(models=["good"]) as fake:
        status, body, _ = await post(session, fake, CHAT, {**chat(), "model": "bad"})
        assert status == 404
        assert_error(body, "model_not_found")
        status, _, _ = await post(session, fake, CHAT, {**chat(), "model": "good"})
        assert status == 200
        assert fake.stats.faults["model_not_found"] == 1


async def test_context_length(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(context_window=100, reply=words(500)) as fake:
        prompt_tokens = chat_prompt_tokens(USER)
        status, body, _ = await post(session, fake, CHAT, chat(max_tokens=101 - prompt_tokens))
        assert status == 400
        assert "maximum context length" in assert_error(body, "context_length_exceeded")["message"]
        status, body, _ = await post(session, fake, CHAT, chat(max_tokens=100 - prompt_tokens))
        assert status == 200
        # without max tokens the chat gets what is left of the window
        status, body, _ = await post(session, fake, CHAT, chat())
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["total_tokens"] == 100
        long_prompt = " ".join(["w"] * 90)
        status, body, _ = await post(  # 90 + the completions default of 16
            session, fake, COMPLETIONS, {"model": "m", "prompt": long_prompt}
        )
        assert status == 400
        assert_error(body, "context_length_exceeded")
        assert fake.stats.faults["context_length_exceeded"] == 2


# -- rate-limit headers and enforcement ---------------------------------------------------------


async def test_openai_and_groq_headers(session: aiohttp.ClientSession) -> None:
    for flavor in ("openai", "groq"):
        async with FakeProvider(flavor) as fake:
            remaining = []
            for _ in range(3):
                _, body, h = await post(session, fake, CHAT, chat())
                assert int(h["x-ratelimit-limit-requests"]) >= 1_000_000
                assert int(h["x-ratelimit-limit-tokens"]) >= 1_000_000
                remaining.append(
                    (
                        int(h["x-ratelimit-remaining-requests"]),
                        int(h["x-ratelimit-remaining-tokens"]),
                    )
                )
                assert 0 < parse_duration(h["x-ratelimit-reset-requests"]) <= 60
                assert 0 < parse_duration(h["x-ratelimit-reset-tokens"]) <= 60
                assert "retry-after" not in h
            assert remaining[0][0] - remaining[1][0] == 1 == remaining[1][0] - remaining[2][0]
            tokens_used = remaining[0][1] - remaining[1][1]
            assert tokens_used == body["usage"]["total_tokens"]


def test_duration_format() -> None:
    from ttc.testing.fake_provider import _fmt_duration

    assert _fmt_duration(179.56) == "2m59.56s"
    assert _fmt_duration(7.66) == "7.66s"
    assert _fmt_duration(1.0) == "1s"
    assert _fmt_duration(0.02) == "20ms"
    assert _fmt_duration(0) == "0s"
    assert _fmt_duration(59.999) == "1m0s"
    assert _fmt_duration(3725) == "1h2m5s"
    for s in ("2m59.56s", "7.66s", "1s", "20ms", "0s", "1h2m5s"):
        parse_duration(s)


async def test_cerebras_headers(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("cerebras", rpm=10, tpm=10_000) as fake:
        _, _, h = await post(session, fake, CHAT, chat())
        assert int(h["x-ratelimit-limit-requests-day"]) == 10
        assert int(h["x-ratelimit-limit-tokens-minute"]) == 10_000
        assert int(h["x-ratelimit-remaining-requests-day"]) == 9
        assert int(h["x-ratelimit-remaining-tokens-minute"]) < 10_000
        assert 0 < float(h["x-ratelimit-reset-requests-day"]) <= 60
        assert 0 < float(h["x-ratelimit-reset-tokens-minute"]) <= 60
        assert "x-ratelimit-limit-requests" not in h


async def test_no_rate_headers_for_local_servers(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("vllm") as fake:
        _, _, h = await post(session, fake, CHAT, chat(n=2))
        assert not any(k.startswith("x-ratelimit") for k in h)


async def test_rpm_enforced(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(rpm=3, rate_window=0.5) as fake:
        remaining = []
        for _ in range(3):
            status, _, h = await post(session, fake, CHAT, chat())
            assert status == 200
            remaining.append(int(h["x-ratelimit-remaining-requests"]))
        assert remaining == [2, 1, 0]
        status, body, h = await post(session, fake, CHAT, chat())
        assert status == 429
        err = assert_error(body, "rate_limit_exceeded")
        assert err["type"] == "requests"
        retry = float(h["retry-after"])
        assert 0 < retry <= 0.5
        assert h["x-ratelimit-remaining-requests"] == "0"
        await asyncio.sleep(retry + 0.02)
        status, _, h = await post(session, fake, CHAT, chat())
        assert status == 200 and h["x-ratelimit-remaining-requests"] == "2"
        s = fake.stats
        assert (s.requests, s.ok, s.faults["rate_limited"]) == (5, 4, 1)


async def test_rpm_default_window_is_a_minute(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("groq", rpm=1) as fake:
        assert (await post(session, fake, CHAT, chat()))[0] == 200
        status, _, h = await post(session, fake, CHAT, chat())
        assert status == 429 and 59 < float(h["retry-after"]) <= 60
        assert 59 < parse_duration(h["x-ratelimit-reset-requests"]) <= 60


async def test_tpm_enforced(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(tpm=30, reply=words(10)) as fake:
        statuses = []
        for _ in range(4):
            status, body, h = await post(session, fake, CHAT, chat())
            statuses.append(status)
        # each success bills 9 prompt + 10 completion tokens; the window refuses at >= 30
        assert statuses == [200, 200, 429, 429]
        assert assert_error(body, "rate_limit_exceeded")["type"] == "tokens"
        assert h["x-ratelimit-remaining-tokens"] == "0"
        assert fake.stats.billed_tokens == 38


# -- faults and exact accounting ----------------------------------------------------------------


async def test_server_error_fault(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(faults=Faults(server_error=1.0)) as fake:
        status, body, h = await post(session, fake, CHAT, chat())
        assert status == 500
        assert assert_error(body)["type"] == "server_error"
        assert "x-ratelimit-remaining-requests" in h
        s = fake.stats
        assert (s.requests, s.ok, s.billed_tokens, s.faults["server_error"]) == (1, 0, 0, 1)


async def test_rate_limit_fault(session: aiohttp.ClientSession) -> None:
    async with FakeProvider("groq", faults=Faults(rate_limit=1.0)) as fake:
        status, body, h = await post(session, fake, CHAT, chat())
        assert status == 429 and h["retry-after"] == "0.05"
        assert_error(body, "rate_limit_exceeded")
        assert "x-ratelimit-reset-tokens" in h
        assert fake.stats.faults["rate_limit"] == 1 and fake.stats.ok == 0


async def test_timeout_fault_and_fast_stop(session: aiohttp.ClientSession) -> None:
    fake = FakeProvider(faults=Faults(timeout=1.0, timeout_delay=30.0))
    await fake.start()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await post_with_timeout(session, fake, 0.2)
        assert fake.stats.faults["timeout"] == 1 and fake.in_flight == 1
        task = asyncio.ensure_future(post_with_timeout(session, fake, 5.0))
        await asyncio.sleep(0.1)
    finally:
        started = time.monotonic()
        await fake.stop()
        assert time.monotonic() - started < 2.0
    await asyncio.gather(task, return_exceptions=True)
    s = fake.stats
    assert (s.requests, s.ok, s.billed_tokens, s.faults["timeout"]) == (2, 0, 0, 2)


async def test_stop_cancels_slow_requests(session: aiohttp.ClientSession) -> None:
    fake = FakeProvider(latency=30.0)
    await fake.start()
    task = asyncio.ensure_future(post(session, fake, CHAT, chat()))
    await asyncio.sleep(0.1)
    assert fake.in_flight == 1
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 2.0
    with pytest.raises(aiohttp.ClientError):
        await task
    assert fake.stats.requests == 1 and fake.stats.ok == 0 and fake.in_flight == 0


async def test_reply_errors_are_reported(session: aiohttp.ClientSession) -> None:
    def broken(prompt: str, index: int, rng: Any) -> str:
        raise KeyError("oops")

    async with FakeProvider(reply=broken) as fake:
        status, body, _ = await post(session, fake, CHAT, chat())
        assert status == 500 and "KeyError" in assert_error(body)["message"]
        assert fake.stats.faults["internal_error"] == 1


async def post_with_timeout(session: aiohttp.ClientSession, fake: FakeProvider, t: float) -> int:
    timeout = aiohttp.ClientTimeout(total=t)
    async with session.post(fake.base_url + CHAT, json=chat(), timeout=timeout) as resp:
        await resp.read()
        return resp.status


async def test_timeout_fault_answers_200_unbilled(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(faults=Faults(timeout=1.0, timeout_delay=0.1)) as fake:
        status, body, _ = await post(session, fake, CHAT, chat())
        assert status == 200 and body["choices"]
        assert fake.stats.ok == 0 and fake.stats.billed_tokens == 0


async def test_malformed_fault(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(faults=Faults(malformed=1.0)) as fake:
        status, body, _ = await post(session, fake, CHAT, chat())
        assert status == 200 and isinstance(body, str)  # did not parse
        s = fake.stats
        assert (s.ok, s.billed_tokens, s.choices, s.faults["malformed"]) == (0, 0, 0, 1)


async def test_fewer_choices_fault(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(faults=Faults(fewer_choices=1.0)) as fake:
        got = []
        billed = 0
        for _ in range(10):
            status, body, _ = await post(session, fake, CHAT, chat(n=4))
            assert status == 200
            got.append(len(body["choices"]))
            billed += body["usage"]["total_tokens"]
            assert [c["index"] for c in body["choices"]] == list(range(len(body["choices"])))
        assert all(1 <= k <= 3 for k in got)
        s = fake.stats
        assert s.choices == sum(got) and s.billed_tokens == billed and s.ok == 10
        assert s.faults["fewer_choices"] == 10
        # n=1 cannot return fewer: not a fault
        status, body, _ = await post(session, fake, CHAT, chat())
        assert len(body["choices"]) == 1 and s.faults["fewer_choices"] == 10


async def test_mixed_faults_accounting_is_exact(session: aiohttp.ClientSession) -> None:
    faults = Faults(
        server_error=0.1,
        rate_limit=0.1,
        timeout=0.1,
        malformed=0.1,
        fewer_choices=0.1,
        timeout_delay=5.0,
    )

    async def call() -> tuple[int | None, Any]:
        try:
            status, body, _ = await post(session, fake, CHAT, chat(n=3), timeout=2.0)
        except asyncio.TimeoutError:
            return None, None
        return status, body

    async with FakeProvider("openai", faults=faults, seed=5, latency=0.005) as fake:
        results = await asyncio.gather(*(call() for _ in range(300)))
        s = fake.stats
        valid = [b for st, b in results if st == 200 and isinstance(b, dict)]
        assert s.requests == 300
        assert s.ok == len(valid)
        assert sum(st is None for st, _ in results) == s.faults["timeout"] > 0
        assert sum(st == 500 for st, _ in results) == s.faults["server_error"] > 0
        assert sum(st == 429 for st, _ in results) == s.faults["rate_limit"] > 0
        assert sum(isinstance(b, str) for _, b in results) == s.faults["malformed"] > 0
        short = sum(len(b["choices"]) < 3 for b in valid)
        assert short == s.faults["fewer_choices"] > 0
        assert s.requests == s.ok + sum(s.faults.values()) - s.faults["fewer_choices"]
        assert s.choices == sum(len(b["choices"]) for b in valid)
        assert s.billed_tokens == sum(b["usage"]["total_tokens"] for b in valid)


async def test_exact_billing_matches_client_view(session: aiohttp.ClientSession) -> None:
    faults = Faults(server_error=0.15, rate_limit=0.15, malformed=0.15, fewer_choices=0.15)
    async with FakeProvider(faults=faults, seed=11) as fake:
        results = await asyncio.gather(*(post(session, fake, CHAT, chat(n=4)) for _ in range(200)))
        valid = [b for st, b, _ in results if st == 200 and isinstance(b, dict)]
        s = fake.stats
        assert s.ok == len(valid)
        assert s.choices == sum(len(b["choices"]) for b in valid)
        assert s.billed_prompt_tokens == sum(b["usage"]["prompt_tokens"] for b in valid)
        assert s.billed_completion_tokens == sum(b["usage"]["completion_tokens"] for b in valid)
        assert s.requests == 200 == s.ok + sum(s.faults.values()) - s.faults["fewer_choices"]


async def test_fault_sequence_is_seeded(session: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        async with FakeProvider(faults=Faults(server_error=0.5), seed=seed) as fake:
            return [(await post(session, fake, CHAT, chat()))[0] for _ in range(20)]

    assert await statuses(1) == await statuses(1)
    assert await statuses(1) != await statuses(2)


def test_faults_validation() -> None:
    with pytest.raises(ValueError):
        Faults(server_error=1.5)
    with pytest.raises(ValueError):
        Faults(server_error=0.6, timeout=0.6)
    with pytest.raises(ValueError):
        FakeProvider("bogus")  # type: ignore[arg-type]


# -- concurrency, stats, lifecycle --------------------------------------------------------------


async def test_concurrency_and_max_in_flight(session: aiohttp.ClientSession) -> None:
    async with FakeProvider(latency=0.2) as fake:
        started = time.monotonic()
        results = await asyncio.gather(*(post(session, fake, CHAT, chat()) for _ in range(300)))
        elapsed = time.monotonic() - started
        assert all(st == 200 for st, _, _ in results)
        assert elapsed < 2.0
        assert fake.stats.max_in_flight >= 200 and fake.in_flight == 0
        fake.reset_stats()
        assert fake.stats.requests == 0 and fake.stats.max_in_flight == 0
        assert not any(fake.stats.faults.values())


async def test_stats_endpoints(session: aiohttp.ClientSession) -> None:
    async with FakeProvider() as fake:
        stats = fake.stats
        await post(session, fake, CHAT, chat())
        root = fake.base_url.removesuffix("/v1")
        async with session.get(root + "/_fake/stats") as resp:
            remote = await resp.json()
        assert remote["requests"] == 1 and remote["ok"] == 1 and remote["in_flight"] == 0
        assert remote["billed_prompt_tokens"] == stats.billed_prompt_tokens
        async with session.post(root + "/_fake/reset") as resp:
            assert resp.status == 200
        assert stats.requests == 0 and fake.stats is stats


async def test_start_stop_twice_and_not_started() -> None:
    fake = FakeProvider()
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    await fake.start()
    with pytest.raises(RuntimeError):
        await fake.start()
    await fake.stop()
    await fake.stop()


def test_module_entry_point() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "ttc.testing.fake_provider", "--flavor", "groq"]
    cmd += ["--port", "0", "--latency", "0.01", "--seed", "3", "--rpm", "100", "--print-stats"]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert m is not None, line + (proc.stderr.read() if proc.stderr else "")
        base_url = m.group(1)

        async def one() -> tuple[int, dict[str, Any], str]:
            async with aiohttp.ClientSession() as s, s.post(base_url + CHAT, json=chat()) as resp:
                return resp.status, await resp.json(), resp.headers["x-ratelimit-limit-requests"]

        status, body, limit = asyncio.run(one())
        assert status == 200 and body["choices"] and limit == "100"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "found in sys.modules" not in err  # no runpy double-import warning
    stats = json.loads(err.strip().splitlines()[-1])["stats"]
    assert stats["requests"] == 1 and stats["ok"] == 1
