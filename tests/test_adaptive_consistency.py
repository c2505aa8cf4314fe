"""AdaptiveConsistency: the paper's stopping rules for known vote counts, and the strategy
stopping where they say, keeping what it paid for."""

from __future__ import annotations

import math
import random

import anyio
import pytest

from ttc import AdaptiveConsistency, Budget, SelfConsistency
from ttc.adapters import FunctionModel
from ttc.errors import ConfigError
from ttc.strategies.adaptive_consistency import (
    beta_majority_probability,
    dirichlet_majority_probability,
)
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio


def scripted(*answers: str, native_n: bool = True) -> FunctionModel:
    return FunctionModel(
        lambda request, i: f"So the answer is {answers[i % len(answers)]}.", native_n=native_n
    )


def beta_tail_by_integration(a: int, b: int, steps: int = 200_000) -> float:
    """P(Beta(a, b) > 1/2) by the midpoint rule on the density: an independent check."""
    norm = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
    h = 0.5 / steps
    total = 0.0
    for i in range(steps):
        x = 0.5 + (i + 0.5) * h
        total += x ** (a - 1) * (1 - x) ** (b - 1)
    return total * h / norm


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((1,), 3 / 4),
        ((4,), 31 / 32),  # four agreeing samples pass 0.95
        ((3,), 15 / 16),  # three do not
        ((5, 1), 120 / 128),
        ((6, 1), 247 / 256),
        ((2, 2), 1 / 2),
        ((7, 3, 2), None),  # only the two leaders count: same as (7, 3)
    ],
)
def test_the_beta_rule_is_the_papers_closed_form(
    counts: tuple[int, ...], expected: float | None
) -> None:
    got = beta_majority_probability(counts)
    top = sorted(counts, reverse=True)
    a, b = top[0] + 1, (top[1] if len(top) > 1 else 0) + 1
    assert got == pytest.approx(beta_tail_by_integration(a, b), abs=1e-6)
    if expected is not None:
        assert got == pytest.approx(expected, abs=1e-12)
    assert beta_majority_probability((7, 3, 2)) == beta_majority_probability((7, 3))
    assert beta_majority_probability(()) == 0.0


def test_the_dirichlet_rule_matches_the_beta_rule_for_two_answers_and_a_simulation() -> None:
    # With two answers, P(p1 > p2) under Dirichlet(v1+1, v2+1) is exactly the beta rule.
    for counts in [(3, 1), (5, 2), (2, 2), (9, 4)]:
        assert dirichlet_majority_probability(counts) == beta_majority_probability(counts)
    # Three answers: compare with an independent simulation of the same posterior.
    rng = random.Random(123)
    counts = (6, 3, 2)
    hits = 0
    for _ in range(20_000):
        draw = [rng.gammavariate(c + 1, 1.0) for c in counts]
        hits += draw[0] > max(draw[1:])
    assert dirichlet_majority_probability(counts) == pytest.approx(hits / 20_000, abs=0.015)
    assert dirichlet_majority_probability((4,)) == beta_majority_probability((4,))
    assert dirichlet_majority_probability((4, 1)) == beta_majority_probability((4, 1))
    assert dirichlet_majority_probability(()) == 0.0
    # Only the five leading answers count, as in the paper's code.
    assert dirichlet_majority_probability((9, 2, 2, 1, 1, 1, 1)) == (
        dirichlet_majority_probability((9, 2, 2, 1, 1))
    )
    # Reproducible for the same counts.
    assert dirichlet_majority_probability(counts) == dirichlet_majority_probability(counts)


async def test_unanimous_samples_stop_after_four_with_the_beta_rule() -> None:
    model = scripted("42")
    result = await AdaptiveConsistency(model, max_n=40).run("q")
    assert result.answer == "42"
    assert len(result.candidates) == 4
    assert result.stopped_by == "settled"
    assert result.confidence == pytest.approx(31 / 32)
    assert result.usage.requests == 4  # batch=1: one sample a request, as in the paper


async def test_a_split_vote_keeps_sampling_until_the_rule_passes() -> None:
    # 7, 7, 8, 7, 7, 8, 7, ...: after each sample the rule is evaluated on the counts so far.
    pattern = ["7", "7", "8"]
    model = scripted(*pattern)
    result = await AdaptiveConsistency(model, max_n=40, threshold=0.95).run("q")
    n = len(result.candidates)
    counts = [sum(1 for i in range(n) if pattern[i % 3] == a) for a in ("7", "8")]
    assert beta_majority_probability(counts) >= 0.95
    # ...and it did not pass one sample earlier.
    earlier = [sum(1 for i in range(n - 1) if pattern[i % 3] == a) for a in ("7", "8")]
    assert beta_majority_probability(earlier) < 0.95
    assert result.answer == "7" and result.stopped_by == "settled"
    assert result.confidence == pytest.approx(beta_majority_probability(counts))


async def test_an_unsettled_vote_stops_at_max_n_with_its_probability() -> None:
    model = scripted("1", "2", "3")
    result = await AdaptiveConsistency(model, max_n=9, rule="dirichlet").run("q")
    assert len(result.candidates) == 9
    assert result.stopped_by is None
    assert result.confidence == pytest.approx(dirichlet_majority_probability((3, 3, 3)))
    assert result.confidence is not None and result.confidence < 0.5


async def test_batches_cancel_the_rest_of_a_batch_once_settled() -> None:
    finished: list[int] = []

    async def reply(request: GenerateRequest, i: int) -> str:
        await anyio.sleep(0.01 * (i % 8) if i < 4 else 5)
        finished.append(i)
        return "The answer is 5"

    model = FunctionModel(reply, native_n=False)
    result = await AdaptiveConsistency(model, max_n=32, batch=8).run("q")
    assert result.stopped_by == "settled"
    assert len(result.candidates) == 4
    assert sorted(finished) == [0, 1, 2, 3]
    assert result.usage.requests == 8  # the four cancelled requests count as sent


async def test_samples_without_an_answer_do_not_vote_and_min_n_is_respected() -> None:
    model = FunctionModel(lambda request, i: "no idea" if i % 2 else "The answer is 3")
    result = await AdaptiveConsistency(model, max_n=40, min_n=10).run("q")
    assert len(result.candidates) == 10
    assert result.votes == {"3": 5.0}


async def test_saves_samples_against_self_consistency_at_the_same_answer() -> None:
    answers = ["12", "12", "12", "12", "9", "12", "12", "12"]
    adaptive = await AdaptiveConsistency(scripted(*answers), max_n=32).run("q")
    fixed = await SelfConsistency(scripted(*answers), n=32).run("q")
    assert adaptive.answer == fixed.answer == "12"
    assert len(adaptive.candidates) == 4 < len(fixed.candidates)
    assert adaptive.usage.completion_tokens < fixed.usage.completion_tokens


async def test_a_budget_stop_returns_the_samples_paid_for() -> None:
    model = scripted("1", "2")
    result = await AdaptiveConsistency(model, max_n=40).run("q", budget=Budget(requests=5))
    assert result.stopped_by == "budget"
    assert len(result.candidates) == 5
    assert result.answer == "1"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_n": 0},
        {"threshold": 1.0},
        {"threshold": 0.2},
        {"threshold": float("nan")},
        {"rule": "entropy"},
        {"batch": 0},
        {"min_n": 50},
        {"threshold": True},
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, object]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        AdaptiveConsistency(scripted("1"), **kwargs)  # type: ignore[arg-type]
