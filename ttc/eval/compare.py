"""Which strategy at which budget: stored runs compared at matched compute, with 95% intervals.

Runs are grouped into *series*, one per strategy: every run of a strategy that differs only in
``n`` is one point of its series (the run's mean generated tokens per question, the share of
questions its selected answer got right). A sampling run also gives the curves of its votes
over k of its samples: ``majority@k`` and, where its candidates carry a scorer's score (a PRM),
``weighted@k``, each at the tokens k samples cost (Snell et al.'s best-of-N baselines).

Every value has a 95% confidence interval from a bootstrap over questions (the questions are
resampled with replacement, ``resamples`` times, from a seeded generator, so a report is
reproducible): two series whose intervals overlap are not distinguishable on the questions
run. Everything is computed overall and for each difficulty level (Snell et al.'s bins).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttc.eval.report import _level_key, _Question, _reduce
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.scoring.pass_k import pass_at_k

__all__ = [
    "ALL",
    "Interval",
    "Point",
    "Series",
    "bootstrap",
    "compare_runs",
    "curve_series",
    "load_comparison",
]

#: The level key of the whole dataset.
ALL = "all"

_SAMPLING = frozenset({"repeated-sample", "best-of-n", "self-consistency"})
#: What differs between the points of one series: n, and the per-question budget.
_NOT_SERIES_KEYS = frozenset({"n", "run", "budget"})


@dataclass(frozen=True)
class Interval:
    """A mean over questions and its 95% bootstrap interval."""

    mean: float
    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a value (then the data cannot tell them apart)."""
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def bootstrap(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """The mean of ``values`` and its percentile bootstrap interval (questions resampled with
    replacement). No values: all zero; one value: a zero-width interval."""
    items = list(values)
    if not items:
        return Interval(0.0, 0.0, 0.0)
    mean = sum(items) / len(items)
    if len(items) == 1 or min(items) == max(items):
        return Interval(mean, mean, mean)
    rng = random.Random(seed)
    size = len(items)
    means = sorted(sum(rng.choices(items, k=size)) / size for _ in range(resamples))
    tail = (1.0 - level) / 2
    low = means[int(tail * (resamples - 1))]
    high = means[round((1.0 - tail) * (resamples - 1))]
    return Interval(mean, low, high)


@dataclass(frozen=True)
class Point:
    """One budget of a series: ``budget`` (the run's n, or k), its generated tokens per
    question and its accuracy with interval; ``budget_tokens``: the run's per-question budget
    of generated tokens (an experiment's ``budgets``), if it had one."""

    budget: int
    tokens: float
    accuracy: Interval
    questions: int
    run: str
    budget_tokens: int | None = None


@dataclass
class Series:
    """One strategy's accuracy at several budgets, for one level (or ``ALL``)."""

    name: str
    level: str
    points: list[Point] = field(default_factory=list)
    kind: str = "runs"  # "runs" (one run a point) or "votes" (k samples of one run)


def _prm_name(config: dict[str, Any]) -> str:
    """The PRM's kind, and for a trained or served one the folder or model it reads (two
    heads trained differently are two series)."""
    name = str(config["prm"])
    for key in ("prm.path", "prm.model_dir", "prm.model"):
        if config.get(key):
            return f"{name} {Path(str(config[key]).rstrip('/')).name}"
    return name


def _series_name(config: dict[str, Any]) -> str:
    strategy = str(config.get("strategy", "run"))
    bits = [strategy]
    if strategy == "best-of-n":
        scorer = config.get("scorer")
        if scorer and scorer != "verifier":
            named = f"prm: {_prm_name(config)}" if scorer == "prm" and config.get("prm") else scorer
            bits = [f"best-of-n ({named})"]
    if "k" in config and strategy == "lookahead":
        bits.append(f"k={config['k']}")
    if config.get("prm") and strategy not in _SAMPLING:
        bits.append(f"({_prm_name(config)})")
    if config.get("rescored_from"):  # ttc rescore: another PRM on a stored run's samples
        bits.append("rescored")
    return " ".join(bits)


def _group_key(config: dict[str, Any]) -> str:
    """What makes runs one series: everything in their config but n and the per-question
    budget (and, for the searches, the width, which must grow with n: beam searches at n=2
    and n=8 differ in both). A budget's point sits at the tokens its run really spent."""
    drop = set(_NOT_SERIES_KEYS)
    if config.get("strategy") not in _SAMPLING:
        drop.add("width")
    kept = {k: v for k, v in config.items() if k not in drop}
    return repr(sorted(kept.items(), key=lambda kv: kv[0]))


def _levels(questions: Sequence[_Question]) -> list[str]:
    named = sorted({q.level for q in questions if q.level is not None}, key=_level_key)
    return [ALL, *named]


def _subset(questions: Sequence[_Question], level: str) -> list[_Question]:
    return list(questions) if level == ALL else [q for q in questions if q.level == level]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def curve_series(
    name: str, run: str, questions: Sequence[_Question], level: str, *, seed: int = 0
) -> dict[str, Series]:
    """``majority@k``, ``weighted@k`` (if scored) and coverage ``pass@k`` of one sampling
    run at k = 1, 2, 4, ... n, for one level, each with intervals over questions."""
    group = _subset(questions, level)
    top = min((q.n for q in group), default=0)
    out: dict[str, Series] = {}
    ks = []
    k = 1
    while k <= top:
        ks.append(k)
        k *= 2
    if top and ks[-1] != top:
        ks.append(top)
    scored = group and all(q.weighted is not None for q in group)
    for label, kind in (("majority", "votes"), ("weighted", "votes"), ("pass", "coverage")):
        if label == "weighted" and not scored:
            continue
        series = Series(f"{name}: {label}@k", level, kind=kind)
        for k in ks:
            if label == "majority":
                values = [q.majority[k] for q in group]
            elif label == "weighted":
                values = [q.weighted[k] for q in group if q.weighted is not None]
            else:
                values = [pass_at_k(q.n, q.correct, k) for q in group]
            tokens = _mean([q.tokens * k / q.n for q in group])
            series.points.append(Point(k, tokens, bootstrap(values, seed=seed), len(group), run))
        out[label] = series
    return out


def compare_runs(
    runs: Sequence[tuple[str, dict[str, Any], Sequence[QuestionRecord]]], *, seed: int = 0
) -> list[Series]:
    """Series for every strategy and level from stored runs ``(name, config, records)``.

    Search runs (and sampling runs) become points of their strategy's series, ordered by
    tokens; the largest sampling run of each sampling series also gives its vote curves
    (``majority@k``, ``weighted@k``) and coverage (``pass@k``)."""
    groups: dict[str, list[tuple[str, dict[str, Any], list[_Question]]]] = {}
    for name, config, records in runs:
        if not records:
            continue
        questions = [_reduce(r) for r in records]
        groups.setdefault(_group_key(config), []).append((name, config, questions))
    out: list[Series] = []
    for members in groups.values():
        label = _series_name(members[0][1])
        levels = _levels([q for _, _, qs in members for q in qs])
        for level in levels:
            series = Series(label, level)
            for name, config, questions in members:
                group = _subset(questions, level)
                if not group:
                    continue
                accuracy = bootstrap([float(q.selected) for q in group], seed=seed)
                tokens = _mean([float(q.tokens) for q in group])
                budget = int(config.get("n", max(q.n for q in group)))
                cap = config.get("budget")
                per_question = int(cap) if isinstance(cap, (int, float)) else None
                series.points.append(
                    Point(budget, tokens, accuracy, len(group), name, per_question)
                )
            series.points.sort(key=lambda p: (p.tokens, p.budget))
            if series.points:
                out.append(series)
        if members[0][1].get("strategy") in _SAMPLING:
            name, _, questions = max(members, key=lambda m: max(q.n for q in m[2]))
            for level in levels:
                out.extend(curve_series(label, name, questions, level, seed=seed).values())
    return out


def load_comparison(
    folder: str, runs: Sequence[str] | None = None, *, seed: int = 0
) -> list[Series]:
    """``compare_runs`` over the runs stored in a results folder (all, or those named)."""
    with ResultsStore(folder, create=False) as store:
        infos = store.runs() if not runs else [store.run(name) for name in runs]
        loaded = [(info.name, dict(info.config), store.records(info.name)) for info in infos]
    return compare_runs(loaded, seed=seed)
