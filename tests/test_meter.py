"""One metering layer (``ttc.runtime.meter``) for every request a model sends: a call that
generates nothing (``Model.metered``, as a PRM served on the model's server uses) is charged,
refunded, rate-limited and traced exactly as generation is."""

from __future__ import annotations

import time

import anyio
import pytest

from ttc import Budget, RetryPolicy, run_scope
from ttc.adapters import FunctionModel
from ttc.errors import BadRequestError, ProviderTimeoutError, RateLimitError

pytestmark = pytest.mark.anyio

BOUND = 50  # the prompt tokens a metered call reserves


def model(**runtime: object) -> FunctionModel:
    return FunctionModel(
        lambda request, i: "ok",
        budget=Budget(tokens=10_000, requests=100),
        retry=RetryPolicy(max_attempts=1),
        **runtime,  # type: ignore[arg-type]
    )


async def test_a_delivered_call_is_charged_what_the_provider_reported() -> None:
    m = model()

    async def send() -> tuple[str, int | None]:
        return "rows", 7

    with run_scope(trace=True) as run:
        assert await m.metered(send, prompt_bound=BOUND, kind="pooling") == "rows"
    assert m.ledger is not None
    assert (m.ledger.spent_tokens, m.ledger.spent_requests, m.ledger.outstanding) == (7, 1, 0)
    assert m.usage.prompt_tokens == 7 and m.usage.undelivered_requests == 0
    assert run.trace is not None and len(run.trace) == 1
    event = run.trace[0]
    assert event.model == "function/function (pooling)" and event.error is None
    assert event.prompt_tokens == 7


async def test_a_refusal_costs_nothing_and_an_unknown_outcome_keeps_the_worst_case() -> None:
    refused, lost = model(), model()

    async def bad_request() -> tuple[str, int | None]:
        raise BadRequestError("no", status=400)

    async def timed_out() -> tuple[str, int | None]:
        raise ProviderTimeoutError("no answer")

    with pytest.raises(BadRequestError):
        await refused.metered(bad_request, prompt_bound=BOUND)
    with pytest.raises(ProviderTimeoutError):
        await lost.metered(timed_out, prompt_bound=BOUND)
    assert refused.ledger is not None and lost.ledger is not None
    assert (refused.ledger.spent_tokens, refused.ledger.spent_requests) == (0, 1)
    assert refused.usage.undelivered_requests == 0
    assert (lost.ledger.spent_tokens, lost.ledger.spent_requests) == (BOUND, 1)
    assert lost.usage.undelivered_requests == 1 and lost.usage.prompt_tokens == 0


async def test_a_cancelled_call_keeps_the_worst_case_and_is_traced_as_cancelled() -> None:
    m = model()

    async def hangs() -> tuple[str, int | None]:
        await anyio.sleep(60)
        return "never", None

    with run_scope(trace=True) as run:
        with anyio.move_on_after(0.05):
            await m.metered(hangs, prompt_bound=BOUND)
    assert m.ledger is not None
    assert (m.ledger.spent_tokens, m.ledger.outstanding) == (BOUND, 0)
    assert run.trace is not None and [e.error for e in run.trace] == ["cancelled"]

    # The generation path reports a cancelled request the same way.
    async def sleeps(request: object, i: int) -> str:
        await anyio.sleep(60)
        return "never"

    slow = FunctionModel(sleeps, budget=Budget(tokens=10_000))
    with run_scope(trace=True) as run:
        with anyio.move_on_after(0.05):
            await slow.generate("q")
    assert run.trace is not None and [e.error for e in run.trace] == ["cancelled"]


async def test_a_429_on_a_metered_call_pauses_the_models_requests() -> None:
    """The provider's ``retry-after`` holds back every request of the model, not only the
    generation requests."""
    m = model()

    async def limited() -> tuple[str, int | None]:
        raise RateLimitError("slow down", status=429, retry_after=30)

    with pytest.raises(RateLimitError):
        await m.metered(limited, prompt_bound=BOUND)
    assert m.rate_limiter._paused_until > time.monotonic() + 20


async def test_a_runs_deadline_cuts_a_metered_call_and_keeps_its_worst_case() -> None:
    from ttc.errors import BudgetExceeded

    m = model()

    async def hangs() -> tuple[str, int | None]:
        await anyio.sleep(60)
        return "never", None

    with run_scope(Budget(seconds=0.1)), pytest.raises(BudgetExceeded) as caught:
        await m.metered(hangs, prompt_bound=BOUND)
    assert caught.value.limit == "seconds"
    assert m.ledger is not None and m.ledger.spent_tokens == BOUND
    assert m.usage.undelivered_requests == 1
