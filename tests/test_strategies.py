"""RepeatedSample, BestOfN and SelfConsistency: the algorithms' bookkeeping, early stops,
composition, failures that keep what was paid for, and the sync entry point."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from ttc import BestOfN, RepeatedSample, SamplingParams, SelfConsistency, pass_at_k
from ttc.adapters import FunctionModel
from ttc.errors import AuthenticationError, ConfigError, ServerError
from ttc.runtime.retry import RetryPolicy
from ttc.scoring import FunctionScorer, GSM8KAnswer, MathAnswer, WeightedMajority
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio


def scripted(*answers: str, native_n: bool = True, **runtime: object) -> FunctionModel:
    """A model whose i-th sample says 'The answer is answers[i % len]'."""
    return FunctionModel(
        lambda request, i: f"Let me think. The answer is {answers[i % len(answers)]}.",
        native_n=native_n,
        **runtime,  # type: ignore[arg-type]
    )


async def test_repeated_sample_verifies_every_sample_and_reports_pass_at_k() -> None:
    model = scripted("391", "390", "17", "391")
    result = await RepeatedSample(model, n=8, verifier=MathAnswer("391")).run("17 * 23?")
    assert len(result.candidates) == 8
    assert [c.verified for c in result.candidates] == [True, False, False, True] * 2
    assert result.answer == "391" and result.verified
    assert result.pass_at_k[1] == pytest.approx(pass_at_k(8, 4, 1)) == pytest.approx(0.5)
    assert result.pass_at_k[8] == 1.0
    assert set(result.pass_at_k) == {1, 2, 4, 8}
    assert result.usage.requests == 1  # native n: one request for eight samples


async def test_stop_on_success_cancels_requests_in_flight() -> None:
    started: list[int] = []
    finished: list[int] = []

    async def reply(request: GenerateRequest, i: int) -> str:
        started.append(i)
        await anyio.sleep(0.05 if i == 2 else 5)
        finished.append(i)
        return "The answer is 391"

    model = FunctionModel(reply, native_n=False)
    result = await RepeatedSample(
        model, n=16, verifier=GSM8KAnswer("#### 391"), stop_on_success=True
    ).run("q")
    assert result.stopped_by == "success"
    assert finished == [2]
    assert len(started) == 16
    assert [c.answer for c in result.candidates] == ["391"]
    assert result.pass_at_k == {}  # not an unbiased estimate after an early stop
    # Cancelled requests are counted as sent, with no tokens.
    assert result.usage.requests == 16
    assert sum(1 for e in result.trace if e.error == "cancelled") == 15


async def test_self_consistency_majority_and_early_settlement() -> None:
    model = scripted("7", "7", "8", "7", native_n=False)
    result = await SelfConsistency(model, n=8).run("q")
    assert result.answer == "7"
    assert result.votes == {"7": 6.0, "8": 2.0}
    assert result.tied == []
    tie = await SelfConsistency(scripted("8", "7"), n=4).run("q")
    assert tie.answer == "8" and tie.tied == ["8", "7"]  # level: the earliest won, flagged

    async def slow_tail(request: GenerateRequest, i: int) -> str:
        await anyio.sleep(0.01 * i)
        return "The answer is 5"

    settled = await SelfConsistency(
        FunctionModel(slow_tail, native_n=False), n=9, stop_when_settled=True
    ).run("q")
    # After five agreeing answers of nine, the other four cannot change the vote.
    assert settled.stopped_by == "settled"
    assert settled.answer == "5"
    assert len(settled.candidates) == 5


async def test_best_of_n_with_a_verifier_marks_candidates() -> None:
    result = await BestOfN(scripted("391", "17"), n=4, scorer=MathAnswer("391")).run("q")
    assert [c.verified for c in result.candidates] == [True, False, True, False]
    assert result.verified and result.answer == "391"


async def test_best_of_n_with_scorer_and_weighted_vote() -> None:
    model = scripted("12", "15", "15", "12", "12")
    # The scorer likes 15 a lot and 12 a little: argmax picks 15, so does the weighted vote
    # (2 x 0.9 > 3 x 0.2), while the plain majority says 12.
    scorer = FunctionScorer(lambda text: 0.9 if "15" in text else 0.2)
    best = await BestOfN(model, n=5, scorer=scorer).run("q")
    assert best.answer == "15"
    assert best.best is not None and best.best.score == pytest.approx(0.9)
    weighted = await BestOfN(model, n=5, scorer=scorer, selector=WeightedMajority()).run("q")
    assert weighted.answer == "15"
    assert weighted.votes["15"] == pytest.approx(1.8)
    plain = await BestOfN(model, n=5).run("q")
    assert plain.answer == "12"


async def test_strategy_as_source_composes_and_counts_all_calls() -> None:
    model = scripted("3", "3", "4")
    inner = SelfConsistency(model, n=3)
    outer = BestOfN(inner, n=4)
    result = await outer.run("q")
    assert len(result.candidates) == 4  # one best candidate from each inner run
    assert result.answer == "3"
    assert result.usage.requests == 4  # each inner run: one native-n request
    assert result.usage.completion_tokens == model.usage.completion_tokens


async def test_partial_failure_keeps_paid_candidates() -> None:
    async def flaky(request: GenerateRequest, i: int) -> str:
        if i % 2:
            raise ServerError("boom", status=500)
        return "The answer is 1"

    model = FunctionModel(flaky, native_n=False, retry=RetryPolicy(max_attempts=1))
    result = await BestOfN(model, n=6).run("q")
    assert result.stopped_by == "error"
    assert len(result.candidates) == 3 and result.answer == "1"
    assert result.errors and "boom" in result.errors[0]


async def test_total_failure_raises_the_typed_error() -> None:
    def denied(request: GenerateRequest, i: int) -> str:
        raise AuthenticationError("bad key", status=401)

    with pytest.raises(AuthenticationError):
        await BestOfN(FunctionModel(denied), n=4).run("q")


def test_bad_configuration_fails_early() -> None:
    model = scripted("1")
    with pytest.raises(ConfigError, match="n must be"):
        BestOfN(model, n=0)
    with pytest.raises(ConfigError, match="source"):
        BestOfN("gpt-4o", n=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stop_on_success"):
        RepeatedSample(model, n=2, stop_on_success=True)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_run_sync_outside_and_inside_a_running_loop() -> None:
    model = scripted("42")
    strategy = SelfConsistency(model, n=3)
    assert strategy.run_sync("q").answer == "42"

    async def notebook_cell() -> str | None:
        # Inside a running loop (as in Jupyter) run_sync must still work.
        return strategy.run_sync("q").answer

    assert asyncio.run(notebook_cell()) == "42"
    # Each run_sync call ran on its own loop, which released what the model held on it.
    assert len(model._loops) == 0


async def test_chat_prompts_and_trace() -> None:
    seen: list[object] = []

    def reply(request: GenerateRequest, i: int) -> str:
        seen.append(request.prompt)
        return "The answer is 2"

    result = await SelfConsistency(FunctionModel(reply), n=2).run(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    )
    assert result.answer == "2"
    assert len(result.trace) == 1 and result.trace[0].n == 2 and result.trace[0].choices == 2
    assert result.elapsed_s > 0


async def test_fan_out_gives_each_sample_its_own_seed() -> None:
    seeds: list[int | None] = []

    def reply(request: GenerateRequest, i: int) -> str:
        seeds.append(request.params.seed)
        return "The answer is 1"

    model = FunctionModel(reply, native_n=False)
    await model.generate("q", SamplingParams(seed=100), n=4)
    # A deterministic engine would otherwise return the same sample four times.
    assert sorted(seeds) == [100, 101, 102, 103]


class _JudgeDown:
    """What a judge or reward model served by a provider raises once its retries are spent."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def fail(self) -> None:
        self.calls += 1
        raise self.error


@pytest.mark.anyio
@pytest.mark.parametrize("failure", ["provider", "budget"])
async def test_a_failing_scorer_or_verifier_keeps_the_paid_candidates(failure: str) -> None:
    """The samples were paid for: a judge that fails for good (its provider down, its budget
    spent) ends the run with them, answered by majority vote, and says why."""
    from ttc.errors import BudgetExceeded
    from ttc.scoring.base import Scorer, Verifier

    error: Exception = (
        ServerError("judge down", provider="judge", model="j", status=503)
        if failure == "provider"
        else BudgetExceeded("requests", 1, 1, 1, "judge")
    )
    down = _JudgeDown(error)

    class Judge(Scorer):
        name = "judge"

        async def score(self, prompt: object, candidates: object) -> list[float]:
            await down.fail()
            return []

    class Checker(Verifier):
        async def verify(self, prompt: object, candidates: object) -> list[bool]:
            await down.fail()
            return []

    model = FunctionModel(lambda request, i: f"The answer is {7 if i % 3 else 8}.")
    stopped = "error" if failure == "provider" else "budget"

    best = await BestOfN(model, n=6, scorer=Judge()).run("q")
    assert len(best.candidates) == 6 and best.answer == "7"
    assert best.stopped_by == stopped and any("judge" in e for e in best.errors)

    down.calls = 0
    coverage = await RepeatedSample(model, n=6, verifier=Checker()).run("q")
    assert len(coverage.candidates) == 6 and coverage.answer == "7"
    assert coverage.stopped_by == stopped and coverage.errors
    assert down.calls == 1  # not asked again for the rest once it failed for good
    assert all(c.verified is None for c in coverage.candidates) and coverage.pass_at_k == {}


@pytest.mark.anyio
async def test_settled_and_success_say_what_they_saved_and_keep_what_was_drawn() -> None:
    """``stopped_by="settled"`` only when samples were left undrawn; a success found in the
    last of the n samples still gives pass@k (all n were drawn and judged)."""
    unanimous = FunctionModel(lambda request, i: "The answer is 5.", native_n=False)
    result = await SelfConsistency(unanimous, n=2, stop_when_settled=True).run("q")
    assert len(result.candidates) == 2 and result.stopped_by is None  # 1-0 could still tie
    result = await SelfConsistency(unanimous, n=3, stop_when_settled=True).run("q")
    assert len(result.candidates) == 2 and result.stopped_by == "settled"  # 2-0 with 1 left

    texts = ["The answer is 1.", "The answer is 2.", "The answer is 42.", "The answer is 3."]
    native = FunctionModel(lambda request, i: texts[i % 4])
    found = await RepeatedSample(
        native, n=4, verifier=lambda text: "42" in text, stop_on_success=True
    ).run("q")
    assert found.stopped_by == "success" and len(found.candidates) == 4
    assert found.pass_at_k == {1: 0.25, 2: 0.5, 4: 1.0}


@pytest.mark.parametrize("stop", ["success", "settled"])
async def test_a_run_is_final_when_it_returns_after_an_early_stop(stop: str) -> None:
    """Requests cancelled by an early stop that take a moment to wind down (a connection
    being closed) are settled and counted before ``run()`` returns, and no task of the run is
    left alive: the result's usage equals the model's and the trace's, then and later."""
    import asyncio

    from ttc import RepeatedSample, SelfConsistency

    calls = 0

    async def reply(request: GenerateRequest, index: int) -> str:
        nonlocal calls
        calls += 1
        mine = calls
        if mine <= 3:
            await anyio.sleep(0.01)  # by then every request is in flight
            return "The answer is 3"
        try:
            await anyio.sleep(30)
        finally:
            if mine % 2:  # its cancellation takes a few loop turns, as closing a socket does
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.05)
        return "The answer is 4"

    model = FunctionModel(reply, native_n=False)
    strategy = (
        RepeatedSample(model, n=8, verifier=lambda t: "3" in t, stop_on_success=True)
        if stop == "success"
        else SelfConsistency(model, n=5, stop_when_settled=True)  # settled at 3 of 5 alike
    )
    before = set(asyncio.all_tasks())
    result = await strategy.run("q")
    alive = [t for t in asyncio.all_tasks() if t not in before and not t.done()]
    at_return = (result.usage.requests, len(result.trace), model.usage.requests)
    assert result.stopped_by == stop
    assert not alive
    assert at_return[0] == at_return[1] == at_return[2] > 3
    await anyio.sleep(0.2)
    assert (result.usage.requests, len(result.trace), model.usage.requests) == at_return
