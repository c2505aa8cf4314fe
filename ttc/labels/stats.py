"""Label statistics: what a collection produced (``ttc collect`` prints them), and agreement
between two labellings of the same steps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ttc.labels.estimate import LabelledQuestion

__all__ = ["LabelStats", "label_stats", "roc_auc", "subsample_agreement"]


@dataclass
class LabelStats:
    """Counts over labelled questions.

    ``first_errors`` maps a wrong solution's first bad step (1-based) to how many solutions
    have it there; ``no_error`` counts solutions with every labelled step good.
    """

    questions: int = 0
    solutions: int = 0
    correct_solutions: int = 0
    steps: int = 0
    labelled_steps: int = 0
    positive_steps: int = 0
    soft_sum: float = 0.0
    soft_steps: int = 0
    rollouts: int = 0
    tokens: int = 0
    first_errors: dict[int, int] = field(default_factory=dict)
    no_error: int = 0

    @property
    def steps_per_solution(self) -> float:
        """Mean number of steps a solution."""
        return self.steps / self.solutions if self.solutions else 0.0

    @property
    def fraction_positive(self) -> float | None:
        """Fraction of labelled steps whose hard label is good."""
        return self.positive_steps / self.labelled_steps if self.labelled_steps else None

    @property
    def mean_soft(self) -> float | None:
        """Mean soft label over the steps that have one."""
        return self.soft_sum / self.soft_steps if self.soft_steps else None

    def as_dict(self) -> dict[str, object]:
        """The statistics as JSON-ready data (``ttc collect --json``)."""
        return {
            "questions": self.questions,
            "solutions": self.solutions,
            "correct_solutions": self.correct_solutions,
            "steps": self.steps,
            "steps_per_solution": round(self.steps_per_solution, 3),
            "labelled_steps": self.labelled_steps,
            "fraction_positive": self.fraction_positive,
            "mean_soft": self.mean_soft,
            "rollouts": self.rollouts,
            "tokens": self.tokens,
            "first_error_positions": dict(sorted(self.first_errors.items())),
            "solutions_without_error": self.no_error,
        }


def label_stats(questions: Sequence[LabelledQuestion]) -> LabelStats:
    """Steps per solution, fraction of good steps, where the first errors are."""
    stats = LabelStats(questions=len(questions))
    firsts: Counter[int] = Counter()
    for q in questions:
        stats.tokens += q.usage.total_tokens
        for sol in q.solutions:
            stats.solutions += 1
            stats.correct_solutions += int(sol.correct)
            stats.steps += len(sol.steps)
            stats.rollouts += sol.rollouts
            for step in sol.steps:
                if step.hard is not None:
                    stats.labelled_steps += 1
                    stats.positive_steps += int(step.hard)
                if step.soft is not None:
                    stats.soft_steps += 1
                    stats.soft_sum += step.soft
            first = sol.first_error
            if first is None:
                stats.no_error += 1
            else:
                firsts[first + 1] += 1
    stats.first_errors = dict(firsts)
    return stats


def subsample_agreement(questions: Sequence[LabelledQuestion], k: int) -> tuple[int, int]:
    """``(agreeing, compared)``: over the steps rolled out more than ``k`` times, how often
    the hard label from the first ``k`` rollouts equals the one from all of them (Math-Shepherd
    labels with fewer rollouts, measured on the same rollouts)."""
    agree = compared = 0
    for q in questions:
        for sol in q.solutions:
            for step in sol.steps:
                if step.shared or len(step.verdicts) <= k:
                    continue
                compared += 1
                agree += int(any(step.verdicts[:k]) == any(step.verdicts))
    return agree, compared


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The area under the ROC curve: the chance that a random good step scores above a random
    bad one (ties count half); ``None`` without both kinds of step."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    good = sum(1 for v in labels if v)
    bad = len(labels) - good
    if not good or not bad:
        return None
    rank_sum = sum(r for r, v in zip(ranks, labels) if v)
    return (rank_sum - good * (good + 1) / 2) / (good * bad)
