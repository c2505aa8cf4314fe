"""Focused tests of runtime pieces: the concurrency limit, rate-limit headers and pacing,
retry waits, pricing."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from ttc import Price, register_price
from ttc.errors import RateLimitError, ServerError
from ttc.runtime.concurrency import ConcurrencyLimit
from ttc.runtime.pricing import lookup_price
from ttc.runtime.ratelimit import (
    RateLimiter,
    RateLimitInfo,
    parse_duration,
    parse_rate_limit_headers,
)
from ttc.runtime.retry import RetryPolicy

pytestmark = pytest.mark.anyio


async def test_concurrency_limit_is_fifo_and_survives_cancellation() -> None:
    limit = ConcurrencyLimit(2)
    running = peak = 0
    order: list[int] = []

    async def worker(i: int) -> None:
        nonlocal running, peak
        async with limit:
            order.append(i)
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.01)
            running -= 1

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(worker, i)
            await anyio.lowlevel.checkpoint()
    assert peak == 2
    assert order == list(range(10))

    # A waiter cancelled while queued must not take a slot with it.
    async with limit, limit:
        with anyio.move_on_after(0.01):
            await limit.acquire()
        assert limit.waiting == 0
    async with limit, limit:
        pass  # both slots are free again


def test_duration_and_header_parsing() -> None:
    assert parse_duration("2m59.56s") == pytest.approx(179.56)
    assert parse_duration("7.66s") == pytest.approx(7.66)
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m") == 3720
    assert parse_duration("soon") is None
    groq = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-limit-tokens": "6000",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-remaining-tokens": "5997",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-reset-tokens": "7.66s",
        }
    )
    # Reset times are read only once something is used up (parsing them costs CPU per response).
    assert groq == RateLimitInfo(14400, 6000, 14370, 5997, None, None)
    spent = parse_rate_limit_headers(
        {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-reset-tokens": "7.66s",
        }
    )
    assert spent == RateLimitInfo(None, None, 0, 0, pytest.approx(179.56), 7.66)
    cerebras = parse_rate_limit_headers(
        {
            "x-ratelimit-limit-tokens-minute": "60000",
            "x-ratelimit-remaining-tokens-minute": "0",
            "x-ratelimit-reset-tokens-minute": "12.5",
            "x-ratelimit-remaining-requests-day": "100",
        }
    )
    assert cerebras is not None
    assert (cerebras.limit_tokens, cerebras.remaining_tokens) == (60000, 0)
    assert cerebras.reset_tokens_s == 12.5
    assert parse_rate_limit_headers({"content-type": "application/json"}) is None


async def test_rate_limiter_paces_requests_per_minute() -> None:
    limiter = RateLimiter(rpm=600)  # a bucket of 600 that refills 10 a second
    limiter._requests.level = 0  # type: ignore[union-attr]  # start empty
    start = time.monotonic()
    for _ in range(3):
        await limiter.acquire(1)
    assert time.monotonic() - start >= 0.25


async def test_exhausted_headers_pause_every_request() -> None:
    limiter = RateLimiter()
    limiter.observe(RateLimitInfo(remaining_tokens=0, reset_tokens_s=0.2))
    start = time.monotonic()
    await limiter.acquire(10)
    assert time.monotonic() - start >= 0.18


def test_retry_waits_prefer_retry_after() -> None:
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=4.0, max_retry_after=30)
    assert policy.wait_seconds(1, RateLimitError("slow down", retry_after=2.5)) == 2.5
    assert policy.wait_seconds(1, RateLimitError("slow down", retry_after=999)) == 30
    waits = [policy.wait_seconds(k, ServerError("boom")) for k in range(1, 8)]
    assert all(0 <= w <= min(4.0, 2 ** (k - 1)) for k, w in enumerate(waits, start=1))


def test_prices_from_table_and_overrides() -> None:
    gpt = lookup_price("gpt-4o-mini", "openai")
    assert gpt is not None and gpt.input_per_token > 0
    assert lookup_price("no-such-model-xyz", "groq") is None
    register_price("groq/my-finetune", Price.per_million(0.05, 0.08))
    price = lookup_price("my-finetune", "groq")
    assert price is not None and price.cost(1_000_000, 1_000_000) == pytest.approx(0.13)


@pytest.mark.anyio
async def test_a_failing_callback_cancels_the_other_fanned_out_requests() -> None:
    """An exception that is not a provider's (a bug in a caller's ``on_completions``, say)
    ends ``generate`` at once: the other requests of the fan-out are cancelled and finished
    (their worst case kept in the budget), not left running detached."""
    from ttc import Budget
    from ttc.adapters import FunctionModel

    finished: list[int] = []

    async def slow(request: object, index: int) -> str:
        await anyio.sleep(0.02 if index == 0 else 0.5)
        finished.append(index)
        return "42"

    model = FunctionModel(slow, native_n=False, budget=Budget(requests=100))

    def explode(batch: object) -> None:
        raise ValueError("a bug in the caller's callback")

    start = time.monotonic()
    with pytest.raises(ValueError, match="callback"):
        await model.generate("q", n=4, on_completions=explode)
    assert time.monotonic() - start < 0.4
    assert finished == [0]  # the three slow requests were cancelled, not left to finish
    ledger = model.ledger
    assert ledger is not None and ledger.outstanding == 0  # every reservation settled
    assert ledger.spent_requests == 4
    await anyio.sleep(0.6)
    assert finished == [0]


async def test_a_waiter_cancelled_as_the_slot_is_released_ends_cancelled() -> None:
    """The holder releases while the waiter is being cancelled in the same loop iteration:
    the waiter must end with CancelledError (not a ValueError from the queue), and the slot
    must be free again."""
    import asyncio

    limit = ConcurrencyLimit(1)
    await limit.acquire()
    waiter = asyncio.ensure_future(limit.acquire())
    await asyncio.sleep(0)  # queued
    waiter.cancel()
    limit.release()  # finds the cancelled waiter, skips it, frees the slot
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limit.try_acquire() and limit.waiting == 0


async def test_what_the_provider_says_remains_wins_over_the_refund() -> None:
    """A response says 100 tokens remain: the bucket must not be above that afterwards, even
    though the request's unused worst case is refunded."""
    from ttc.adapters import FunctionModel
    from ttc.runtime.model import RawResponse
    from ttc.runtime.ratelimit import RateLimitInfo

    class Reporting(FunctionModel):
        async def _send(self, request):  # type: ignore[no-untyped-def]
            raw: RawResponse = await super()._send(request)
            raw.rate_limits = RateLimitInfo(limit_tokens=10_000, remaining_tokens=100)
            return raw

    model = Reporting(lambda request, i: "ok")
    await model.generate("q", n=1)
    bucket = model.rate_limiter._tokens
    assert bucket is not None and bucket.level <= 100


async def test_retries_stop_by_kind_of_failure_and_the_error_counts_them() -> None:
    """Timeouts and connections that cannot be opened get fewer attempts than other failures
    (each timeout costs the whole timeout; a refused connection rarely heals); what cannot heal
    is not retried; the error says how many attempts were made."""
    from ttc.adapters import FunctionModel
    from ttc.errors import (
        AuthenticationError,
        ProviderError,
        ProviderTimeoutError,
        ProviderUnreachableError,
    )
    from ttc.types import GenerateRequest

    def failing(*errors: ProviderError) -> tuple[FunctionModel, list[int]]:
        calls: list[int] = []

        def fn(request: GenerateRequest, index: int) -> str:
            calls.append(1)
            raise errors[min(len(calls), len(errors)) - 1]

        return FunctionModel(fn, retry=RetryPolicy(initial_backoff=0)), calls

    cases: list[tuple[tuple[ProviderError, ...], int]] = [
        ((ProviderTimeoutError("slow"),), 2),
        ((ProviderUnreachableError("refused"),), 3),
        ((ServerError("boom", status=500),), 8),
        ((AuthenticationError("bad key", status=401),), 1),
        # timeouts are counted over the request, not only in a row
        (
            (
                ServerError("a"),
                ProviderTimeoutError("b"),
                ServerError("c"),
                ProviderTimeoutError("d"),
            ),
            4,
        ),
    ]
    for errors, attempts in cases:
        model, calls = failing(*errors)
        with pytest.raises(ProviderError) as info:
            await model.generate("q")
        assert len(calls) == attempts and info.value.attempts == attempts
        assert (f"({attempts} attempts)" in str(info.value)) == (attempts > 1)


def test_redact_hides_keys_in_every_form_a_gateway_may_quote() -> None:
    from pydantic import SecretStr

    from ttc.runtime.redact import header_secrets, redact

    key = "sk-live/abc+def=123456"
    texts = [
        f"Incorrect API key provided: {key}.",
        '{"error": {"message": "bad key ' + key.replace("/", "\\/") + '"}}',  # JSON-escaped
        "https://gateway/v1?key=sk-live%2Fabc%2Bdef%3D123456",  # URL-quoted
        "headers: {'Authorization': 'Bearer some-other-token.x'}",
        "Authorization: Basic dXNlcjpwYXNz",
        '"x-api-key": "az-0123456789"',
    ]
    for text in texts:
        out = redact(text, [SecretStr(key), None])
        assert "[redacted]" in out, text
        for secret in (key, "sk-live%2Fabc", "abc\\/def", "some-other-token", "dXNlcjpw", "az-01"):
            assert secret not in out, (text, out)
    # short test keys are not searched for literally: they would garble ordinary text
    assert redact("the key was k", ["k"]) == "the key was k"
    assert header_secrets({"api-key": "a", "X-Trace": "b", "Authorization": "c"}) == ["a", "c"]


async def test_a_request_cancelled_while_waiting_for_a_slot_leaves_the_queue() -> None:
    """A request queued behind a full concurrency limit and cancelled there (an early stop)
    must give up its place: nothing is charged for it, and the slot goes to the next one."""
    import asyncio

    from ttc.adapters import FunctionModel

    release = asyncio.Event()

    async def reply(request: object, index: int) -> str:
        if index == 0:
            await release.wait()
        return "ok"

    model = FunctionModel(reply, max_concurrency=1)
    first = asyncio.ensure_future(model.generate("q"))
    await asyncio.sleep(0.01)  # holds the only slot
    queued = asyncio.ensure_future(model.generate("q"))
    await asyncio.sleep(0.01)
    limiter = model._loop_state().limiter
    assert limiter.waiting == 1
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert limiter.waiting == 0
    release.set()
    assert [c.text for c in await first] == ["ok"]
    assert [c.text for c in await model.generate("q")] == ["ok"]  # the slot is free again
    assert model.usage.requests == 2
