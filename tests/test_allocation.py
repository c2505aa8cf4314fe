"""AdaptiveAllocation: one budget over many questions, spent where votes are unsettled, never
passed, and no question left without a result."""

from __future__ import annotations

import itertools

import pytest

from ttc import Budget
from ttc.adapters import FunctionModel
from ttc.adapters.function import prompt_text
from ttc.errors import ConfigError
from ttc.strategies.adaptive_consistency import beta_majority_probability
from ttc.strategies.allocation import AdaptiveAllocation
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio

#: Per question, the answers its samples give in turn.
SCRIPTS = {
    "easy": ["4"],
    "split": ["7", "7", "8"],
    "hopeless": [str(i) for i in range(1000)],
}


def scripted_questions(native_n: bool = True) -> FunctionModel:
    counters = {name: itertools.count() for name in SCRIPTS}

    def reply(request: GenerateRequest, i: int) -> str:
        name = prompt_text(request)
        answers = SCRIPTS[name]
        return f"The answer is {answers[next(counters[name]) % len(answers)]}"

    return FunctionModel(reply, native_n=native_n)


async def test_settled_questions_leave_and_the_rest_get_more_samples() -> None:
    model = scripted_questions()
    allocation = AdaptiveAllocation(model, budget=None, batch=4, max_n=32)
    easy, split, hopeless = await allocation.run(["easy", "split", "hopeless"])
    assert easy.answer == "4" and easy.stopped_by == "settled"
    assert len(easy.candidates) == 4  # four agreeing samples pass 0.95 with the beta rule
    assert split.answer == "7" and split.stopped_by == "settled"
    assert 4 < len(split.candidates) < 32
    counts = [split.votes.get("7", 0.0), split.votes.get("8", 0.0)]
    assert beta_majority_probability([int(c) for c in counts]) >= 0.95
    assert len(hopeless.candidates) == 32 and hopeless.stopped_by is None
    assert hopeless.confidence is not None and hopeless.confidence < 0.95
    # Each result's usage is its own samples', and they add up to the total.
    assert easy.usage.completion_tokens == sum(len(c.text.split()) for c in easy.candidates)
    total = easy.usage + split.usage + hopeless.usage
    assert total.completion_tokens == allocation.usage.completion_tokens
    assert total.requests == allocation.usage.requests == model.usage.requests


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 9, 17])
async def test_the_shared_budget_is_never_passed_and_every_question_gets_a_result(
    limit: int,
) -> None:
    model = scripted_questions(native_n=False)
    prompts = ["hopeless", "split", "easy", "hopeless"]
    allocation = AdaptiveAllocation(model, budget=Budget(requests=limit), batch=2, max_n=64)
    results = await allocation.run(prompts)
    assert len(results) == len(prompts)
    assert allocation.usage.requests <= limit
    assert model.usage.requests <= limit
    assert sum(len(r.candidates) for r in results) == allocation.usage.requests
    for r in results:
        # A question the budget cut short says so, with whatever it had paid for.
        assert r.stopped_by in ("budget", "settled")
        if not r.candidates:
            assert r.answer is None and r.stopped_by == "budget"


async def test_the_least_settled_questions_are_served_first_when_the_budget_runs_short() -> None:
    model = scripted_questions()
    # Round one: four requests (one per question, native n). Round two: only the unsettled
    # split and hopeless questions ask again, and the budget pays for one of them.
    allocation = AdaptiveAllocation(model, budget=Budget(requests=5), batch=4, max_n=64)
    easy, split, hopeless, easy2 = await allocation.run(["easy", "split", "hopeless", "easy"])
    assert easy.stopped_by == easy2.stopped_by == "settled"
    assert len(hopeless.candidates) == 8  # least settled: it got the fifth request
    assert len(split.candidates) == 4 and split.stopped_by == "budget"


async def test_a_token_budget_holds_under_concurrency() -> None:
    model = scripted_questions()
    allocation = AdaptiveAllocation(model, budget=Budget(tokens=150), batch=3, max_n=40)
    results = await allocation.run(["hopeless"] * 6)
    assert allocation.usage.total_tokens <= 150
    assert len(results) == 6


def test_bad_configuration_names_the_parameter() -> None:
    model = scripted_questions()
    with pytest.raises(ConfigError, match="batch"):
        AdaptiveAllocation(model, budget=None, batch=0)
    with pytest.raises(ConfigError, match="threshold"):
        AdaptiveAllocation(model, budget=None, threshold=2)
    with pytest.raises(ConfigError, match="budget"):
        AdaptiveAllocation(model, budget=100)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="prompts"):
        AdaptiveAllocation(model, budget=None).run_sync("one prompt, not a list")
