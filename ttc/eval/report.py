"""Reports from stored results: pass@k and coverage, votes at every k, accuracy against tokens
and dollars, and a breakdown by difficulty level.

Everything comes from the stored candidates and their verdicts; nothing asks a model again.
Curves are over k = 1 .. n, the samples each question drew. Compute at k samples is the
question's generated tokens (or USD) scaled by k / n, so a curve's points show what k samples
of that run cost on average.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttc.errors import ConfigError
from ttc.eval.metrics import majority_at_k_curve, vote_groups, weighted_vote_at_k_curve
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.scoring.extract import normalize_answer
from ttc.scoring.pass_k import pass_at_k
from ttc.strategies.registry import STRATEGIES
from ttc.types import Candidate

__all__ = ["LevelRow", "RunReport", "build_report", "format_cost", "load_reports", "report_ks"]

#: The verifier's key in ``Candidate.scores``: its 1/0 scores are verdicts, not a weighting.
_VERDICT_KEYS = frozenset({"verified"})


@dataclass
class LevelRow:
    """One difficulty level: questions, accuracy of the selected answers, pass@1, coverage at
    n and majority vote at n."""

    level: str
    questions: int
    accuracy: float
    pass_at_1: float
    coverage: float
    majority: float


@dataclass
class RunReport:
    """The metrics of one stored run.

    ``coverage[k]`` is the mean unbiased pass@k over the questions that drew at least k
    samples; ``majority[k]`` and ``weighted[k]`` the expected accuracy of a (weighted) vote
    over k samples (``weighted`` is empty when no candidate has a score other than the
    verifier's); ``tokens[k]`` and ``usd[k]`` the mean generated tokens and USD per question
    for k samples. ``accuracy`` is the share of questions whose selected answer is correct,
    at the run's real mean ``tokens_per_question`` and ``usd_per_question``.
    """

    run: str
    config: dict[str, Any]
    questions: int
    samples: int
    accuracy: float
    coverage: dict[int, float]
    majority: dict[int, float]
    weighted: dict[int, float]
    tokens: dict[int, float]
    usd: dict[int, float]
    tokens_per_question: float
    usd_per_question: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float
    failures: int = 0
    levels: list[LevelRow] = field(default_factory=list)
    #: Models whose spend had no price: ``cost_usd`` leaves them out.
    unpriced: list[str] = field(default_factory=list)
    #: The dataset's questions the last ``ttc eval`` had (``None``: not noted), what stopped
    #: it (``"budget"``, ``"error"``; ``None``: finished, interrupted or still running) and why.
    total: int | None = None
    stopped_by: str | None = None
    stop_note: str | None = None

    @property
    def incomplete(self) -> str | None:
        """``"12 of 20 questions, stopped by the budget (...)"`` for a run that did not store
        every question of its dataset; ``None`` for a complete one (or one not noted)."""
        if self.total is None or self.questions >= self.total:
            return None
        why = {
            "budget": "stopped by the run's budget",
            "error": "stopped by an error",
            "unreadable": "the others unreadable in a damaged results file",
            None: "interrupted, or still running",
        }.get(self.stopped_by, f"stopped by {self.stopped_by}")
        note = f": {self.stop_note}" if self.stop_note else ""
        return f"{self.questions} of {self.total} questions, {why}{note}"

    @property
    def label(self) -> str:
        """A short legend label: strategy, n, the per-question budget and model where the
        config has them."""
        parts = [str(self.config[k]) for k in ("strategy", "model") if k in self.config]
        if "n" in self.config:
            parts.insert(1 if parts else 0, f"n={self.config['n']}")
        if self.config.get("budget") is not None:
            parts.insert(2 if len(parts) > 1 else len(parts), f"budget={self.config['budget']}")
        return " ".join(parts) or self.run

    @property
    def samples_are_draws(self) -> bool:
        """Whether the candidates are independent samples, so that pass@k and votes over k
        of them mean something: not for the step-wise searches, whose candidates are the
        finished beams of one search (they share prefixes and were chosen by the PRM)."""
        return not is_search(self.config)

    @property
    def priced(self) -> bool:
        """Whether any question cost money (a USD axis is worth drawing)."""
        return self.cost_usd > 0


def format_cost(
    cost_usd: float, unpriced: Iterable[str] = (), digits: int = 4, unit: str = "$"
) -> str:
    """USD for people: ``"unpriced"`` when nothing had a price (never ``$0.0000`` for a
    model whose price is unknown), ``"≥ $x"`` when part of the spend had none."""
    if any(True for _ in unpriced):
        return f"≥ {unit}{cost_usd:.{digits}f}" if cost_usd > 0 else "unpriced"
    return f"{unit}{cost_usd:.{digits}f}"


def is_search(config: Mapping[str, Any]) -> bool:
    """Whether a stored run's configuration names a step-wise search (``beam-prm``,
    ``lookahead``, ``dvts``)."""
    info = STRATEGIES.get(str(config.get("strategy")))
    return info is not None and info.search


def report_ks(n: int) -> list[int]:
    """The k values of a table: 1, 2, 4, ... and n."""
    ks = []
    k = 1
    while k < n:
        ks.append(k)
        k *= 2
    if n >= 1:
        ks.append(n)
    return ks


def _answer(candidate: Candidate) -> str | None:
    if candidate.answer is None:
        return None
    return normalize_answer(candidate.answer) or None


def _weights(candidates: Sequence[Candidate]) -> list[float] | None:
    """Each candidate's scorer score (``Candidate.scores``) for a weighted vote, or ``None``
    when some candidate has none but the verifier's (an oracle, not a weighting)."""
    out: list[float] = []
    for c in candidates:
        keys = [k for k in c.scores if k not in _VERDICT_KEYS]
        if not keys:
            return None
        out.append(c.scores[keys[0]])
    return out or None


@dataclass
class _Question:
    """One stored question reduced to what the curves need."""

    n: int
    correct: int
    selected: bool
    majority: dict[int, float]
    weighted: dict[int, float] | None
    tokens: int
    usd: float
    level: str | None


def _reduce(record: QuestionRecord) -> _Question:
    result = record.result
    candidates = result.candidates
    n = len(candidates)
    verdicts = [c.verified for c in candidates]
    answers = [_answer(c) for c in candidates]
    majority: dict[int, float] = {}
    weighted: dict[int, float] | None = None
    if n:
        groups, abstain = vote_groups(answers, verdicts)
        majority = majority_at_k_curve(groups, abstain=abstain)
        weights = _weights(candidates)
        if weights is not None:
            weighted = weighted_vote_at_k_curve(
                [(a, w, bool(v)) for a, w, v in zip(answers, weights, verdicts)]
            )
    generated = result.usage.completion_tokens or sum(c.completion_tokens or 0 for c in candidates)
    return _Question(
        n=n,
        correct=sum(1 for v in verdicts if v),
        selected=record.correct,
        majority=majority,
        weighted=weighted,
        tokens=generated,
        usd=result.usage.cost_usd,
        level=record.level,
    )


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


Curve = dict[int, float]


def _curves(questions: Sequence[_Question]) -> tuple[Curve, Curve, Curve, Curve, Curve]:
    """Coverage, majority, weighted, tokens and USD at each k."""
    top = max((q.n for q in questions), default=0)
    coverage: dict[int, float] = {}
    majority: dict[int, float] = {}
    weighted: dict[int, float] = {}
    tokens: dict[int, float] = {}
    usd: dict[int, float] = {}
    with_weights = [q for q in questions if q.weighted is not None]
    for k in range(1, top + 1):
        # A question with fewer samples than k (a budget stop) counts only up to its n.
        able = [q for q in questions if q.n >= k]
        if not able:
            break
        coverage[k] = _mean(pass_at_k(q.n, q.correct, k) for q in able)
        majority[k] = _mean(q.majority[k] for q in able)
        tokens[k] = _mean(q.tokens * k / q.n for q in able)
        usd[k] = _mean(q.usd * k / q.n for q in able)
        weighted_able = [q for q in with_weights if q.n >= k]
        if weighted_able and len(weighted_able) == len(able):
            weighted[k] = _mean(q.weighted[k] for q in weighted_able if q.weighted)
    return coverage, majority, weighted, tokens, usd


def _level_key(level: str) -> tuple[int, float, str]:
    try:
        return (0, float(level), level)
    except ValueError:
        return (1, 0.0, level)


def build_report(
    run: str, config: dict[str, Any], records: Sequence[QuestionRecord], failures: int = 0
) -> RunReport:
    """The metrics of one run from its stored questions."""
    if not records:
        raise ConfigError(f"run {run!r} has no stored questions yet")
    questions = [_reduce(r) for r in records]
    coverage, majority, weighted, tokens, usd = _curves(questions)
    levels: list[LevelRow] = []
    named = sorted({q.level for q in questions if q.level is not None}, key=_level_key)
    for level in named:
        group = [q for q in questions if q.level == level]
        judged = [q for q in group if q.n]
        levels.append(
            LevelRow(
                level=level,
                questions=len(group),
                accuracy=_mean(float(q.selected) for q in group),
                pass_at_1=_mean(pass_at_k(q.n, q.correct, 1) for q in judged),
                coverage=_mean(pass_at_k(q.n, q.correct, q.n) for q in judged),
                majority=_mean(q.majority[q.n] for q in judged),
            )
        )
    usages = [r.result.usage for r in records]
    return RunReport(
        run=run,
        config=config,
        questions=len(records),
        samples=max(q.n for q in questions),
        accuracy=_mean(float(q.selected) for q in questions),
        coverage=coverage,
        majority=majority,
        weighted=weighted,
        tokens=tokens,
        usd=usd,
        tokens_per_question=_mean(q.tokens for q in questions),
        usd_per_question=_mean(q.usd for q in questions),
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        completion_tokens=sum(u.completion_tokens for u in usages),
        cost_usd=sum(u.cost_usd for u in usages),
        seconds=sum(r.result.elapsed_s for r in records),
        failures=failures,
        levels=levels,
        unpriced=sorted({m for u in usages for m in u.unpriced_models}),
    )


def load_reports(folder: str, runs: Sequence[str] | None = None) -> list[RunReport]:
    """Reports of the runs stored in a results folder (all of them, or those named)."""
    with ResultsStore(folder, readonly=True) as store:
        infos = store.runs() if not runs else [store.run(name) for name in runs]
        reports = []
        for info in infos:
            records = store.records(info.name)
            if records:
                failures = len(store.failures(info.name))
                report = build_report(info.name, info.config, records, failures)
                progress = store.progress(info.name)
                if progress is not None:
                    report.total, report.stopped_by = progress.total, progress.stopped_by
                    report.stop_note = progress.note
                reports.append(report)
    if not reports:
        raise ConfigError(f"no stored questions in {folder}")
    return reports
