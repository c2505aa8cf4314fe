"""Selectors: majority vote, weighted majority, argmax, first verified."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttc.scoring.base import Selection
from ttc.scoring.extract import normalize_answer
from ttc.scoring.selectors import Argmax, FirstVerified, MajorityVote, WeightedMajority
from ttc.types import Candidate


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cand(
    answer: str | None,
    score: float | None = None,
    *,
    verified: bool | None = None,
    scores: dict[str, float] | None = None,
    text: str = "",
) -> Candidate:
    return Candidate(
        text=text or f"answer {answer}",
        answer=answer,
        score=score,
        verified=verified,
        scores=scores or {},
    )


EMPTY = Selection(best=None, answer=None, votes={})


@pytest.mark.parametrize(
    "selector", [MajorityVote(), WeightedMajority(), Argmax(), FirstVerified(), FirstVerified(None)]
)
def test_empty_input(selector: object) -> None:
    assert selector.select([]) == EMPTY  # type: ignore[attr-defined]


def test_majority_vote_counts_normalized_answers() -> None:
    candidates = [cand("18"), cand("$18.0$"), cand("17"), cand("1/2"), cand("0.5"), cand("18")]
    selection = MajorityVote().select(candidates)
    assert selection.answer == "18"
    assert selection.best is candidates[0]
    assert selection.votes == {"18": 3.0, "17": 1.0, "0.5": 2.0}


def test_majority_vote_tie_goes_to_the_earliest_answer() -> None:
    candidates = [cand("5"), cand("7"), cand("7"), cand("5")]
    selection = MajorityVote().select(candidates)
    assert selection.answer == "5" and selection.best is candidates[0]
    flipped = MajorityVote().select(candidates[1:] + candidates[:1])
    assert flipped.answer == "7"


def test_a_tied_vote_is_flagged_with_the_tied_answers() -> None:
    tie = MajorityVote().select([cand("5"), cand("9"), cand("7"), cand("7"), cand("5")])
    assert tie.answer == "5" and tie.tied == ["5", "7"]  # the winner first, then by arrival
    clear = MajorityVote().select([cand("5"), cand("7"), cand("7")])
    assert clear.answer == "7" and clear.tied == []
    assert MajorityVote().select([cand("1")]).tied == []
    # Weighted sums tie up to float rounding: 0.1 + 0.2 against 0.3.
    weighted = WeightedMajority().select([cand("A", 0.1), cand("B", 0.3), cand("A", 0.2)])
    assert weighted.answer == "A" and weighted.tied == ["A", "B"]  # 0.30000000000000004
    assert WeightedMajority().select([cand("A", 0.9), cand("B", 0.3)]).tied == []
    verified = FirstVerified().select([cand("5"), cand("7")])  # falls back to the vote
    assert verified.tied == ["5", "7"]


def test_majority_vote_ignores_missing_answers() -> None:
    candidates = [cand(None), cand(None), cand(None), cand("3"), cand("")]
    selection = MajorityVote().select(candidates)
    assert selection.answer == "3" and selection.best is candidates[3]
    assert selection.votes == {"3": 1.0}
    assert MajorityVote().select([cand(None), cand("  ")]) == EMPTY


def test_weighted_majority_tie_goes_to_the_earliest_answer() -> None:
    # Binary fractions, so that the sums tie exactly.
    candidates = [
        cand("B", 0.5),
        cand("A", 0.75),
        cand("B", 0.25),
        cand("A", 0.25),
        cand("B", 0.25),
    ]
    selection = WeightedMajority().select(candidates)
    assert selection.votes == {"A": 1.0, "B": 1.0}
    assert selection.answer == "B" and selection.best is candidates[0]
    assert selection.tied == ["B", "A"]
    candidates[-1].score = 0.0
    assert WeightedMajority().select(candidates).answer == "A"
    assert WeightedMajority().select(candidates).tied == []


def test_weighted_majority_beats_plain_majority() -> None:
    candidates = [cand("A", 0.95), cand("B", 0.2), cand("B", 0.3), cand("A", 0.9)]
    candidates.insert(1, cand("B", 0.1))
    assert MajorityVote().select(candidates).answer == "B"  # 3 votes to 2
    selection = WeightedMajority().select(candidates)
    assert selection.answer == "A"  # 1.85 against 0.6
    assert selection.best is candidates[0]
    assert selection.votes == pytest.approx({"A": 1.85, "B": 0.6})


def test_weighted_majority_best_is_highest_scored_of_the_winner() -> None:
    candidates = [cand("A", 0.3), cand("B", 0.5), cand("A", 0.6), cand("A", None)]
    selection = WeightedMajority().select(candidates)
    assert selection.answer == "A" and selection.best is candidates[2]


def test_weighted_majority_score_key_and_missing_scores() -> None:
    candidates = [
        cand("A", 1.0, scores={"prm": 0.1}),
        cand("B", 0.0, scores={"prm": 0.7}),
        cand("A", 1.0),  # no "prm" score: counts 0
    ]
    assert WeightedMajority().select(candidates).answer == "A"
    selection = WeightedMajority(score_key="prm").select(candidates)
    assert selection.answer == "B"
    assert selection.votes == pytest.approx({"A": 0.1, "B": 0.7})


def test_argmax() -> None:
    candidates = [cand("A", 0.2), cand("B", 0.9), cand("C", 0.9), cand("A", 0.5), cand("D")]
    selection = Argmax().select(candidates)
    assert selection.best is candidates[1] and selection.answer == "B"  # earliest of the tie
    assert selection.votes == {"A": 0.5, "B": 0.9, "C": 0.9}


def test_argmax_score_key_nan_and_unanswered() -> None:
    candidates = [
        cand("A", scores={"rm": math.nan}),
        cand(None, scores={"rm": 3.0}, text="def f(): ..."),
        cand("C", scores={"rm": 1.0}),
    ]
    selection = Argmax(score_key="rm").select(candidates)
    assert selection.best is candidates[1]  # unanswered candidates can win (code, say)
    assert selection.answer is None
    assert selection.votes == {"C": 1.0}  # NaN is no score
    assert Argmax().select(candidates) == EMPTY  # nothing has a .score


def test_first_verified() -> None:
    candidates = [
        cand("1", verified=False),
        cand("2", verified=None),
        cand("3", verified=True),
        cand("4", verified=True),
        cand("3", verified=True),
    ]
    selection = FirstVerified().select(candidates)
    assert selection.best is candidates[2] and selection.answer == "3"
    assert selection.votes == {"3": 2.0, "4": 1.0}


def test_first_verified_falls_back() -> None:
    candidates = [cand("1", verified=False), cand("2", verified=False), cand("2")]
    selection = FirstVerified().select(candidates)
    assert selection.answer == "2" and selection.best is candidates[1]
    by_score = FirstVerified(fallback=Argmax()).select(
        [cand("1", 0.9, verified=False), cand("2", 0.1, verified=False)]
    )
    assert by_score.answer == "1"
    assert FirstVerified(fallback=None).select(candidates) == EMPTY


answer_lists = st.lists(
    st.tuples(st.sampled_from(["1", "2", "3", None]), st.floats(0, 1)), max_size=12
)


@given(answer_lists)
def test_majority_vote_matches_counting(items: list[tuple[str | None, float]]) -> None:
    candidates = [cand(a, s) for a, s in items]
    selection = MajorityVote().select(candidates)
    counts: dict[str, int] = {}
    for a, _ in items:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        assert selection == EMPTY
        return
    top = max(counts.values())
    first_top = next(a for a, _ in items if a is not None and counts[a] == top)
    assert selection.answer == first_top
    assert selection.votes == {a: float(n) for a, n in counts.items()}
    assert selection.best is not None and selection.best.answer == first_top


@given(answer_lists)
def test_weighted_majority_with_equal_scores_is_majority_vote(
    items: list[tuple[str | None, float]],
) -> None:
    candidates = [cand(a, 1.0) for a, _ in items]
    assert WeightedMajority().select(candidates).answer == MajorityVote().select(candidates).answer


@given(answer_lists)
def test_argmax_picks_a_maximum(items: list[tuple[str | None, float]]) -> None:
    candidates = [cand(a, s) for a, s in items]
    selection = Argmax().select(candidates)
    if not candidates:
        assert selection == EMPTY
        return
    assert selection.best is not None and selection.best.score == max(s for _, s in items)
    assert selection.best is next(c for c in candidates if c.score == selection.best.score)


spellings = st.sampled_from(
    ["18", "$18$", "18.0", " 18 ", "17", "17.", "\\boxed{17}", "", "x", None]
)


@given(st.lists(spellings, max_size=16))
def test_majority_vote_counts_spellings_as_a_unit_weighted_vote_does(
    answers: list[str | None],
) -> None:
    """MajorityVote counts each written answer once before normalizing it: the votes, their
    order, the winner, the ties and ``best`` are those of a vote that normalizes every
    candidate's answer (WeightedMajority with a score of 1 each)."""
    candidates = [cand(a, 1.0) for a in answers]
    got = MajorityVote().select(candidates)
    reference = WeightedMajority().select(candidates)
    assert list(got.votes.items()) == list(reference.votes.items())
    assert (got.answer, got.tied) == (reference.answer, reference.tied)
    first = next(
        (c for c in candidates if c.answer and normalize_answer(c.answer) == got.answer), None
    )
    assert got.best is first
