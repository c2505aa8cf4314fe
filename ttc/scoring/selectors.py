"""Selectors: how the final answer is chosen among candidates.

Answers are compared after ``normalize_answer``, and the selected ``answer`` and the keys of
``votes`` are normalized answers. A candidate whose ``answer`` is ``None`` (or normalizes to
nothing) gives no vote. Ties go to the answer (or candidate) that came first, so a selection
never depends on anything but the candidates' order; the vote selectors list the answers that
tied in ``Selection.tied`` (and strategies in ``Result.tied``), so a coin-flip is visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ttc.scoring.base import Selection, Selector
from ttc.scoring.extract import normalize_answer
from ttc.types import Candidate

__all__ = ["Argmax", "FirstVerified", "MajorityVote", "WeightedMajority"]


def _answer_key(candidate: Candidate) -> str | None:
    if candidate.answer is None:
        return None
    return normalize_answer(candidate.answer) or None


def _score(candidate: Candidate, key: str | None) -> float | None:
    """The candidate's score (``scores[key]`` if a key is given); ``None`` if missing or NaN."""
    value = candidate.score if key is None else candidate.scores.get(key)
    if value is None or math.isnan(value):
        return None
    return value


def _tally(
    candidates: Sequence[Candidate], weight: Sequence[float]
) -> tuple[dict[str, float], list[str]]:
    """Total weight per answer, and the answers in order of first appearance."""
    votes: dict[str, float] = {}
    count = votes.get
    for candidate, w in zip(candidates, weight):  # _answer_key inlined: once per candidate
        answer = candidate.answer
        if answer is not None:
            key = normalize_answer(answer)
            if key:
                votes[key] = count(key, 0.0) + w
    return votes, list(votes)


def _count(candidates: Sequence[Candidate]) -> tuple[dict[str, float], list[str]]:
    """``_tally`` with a weight of 1 each, exactly (the counts are whole numbers): candidates
    are counted per answer as written first, so each distinct answer is normalized once (at
    large n the answers repeat, and a normalization costs more than a count)."""
    written: dict[str, int] = {}
    seen = written.get
    for candidate in candidates:
        answer = candidate.answer
        if answer is not None:
            written[answer] = seen(answer, 0) + 1
    votes: dict[str, float] = {}
    count = votes.get
    for answer, k in written.items():  # in order of first appearance, as _tally's
        key = normalize_answer(answer)
        if key:
            votes[key] = count(key, 0.0) + k
    return votes, list(votes)


def _leader(votes: dict[str, float], order: list[str]) -> str | None:
    """The answer with the most weight; the earliest one on a tie."""
    best: str | None = None
    for answer in order:
        if best is None or votes[answer] > votes[best]:
            best = answer
    return best


def _tied(votes: dict[str, float], order: list[str], winner: str) -> list[str]:
    """The answers level with ``winner`` (it first), or ``[]`` when it leads alone. Weighted
    sums are floats: level means equal up to rounding."""
    top = votes[winner]
    level = [a for a in order if math.isclose(votes[a], top, rel_tol=1e-9, abs_tol=1e-12)]
    return level if len(level) > 1 else []


class MajorityVote(Selector):
    """Self-consistency (Wang et al. 2022): the answer that the most candidates give.

    ``best`` is the first candidate with that answer; ``votes`` counts candidates per answer.
    """

    def select(self, candidates: Sequence[Candidate]) -> Selection:
        votes, order = _count(candidates)
        winner = _leader(votes, order)
        if winner is None:
            return Selection(best=None, answer=None, votes={})
        best = next(c for c in candidates if _answer_key(c) == winner)
        return Selection(best=best, answer=winner, votes=votes, tied=_tied(votes, order, winner))

    def __repr__(self) -> str:
        return "MajorityVote()"


class WeightedMajority(Selector):
    """Weighted best-of-N (Snell et al.): the answer with the largest sum of scores.

    Uses ``candidate.score``, or ``candidate.scores[score_key]`` if ``score_key`` is given; a
    candidate without a score adds 0. ``best`` is the highest-scored candidate with the winning
    answer; ``votes`` is the sum per answer.
    """

    def __init__(self, score_key: str | None = None) -> None:
        self.score_key = score_key

    def select(self, candidates: Sequence[Candidate]) -> Selection:
        scores = [_score(c, self.score_key) for c in candidates]
        votes, order = _tally(candidates, [s if s is not None else 0.0 for s in scores])
        winner = _leader(votes, order)
        if winner is None:
            return Selection(best=None, answer=None, votes={})
        best: Candidate | None = None
        best_score = -math.inf
        for candidate, score in zip(candidates, scores):
            if _answer_key(candidate) != winner:
                continue
            value = score if score is not None else -math.inf
            if best is None or value > best_score:
                best, best_score = candidate, value
        return Selection(best=best, answer=winner, votes=votes, tied=_tied(votes, order, winner))

    def __repr__(self) -> str:
        return f"WeightedMajority(score_key={self.score_key!r})"


class Argmax(Selector):
    """Best-of-N: the candidate with the highest score (the earliest on a tie).

    Uses ``candidate.score``, or ``candidate.scores[score_key]``. Every scored candidate can
    win, even one without an answer (code, say); unscored ones cannot. ``votes`` holds the best
    score per answer.
    """

    def __init__(self, score_key: str | None = None) -> None:
        self.score_key = score_key

    def select(self, candidates: Sequence[Candidate]) -> Selection:
        best: Candidate | None = None
        best_score = -math.inf
        votes: dict[str, float] = {}
        for candidate in candidates:
            score = _score(candidate, self.score_key)
            if score is None:
                continue
            key = _answer_key(candidate)
            if key is not None and (key not in votes or score > votes[key]):
                votes[key] = score
            if best is None or score > best_score:
                best, best_score = candidate, score
        if best is None:
            return Selection(best=None, answer=None, votes={})
        return Selection(best=best, answer=_answer_key(best), votes=votes)

    def __repr__(self) -> str:
        return f"Argmax(score_key={self.score_key!r})"


class FirstVerified(Selector):
    """The first candidate a verifier accepted (``verified=True``); else the fallback's choice.

    ``votes`` counts the verified candidates per answer. With ``fallback=None`` and nothing
    verified, the selection is empty.
    """

    def __init__(self, fallback: Selector | None = MajorityVote()) -> None:
        self.fallback = fallback

    def select(self, candidates: Sequence[Candidate]) -> Selection:
        verified = [c for c in candidates if c.verified is True]
        if not verified:
            if self.fallback is None:
                return Selection(best=None, answer=None, votes={})
            return self.fallback.select(candidates)
        votes, _ = _count(verified)
        best = verified[0]
        return Selection(best=best, answer=_answer_key(best), votes=votes)

    def __repr__(self) -> str:
        return f"FirstVerified(fallback={self.fallback!r})"
