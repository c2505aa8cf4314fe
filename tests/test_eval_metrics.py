"""Votes at every k against brute force over all subsets, and run reports against hand-made
records: coverage, majority and weighted votes, compute per k, levels."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttc.errors import ConfigError
from ttc.eval.metrics import (
    majority_at_k,
    majority_at_k_curve,
    pass_at_k,
    vote_groups,
    weighted_vote_at_k_curve,
)
from ttc.eval.report import build_report, report_ks
from ttc.eval.store import QuestionRecord
from ttc.types import Candidate, Result, Usage


def brute_vote(
    labels: Sequence[str | None], weights: Sequence[float], correct: set[str], k: int
) -> float:
    """Mean over every k-subset of the share of correct answers among the tied leaders."""
    total = 0.0
    subsets = list(itertools.combinations(range(len(labels)), k))
    for subset in subsets:
        sums: dict[str, float] = {}
        for i in subset:
            label = labels[i]
            if label is not None:
                sums[label] = sums.get(label, 0.0) + weights[i]
        if sums:
            best = max(sums.values())
            tied = [a for a, v in sums.items() if v == best]
            total += sum(1 for a in tied if a in correct) / len(tied)
    return total / len(subsets)


@st.composite
def vote_case(draw: st.DrawFn) -> tuple[list[tuple[int, bool]], int]:
    groups = draw(st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=4))
    return groups, draw(st.integers(0, 3))


@settings(max_examples=60, deadline=None)
@given(vote_case())
def test_majority_at_k_equals_brute_force(case: tuple[list[tuple[int, bool]], int]) -> None:
    groups, abstain = case
    labels: list[str | None] = []
    for index, (size, _) in enumerate(groups):
        labels += [f"a{index}"] * size
    labels += [None] * abstain
    correct = {f"a{i}" for i, (_, ok) in enumerate(groups) if ok}
    curve = majority_at_k_curve(groups, abstain=abstain)
    assert sorted(curve) == list(range(1, len(labels) + 1))
    for k, value in curve.items():
        assert value == pytest.approx(
            brute_vote(labels, [1.0] * len(labels), correct, k), abs=1e-12
        )


def test_majority_edge_cases() -> None:
    # One sample of each of two answers: a coin flip at k = 2, the right share at k = 1.
    assert majority_at_k_curve([(1, True), (1, False)]) == {1: 0.5, 2: 0.5}
    # All samples abstain but one.
    assert majority_at_k([(1, True)], 1, abstain=3) == pytest.approx(0.25)
    assert majority_at_k([(3, True), (1, False)], 4) == 1.0
    # Two correct groups (equivalent answers written differently) both count.
    assert majority_at_k([(2, True), (2, True), (3, False)], 7) == 0.0
    assert majority_at_k([(2, True), (2, True), (1, False)], 5) == 1.0
    with pytest.raises(ConfigError, match="k must be <= n"):
        majority_at_k([(2, True)], 3)
    with pytest.raises(ConfigError, match="at least one sample"):
        majority_at_k_curve([(0, True)])


def test_vote_groups_keep_the_first_verdict_of_each_answer() -> None:
    groups, abstain = vote_groups(["4", None, "5", "4", "5"], [True, None, False, True, True])
    assert groups == [(2, True), (2, False)] and abstain == 1
    with pytest.raises(ConfigError, match="differ in length"):
        vote_groups(["4"], [])


def test_weighted_vote_is_exact_where_cheap_and_close_by_sampling() -> None:
    rng = random.Random(3)
    labels: list[str | None] = [rng.choice(["1", "2", "3", None]) for _ in range(9)]
    weights = [round(rng.random(), 2) for _ in labels]
    correct = {"2"}
    samples = [(a, w, a in correct) for a, w in zip(labels, weights)]
    exact = weighted_vote_at_k_curve(samples, draws=10_000)  # C(9, k) <= 126: all subsets
    for k, value in exact.items():
        assert value == pytest.approx(brute_vote(labels, weights, correct, k), abs=1e-12)
    sampled = weighted_vote_at_k_curve(samples, draws=2000, seed=1, ks=[4])
    assert sampled[4] == pytest.approx(exact[4], abs=0.04)
    assert weighted_vote_at_k_curve(samples, draws=50, ks=[4]) == weighted_vote_at_k_curve(
        samples, draws=50, ks=[4]
    )  # seeded: reports are reproducible


def record(
    qid: str,
    answers: Sequence[str | None],
    verdicts: Sequence[bool],
    *,
    tokens: int = 10,
    level: str | None = None,
    scores: Sequence[float] | None = None,
    cost: float = 0.0,
) -> QuestionRecord:
    candidates = [
        Candidate(
            text=f"The answer is {a}",
            answer=a,
            verified=v,
            completion_tokens=tokens,
            scores={"verified": float(v)} | ({"prm": scores[i]} if scores else {}),
        )
        for i, (a, v) in enumerate(zip(answers, verdicts))
    ]
    first_right = next((c for c in candidates if c.verified), None)
    result = Result(
        answer=first_right.answer if first_right else None,
        best=first_right,
        candidates=candidates,
        usage=Usage(
            prompt_tokens=5, completion_tokens=tokens * len(answers), requests=1, cost_usd=cost
        ),
    )
    return QuestionRecord(
        id=qid,
        position=int(qid),
        question=f"q{qid}",
        reference="1",
        level=level,
        fingerprint="f",
        correct=first_right is not None,
        result=result,
    )


def test_report_curves_match_their_definitions() -> None:
    records = [
        record("1", ["1", "2", "2", "1"], [True, False, False, True], level="1", tokens=10),
        record("2", ["3", "3", "3", None], [False, False, False, False], level="2", tokens=20),
        record("3", ["1", "4", "5", "6"], [True, False, False, False], level="2", tokens=30),
    ]
    report = build_report("r", {"strategy": "repeated-sample", "n": 4}, records)
    assert report.questions == 3 and report.samples == 4
    assert report.accuracy == pytest.approx(2 / 3)
    for k in range(1, 5):
        expected = (pass_at_k(4, 2, k) + pass_at_k(4, 0, k) + pass_at_k(4, 1, k)) / 3
        assert report.coverage[k] == pytest.approx(expected)
        majority = [
            brute_vote(["1", "2", "2", "1"], [1.0] * 4, {"1"}, k),
            0.0,
            brute_vote(["1", "4", "5", "6"], [1.0] * 4, {"1"}, k),
        ]
        assert report.majority[k] == pytest.approx(sum(majority) / 3)
        assert report.tokens[k] == pytest.approx((10 + 20 + 30) * k / 3)
    assert report.majority[4] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert report.weighted == {}  # the verifier's scores are verdicts, not weights
    assert report.tokens_per_question == pytest.approx(4 * 20)
    assert not report.priced and report.label == "repeated-sample n=4"
    assert [(row.level, row.questions) for row in report.levels] == [("1", 1), ("2", 2)]
    level2 = report.levels[1]
    assert level2.accuracy == 0.5 and level2.coverage == 0.5
    assert level2.pass_at_1 == pytest.approx(0.125)
    assert report_ks(4) == [1, 2, 4] and report_ks(6) == [1, 2, 4, 6]


def test_report_weighted_votes_and_dollars() -> None:
    records = [
        record("1", ["1", "2", "2"], [True, False, False], scores=[0.9, 0.2, 0.3], cost=0.03),
        record("2", ["1", "1", "5"], [True, True, False], scores=[0.1, 0.1, 0.9], cost=0.06),
    ]
    report = build_report("r", {}, records)
    assert report.priced and report.usd[3] == pytest.approx(0.045)
    assert report.usd[1] == pytest.approx(0.015)
    # All three samples: "1" outweighs "2" (0.9 > 0.5) in the first question, and "5"
    # outweighs "1" (0.9 > 0.2) in the second, though "1" has the majority there.
    assert report.weighted[3] == pytest.approx(0.5)
    assert report.majority[3] == pytest.approx(0.5)
    for k in (1, 2, 3):
        want = (
            brute_vote(["1", "2", "2"], [0.9, 0.2, 0.3], {"1"}, k)
            + brute_vote(["1", "1", "5"], [0.1, 0.1, 0.9], {"1"}, k)
        ) / 2
        assert report.weighted[k] == pytest.approx(want)


def test_short_questions_count_up_to_their_samples_and_empty_runs_are_refused() -> None:
    records = [
        record("1", ["1", "2", "1", "2"], [True, False, True, False]),
        record("2", ["1", "2"], [True, False]),  # stopped early with 2 samples
    ]
    report = build_report("r", {}, records)
    assert report.coverage[2] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(2, 1, 2)) / 2)
    assert report.coverage[4] == 1.0  # only the first question drew 4
    with pytest.raises(ConfigError, match="no stored questions"):
        build_report("r", {}, [])
