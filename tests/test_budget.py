"""Hard budgets: never passed under any concurrency, waiting instead of refusing when only
reservations stand in the way, the best result returned when money or time runs out."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttc import BestOfN, Budget, BudgetExceeded, ConfigError, Price, SamplingParams
from ttc.adapters import FunctionModel
from ttc.runtime.budget import Charge, Ledger, reserve
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio


def test_reserve_checks_every_ledger_before_touching_any() -> None:
    roomy = Ledger(Budget(tokens=1000), "provider")
    tight = Ledger(Budget(tokens=10), "run")
    with pytest.raises(BudgetExceeded, match="run budget: tokens limit 10"):
        reserve([roomy, tight], Charge(tokens=50, requests=1))
    assert roomy.reserved_tokens == 0 and tight.reserved_tokens == 0
    held = reserve([roomy, tight], Charge(tokens=10, requests=1))
    held.settle(Charge(tokens=4, requests=1))
    held.settle(Charge(tokens=4, requests=1))  # idempotent
    assert (tight.spent_tokens, tight.reserved_tokens) == (4, 0)


def test_budget_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="tokens"):
        Budget(tokens=-1)
    with pytest.raises(ValueError, match="seconds"):
        Budget(seconds=0)


def _words_model(rng: random.Random, **runtime: object) -> FunctionModel:
    async def reply(request: GenerateRequest, index: int) -> str:
        await anyio.sleep(rng.random() * 0.002)
        return " ".join(["w"] * rng.randint(0, request.params.max_tokens + 5))

    return FunctionModel(reply, **runtime)  # type: ignore[arg-type]


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    seed=st.integers(0, 2**32 - 1),
    provider_tokens=st.one_of(st.none(), st.integers(0, 3000)),
    provider_requests=st.one_of(st.none(), st.integers(0, 40)),
    run_tokens=st.one_of(st.none(), st.integers(0, 1500)),
    run_usd=st.one_of(st.none(), st.floats(0, 0.01)),
    runs=st.integers(1, 6),
    n=st.integers(1, 12),
    max_tokens=st.integers(1, 60),
    native_n=st.booleans(),
    concurrency=st.integers(1, 16),
)
def test_no_hard_limit_is_ever_passed(
    seed: int,
    provider_tokens: int | None,
    provider_requests: int | None,
    run_tokens: int | None,
    run_usd: float | None,
    runs: int,
    n: int,
    max_tokens: int,
    native_n: bool,
    concurrency: int,
) -> None:
    """1,000 randomized runs: several concurrent best-of-n runs share one model with a
    provider budget, each with its own run budget; replies have random lengths (some longer
    than max_tokens, which the model truncates) and random latencies."""
    rng = random.Random(seed)
    model = _words_model(
        rng,
        native_n=native_n,
        max_concurrency=concurrency,
        budget=Budget(tokens=provider_tokens, requests=provider_requests),
        price=Price.per_million(30.0, 60.0),
    )
    strategy = BestOfN(model, n=n, params=SamplingParams(max_tokens=max_tokens))
    run_budget = Budget(tokens=run_tokens, usd=run_usd)
    results = []

    async def main() -> None:
        async def one(i: int) -> None:
            results.append(
                await strategy.run(f"question {i} " * rng.randint(1, 5), budget=run_budget)
            )

        with anyio.fail_after(30):  # a deadlock fails the example instead of hanging
            async with anyio.create_task_group() as tg:
                for i in range(runs):
                    tg.start_soon(one, i)

    anyio.run(main)
    assert model.ledger is not None
    spent = model.ledger.spent
    if provider_tokens is not None:
        assert spent.tokens <= provider_tokens
    if provider_requests is not None:
        assert spent.requests <= provider_requests
    assert model.ledger.reserved_tokens == 0 and model.ledger.reserved_requests == 0
    for result in results:
        if run_tokens is not None:
            assert result.usage.total_tokens <= run_tokens
        if run_usd is not None:
            assert result.usage.cost_usd <= run_usd * (1 + 1e-9)
        if len(result.candidates) < n:
            assert result.stopped_by == "budget"
    # The model's own account equals the sum of the runs' accounts.
    assert model.usage.total_tokens == sum(r.usage.total_tokens for r in results)
    assert model.usage.requests == sum(r.usage.requests for r in results)


async def test_waits_for_reservations_instead_of_stopping_early() -> None:
    # Worst case per request: ~20 prompt-bound + 50 tokens; real use: 1 + 1 token. A budget of
    # 150 tokens cannot hold three reservations at once, but easily pays for 16 real requests.
    model = FunctionModel(lambda r, i: "x", native_n=False)
    result = await BestOfN(model, n=16, params=SamplingParams(max_tokens=50)).run(
        "q", budget=Budget(tokens=150)
    )
    assert len(result.candidates) == 16
    assert result.stopped_by is None
    assert result.usage.total_tokens <= 150


async def test_budget_exhausted_returns_best_so_far_marked() -> None:
    model = FunctionModel(lambda r, i: f"The answer is {i % 2}", native_n=False, max_concurrency=1)
    strategy = BestOfN(model, n=10, params=SamplingParams(max_tokens=8))
    result = await strategy.run("q", budget=Budget(requests=4))
    assert result.stopped_by == "budget"
    assert len(result.candidates) == 4
    assert result.answer in {"0", "1"}
    assert result.usage.requests == 4
    assert any("requests limit 4" in e for e in result.errors)

    raising = BestOfN(model, n=10, on_budget="raise")
    with pytest.raises(BudgetExceeded) as info:
        await raising.run("q", budget=Budget(requests=2))
    assert info.value.result is not None and len(info.value.result.candidates) == 2


async def test_seconds_budget_cancels_in_flight_requests() -> None:
    async def slow(request: GenerateRequest, index: int) -> str:
        await anyio.sleep(0.1 if index < 2 else 30)
        return "The answer is 7"

    model = FunctionModel(slow, native_n=False)
    start = time.perf_counter()
    result = await BestOfN(model, n=6).run("q", budget=Budget(seconds=0.5))
    assert time.perf_counter() - start < 3
    assert result.stopped_by == "budget"
    assert [c.answer for c in result.candidates] == ["7", "7"]
    assert result.answer == "7"


async def test_usd_budget_needs_a_price() -> None:
    async def reply(request: GenerateRequest, index: int) -> str:
        return "hi"

    model = FunctionModel(reply)
    model.price = None  # as for a hosted model missing from the price table
    with pytest.raises(ConfigError, match="price"):
        await BestOfN(model, n=2).run("q", budget=Budget(usd=1.0))


def test_a_usd_budget_on_an_unpriced_model_is_refused_when_the_model_is_made() -> None:
    from ttc import Price
    from ttc.adapters import OpenAI

    with pytest.raises(ConfigError, match="price: no price is known for openai/gpt-unreleased"):
        OpenAI("gpt-unreleased", api_key="k", budget=Budget(usd=1.0))
    priced = OpenAI(
        "gpt-unreleased", api_key="k", budget=Budget(usd=1.0), price=Price.per_million(1, 2)
    )
    assert priced.price is not None
    OpenAI("gpt-unreleased", api_key="k", budget=Budget(tokens=100))  # no USD limit: fine


async def test_cancelled_requests_keep_their_worst_case_in_budgets() -> None:
    async def reply(request: GenerateRequest, index: int) -> str:
        await anyio.sleep(0.01 if index == 0 else 30)
        return "The answer is 3"

    from ttc import RepeatedSample

    model = FunctionModel(reply, native_n=False, budget=Budget(tokens=10_000))
    result = await RepeatedSample(
        model,
        n=4,
        verifier=lambda text: "3" in text,
        stop_on_success=True,
        params=SamplingParams(max_tokens=50),
    ).run("q")
    assert result.stopped_by == "success"
    assert model.ledger is not None
    # Three requests were cut off: what they generated is unknown, so each keeps its worst
    # case (prompt bound + 50 tokens) in the budget, while usage shows only what was reported.
    assert model.ledger.spent_tokens >= result.usage.total_tokens + 3 * 50
    assert model.ledger.outstanding == 0


async def test_the_seconds_budget_bounds_the_waits_between_attempts_too() -> None:
    """A 429 asking for 10 s, a backoff, a model paused by an earlier 429: none may hold a
    run past its ``seconds`` limit; the run returns, stopped by the budget."""
    from ttc import SelfConsistency
    from ttc.errors import RateLimitError, ServerError
    from ttc.runtime.retry import RetryPolicy

    def slow_down(request: GenerateRequest, index: int) -> str:
        raise RateLimitError("slow down", status=429, retry_after=10.0)

    def broken(request: GenerateRequest, index: int) -> str:
        raise ServerError("boom", status=500)

    limited = FunctionModel(slow_down)
    backing_off = FunctionModel(broken, retry=RetryPolicy(initial_backoff=8, max_backoff=8))
    for model in (limited, limited, backing_off):  # the second run meets the 429's pause
        start = time.perf_counter()
        result = await SelfConsistency(model, n=2).run("q", budget=Budget(seconds=0.5))
        assert time.perf_counter() - start < 2.0
        assert result.stopped_by == "budget" and "seconds" in result.errors[0]
    assert limited.rate_limiter.active  # the pause itself still stands for later runs


async def test_a_budget_spent_on_refilling_missing_choices_is_a_budget_stop() -> None:
    """The provider returned 1 of 3 choices and the budget cannot pay for the refills: that is
    the budget stopping the run (``on_budget`` applies), not a provider error."""
    from ttc import BudgetExceeded, SelfConsistency
    from ttc.runtime.model import RawResponse

    class Dropping(FunctionModel):
        async def _send(self, request: GenerateRequest) -> RawResponse:
            raw = await super()._send(request)
            raw.completions = raw.completions[:1]  # a server that ignores n
            return raw

    reply = lambda request, i: "The answer is 7."  # noqa: E731
    result = await SelfConsistency(Dropping(reply), n=3, budget=Budget(requests=1)).run("q")
    assert result.stopped_by == "budget" and len(result.candidates) == 1
    strict = SelfConsistency(Dropping(reply), n=3, budget=Budget(requests=1), on_budget="raise")
    with pytest.raises(BudgetExceeded):
        await strict.run("q")


# -------------------------------------------------------------- one model, many threads and loops


class _ServerThread:
    """A fake provider on an event loop of its own thread, so that synchronous callers
    (``run_sync`` in threads, a blocked notebook loop) cannot block it."""

    def __init__(self, flavor: str = "openai", latency: float = 0.0) -> None:
        import asyncio
        import threading

        from ttc.testing import FakeProvider

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeProvider(flavor, latency=latency)  # type: ignore[arg-type]
        asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def threaded_openai() -> Iterator[_ServerThread]:
    server = _ServerThread("openai", latency=0.01)
    yield server
    server.close()


def test_a_settlement_on_one_loop_wakes_a_waiter_on_another() -> None:
    """The ledger's wait is a future of the waiter's own loop, completed thread-safely: a
    reservation settled on another thread's loop wakes it (the waiter's loop used to sleep on,
    never told, and hung)."""
    import asyncio
    import threading

    from ttc.runtime.budget import reserve_when_affordable

    ledger = Ledger(Budget(tokens=100), "provider")
    held = reserve([ledger], Charge(tokens=100, requests=1))
    waiting = threading.Event()

    async def waiter() -> None:
        waiting.set()
        got = await reserve_when_affordable([ledger], Charge(tokens=60, requests=1))
        got.settle(Charge(tokens=5, requests=1))

    parked = threading.Thread(target=asyncio.run, args=(waiter(),), daemon=True)
    parked.start()
    waiting.wait(10)
    time.sleep(0.05)  # the waiter is parked on its future by now

    async def settle() -> None:
        held.settle(Charge(tokens=10, requests=1))

    asyncio.run(settle())
    parked.join(10)
    assert not parked.is_alive(), "the waiter was never woken"
    assert (ledger.spent_tokens, ledger.outstanding, ledger.reserved_tokens) == (15, 0, 0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("flavor", "budget", "n"),
    [("groq", Budget(requests=20), 3), ("openai", Budget(tokens=5000), 4)],
)
def test_threads_sharing_one_model_and_its_budget_never_hang(
    flavor: str, budget: Budget, n: int
) -> None:
    """Four threads call ``run_sync`` on one model with a provider budget, each on a loop of
    its own: every run ends (a budget stop once the limit is near), the limit is never passed,
    and every reservation settles."""
    import threading

    from ttc import RepeatedSample
    from ttc.adapters import Groq, OpenAI

    server = _ServerThread(flavor, latency=0.01)
    try:
        preset = Groq if flavor == "groq" else OpenAI
        model = preset("gpt-4o-mini", base_url=server.fake.base_url, api_key="k", budget=budget)
        strategy = RepeatedSample(model, n=n)
        stops: list[str | None] = []

        def worker() -> None:
            for i in range(6):
                stops.append(strategy.run_sync(f"what is {i} * 7?").stopped_by)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a run_sync hung"
        assert len(stops) == 24
        ledger = model.ledger
        assert ledger is not None and ledger.outstanding == 0 and ledger.reserved_tokens == 0
        if budget.requests is not None:
            assert "budget" in stops
            assert ledger.spent_requests <= budget.requests
            assert server.fake.stats.requests <= budget.requests
        if budget.tokens is not None:
            assert ledger.spent_tokens <= budget.tokens
            assert server.fake.stats.billed_tokens <= budget.tokens
        assert model.usage.requests == server.fake.stats.requests
    finally:
        server.close()


@pytest.mark.timeout(60, method="thread")  # the blocked main thread cannot take a signal
def test_run_sync_inside_a_loop_with_a_run_in_flight_does_not_wait_for_it(
    threaded_openai: _ServerThread,
) -> None:
    """A notebook: ``create_task(strategy.run(q))`` is in flight when ``run_sync(q2)`` on the
    same model blocks the loop. The in-flight run's reservation cannot settle until run_sync
    returns, so run_sync must not wait for it (that hung the kernel): it stops by budget,
    and the task then finishes normally."""
    import asyncio

    from ttc import RepeatedSample
    from ttc.adapters import OpenAI

    fake = threaded_openai.fake
    fake.latency = 1.0  # the task holds its reservation well past run_sync's check
    model = OpenAI("gpt-4o-mini", base_url=fake.base_url, api_key="k", budget=Budget(tokens=1500))
    strategy = RepeatedSample(model, n=2)  # worst case 2 x 512 + prompt: one fits, not two

    async def notebook() -> None:
        task = asyncio.create_task(strategy.run("what is 3 * 4?"))
        await asyncio.sleep(0.1)  # its request is on the wire, its reservation held
        blocked = strategy.run_sync("what is 5 * 6?")
        assert blocked.stopped_by == "budget" and blocked.candidates == []
        assert blocked.budget_stop is not None and blocked.budget_stop.limit == "tokens"
        first = await task
        assert first.stopped_by is None and len(first.candidates) == 2
        await model.aclose()

    asyncio.run(notebook())
    assert model.ledger is not None and model.ledger.outstanding == 0


async def test_budget_stop_says_which_budget_and_limit_stopped_the_run() -> None:
    from ttc import RepeatedSample

    model = FunctionModel(lambda r, i: "The answer is 7", native_n=False, budget=Budget(requests=3))
    provider_stop = await BestOfN(model, n=5).run("q")
    stop = provider_stop.budget_stop
    assert provider_stop.stopped_by == "budget" and stop is not None
    assert (stop.scope, stop.limit, stop.limit_value, stop.provider) == (
        "function/function",
        "requests",
        3,
        True,
    )
    # A nested strategy's run budget stops the outer run too, and says so.
    fresh = FunctionModel(lambda r, i: "The answer is 7", native_n=False)
    inner = RepeatedSample(fresh, n=3, budget=Budget(tokens=40))
    outer = await RepeatedSample(inner, n=2).run("q", budget=None)
    assert outer.stopped_by == "budget" and outer.budget_stop is not None
    assert (outer.budget_stop.scope, outer.budget_stop.limit) == ("run", "tokens")
    assert not outer.budget_stop.provider
    done = await BestOfN(fresh, n=2).run("q")
    assert done.stopped_by is None and done.budget_stop is None
