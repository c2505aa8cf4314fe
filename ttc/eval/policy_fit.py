"""Fitting a compute-optimal policy from stored runs (Snell et al. 2024, section 3).

An evaluation store that holds several strategies and budgets on the same questions (an
experiment file's grid) says, for every question, whether each run got it right and what it
cost. Fitting a ``Policy`` for ``ComputeOptimal`` then means:

1. **The probe.** The first ``probe_n`` samples of a sampling run (the largest-``n``
   self-consistency, best-of-N or repeated-sample run) are what ``ComputeOptimal``'s probe would
   have drawn; their agreement (the share that give their majority answer) is each question's
   difficulty estimate.
2. **Bins.** Questions are grouped by that estimate: one bin per value it takes (``k/probe_n``),
   adjacent values merged until every bin holds at least ``min_questions``.
3. **Actions.** ``"stop"`` (the probe's majority; it costs the probe) and every stored run. A
   self-consistency run of ``n >= probe_n`` samples is the action ``"vote"`` to ``n``, whose
   samples include the probe's; any other run is its strategy by name, run after the probe
   (so it costs the probe plus the run).
4. **Choice.** The action per bin that maximizes the number of questions answered right while
   the mean generated tokens per question stays within the budget: exact, by enumerating every
   assignment (bins x actions is small), ties going to the cheaper assignment.

The fitted policy records what it was fitted on, and its expected accuracy on those questions
with a 95% bootstrap interval. That is an in-sample number: judge a policy on questions it was
not fitted on (the graded suite's held-out split).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttc.errors import ConfigError
from ttc.eval.compare import Interval, bootstrap
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.scoring.extract import normalize_answer
from ttc.strategies.compute_optimal import Bin, Policy

__all__ = ["Action", "PolicyFit", "fit_policy", "probe_agreement"]

_SAMPLING = ("self-consistency", "best-of-n", "repeated-sample")
#: Keys of a run's configuration that describe the model and sampling, not the strategy.
_NOT_STRATEGY = frozenset(
    {
        "strategy",
        "n",
        "model",
        "temperature",
        "max_tokens",
        "seed",
        "dataset",
        "format",
        "run",
        "levels",
        "per_level",
        "limit",
    }
)
#: Past this many assignments, the choice is made greedily instead of by enumeration.
_MAX_ASSIGNMENTS = 2_000_000


@dataclass(frozen=True)
class Action:
    """One thing a bin can do: its policy entry, the run it was measured on, and per question
    whether it was right and what it generated."""

    name: str
    action: str
    params: dict[str, Any]
    correct: dict[str, bool]
    tokens: dict[str, float]


@dataclass(frozen=True)
class PolicyFit:
    """A fitted policy with what it is expected to do, and the best single action beside it."""

    policy: Policy
    accuracy: Interval
    tokens: float
    questions: int
    best_fixed: str
    best_fixed_accuracy: Interval
    best_fixed_tokens: float
    per_bin: list[dict[str, Any]]


def probe_agreement(record: QuestionRecord, probe_n: int) -> tuple[float, bool, float]:
    """From a sampling run's record: the agreement of its first ``probe_n`` samples, whether
    their majority answer was right, and the tokens they generated."""
    probe = record.result.candidates[:probe_n]
    votes: Counter[str] = Counter()
    first_right: dict[str, bool] = {}
    for c in probe:
        key = normalize_answer(c.answer) if c.answer is not None else ""
        if key:
            votes[key] += 1
            first_right.setdefault(key, bool(c.verified))
    agreement = (max(votes.values()) / len(probe)) if votes and probe else 0.0
    leader = max(votes, key=lambda k: votes[k]) if votes else None  # first on ties
    right = first_right.get(leader, False) if leader is not None else False
    tokens = _tokens(record, probe)
    return agreement, right, tokens


def _tokens(record: QuestionRecord, candidates: Sequence[Any]) -> float:
    counted = [c.completion_tokens for c in candidates]
    if all(t is not None for t in counted):
        return float(sum(counted))
    total = record.result.usage.completion_tokens
    drawn = len(record.result.candidates) or 1
    return total * len(candidates) / drawn


def fit_policy(
    store: ResultsStore | str | Path,
    *,
    budget: float,
    probe_n: int = 4,
    min_questions: int = 5,
    runs: Sequence[str] | None = None,
) -> PolicyFit:
    """The policy that answers most questions right within ``budget`` mean generated tokens
    per question, from the runs in ``store`` (all of them, or those named in ``runs``)."""
    if not math.isfinite(budget) or budget <= 0:
        raise ConfigError(f"budget must be a positive number of tokens, got {budget!r}")
    if probe_n < 1 or min_questions < 1:
        raise ConfigError("probe_n and min_questions must be positive")
    own = not isinstance(store, ResultsStore)
    db = ResultsStore(store, create=False) if not isinstance(store, ResultsStore) else store
    try:
        infos = [r for r in db.runs() if runs is None or r.name in runs]
        if runs is not None and len(infos) != len(set(runs)):
            missing = sorted(set(runs) - {r.name for r in infos})
            raise ConfigError(f"no run named {', '.join(missing)} in the store")
        records = {r.name: {q.id: q for q in db.records(r.name)} for r in infos}
    finally:
        if own:
            db.close()
    if not infos:
        raise ConfigError("the store holds no runs to fit a policy on")
    shared = set.intersection(*(set(rs) for rs in records.values()))
    if not shared:
        raise ConfigError("the runs share no question: fit on runs over the same questions")
    questions = sorted(shared)

    probes = [
        r
        for r in infos
        if r.config.get("strategy") in _SAMPLING and int(r.config.get("n", 0)) >= probe_n
    ]
    if not probes:
        raise ConfigError(
            f"no sampling run with n >= {probe_n} (self-consistency, best-of-n or "
            "repeated-sample) to take the probe's samples from"
        )
    probe_run = max(probes, key=lambda r: int(r.config["n"])).name
    estimate: dict[str, float] = {}
    stop_right: dict[str, bool] = {}
    probe_tokens: dict[str, float] = {}
    for q in questions:
        estimate[q], stop_right[q], probe_tokens[q] = probe_agreement(
            records[probe_run][q], probe_n
        )

    actions = [Action("stop", "stop", {}, stop_right, probe_tokens)]
    for info in infos:
        config = info.config
        strategy = str(config.get("strategy", ""))
        n = int(config.get("n", 0))
        if _uses_the_reference(config):
            continue  # an oracle at evaluation time: no action a policy can take on new questions
        rows = records[info.name]
        right = {q: rows[q].correct for q in questions}
        spent = {q: float(rows[q].result.usage.completion_tokens) for q in questions}
        if strategy == "self-consistency" and n >= probe_n:
            actions.append(Action(info.name, "vote", {"n": n}, right, spent))
            continue
        params = {k: v for k, v in config.items() if k not in _NOT_STRATEGY and v is not None}
        params["n"] = n
        with_probe = {q: probe_tokens[q] + spent[q] for q in questions}
        actions.append(Action(info.name, strategy, params, right, with_probe))

    bins = _bins(estimate, probe_n, min_questions)
    members = [
        [q for q in questions if b[0] <= estimate[q] < b[1] or (b[1] == 1.0 and estimate[q] == 1.0)]
        for b in bins
    ]
    choice = _choose(members, actions, budget * len(questions))
    if choice is None:
        cheapest = min(sum(a.tokens[q] for q in questions) for a in actions) / len(questions)
        raise ConfigError(
            f"no policy fits a budget of {budget:g} tokens per question: the cheapest action "
            f"alone costs {cheapest:.0f}"
        )

    per_question_right: list[float] = []
    spent_total = 0.0
    per_bin: list[dict[str, Any]] = []
    policy_bins: list[Bin] = []
    for (low, high), qs, a in zip(bins, members, choice):
        hits = [float(actions[a].correct[q]) for q in qs]
        per_question_right += hits
        cost = sum(actions[a].tokens[q] for q in qs)
        spent_total += cost
        name = f"{low:.2f}-{high:.2f}"
        per_bin.append(
            {
                "bin": name,
                "questions": len(qs),
                "action": actions[a].name,
                "accuracy": sum(hits) / len(hits) if hits else 0.0,
                "tokens": cost / len(qs) if qs else 0.0,
            }
        )
        policy_bins.append(
            Bin(name=name, low=low, high=high, action=actions[a].action, params=actions[a].params)
        )

    accuracy = bootstrap(per_question_right)
    mean_tokens = spent_total / len(questions)
    fixed = [
        a for a in actions if sum(a.tokens[q] for q in questions) <= budget * len(questions) + 1e-9
    ]
    best = max(fixed, key=lambda a: (sum(a.correct[q] for q in questions), -sum(a.tokens.values())))
    best_interval = bootstrap([float(best.correct[q]) for q in questions])
    policy = Policy(
        probe_n=probe_n,
        difficulty="agreement",
        bins=tuple(policy_bins),
        fitted_on={
            "runs": [r.name for r in infos],
            "probe_run": probe_run,
            "questions": len(questions),
            "budget_tokens": budget,
            "expected_accuracy": round(accuracy.mean, 4),
            "expected_accuracy_95": [round(accuracy.low, 4), round(accuracy.high, 4)],
            "expected_tokens": round(mean_tokens, 1),
            "in_sample": True,
            "fitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return PolicyFit(
        policy=policy,
        accuracy=accuracy,
        tokens=mean_tokens,
        questions=len(questions),
        best_fixed=best.name,
        best_fixed_accuracy=best_interval,
        best_fixed_tokens=sum(best.tokens[q] for q in questions) / len(questions),
        per_bin=per_bin,
    )


def _uses_the_reference(config: dict[str, Any]) -> bool:
    """Runs whose answer used the dataset's reference (repeated sampling judged by it, best-of-N
    scored by it): fine as the probe's samples, not as an action."""
    strategy = config.get("strategy")
    return strategy == "repeated-sample" or (
        strategy == "best-of-n" and config.get("scorer", "verifier") == "verifier"
    )


def _bins(
    estimate: dict[str, float], probe_n: int, min_questions: int
) -> list[tuple[float, float]]:
    """Contiguous ranges covering [0, 1]: one per value the estimate takes, merged left to
    right until each holds ``min_questions`` (a short last group joins the one before)."""
    values = sorted(set(estimate.values()))
    counts = Counter(estimate.values())
    groups: list[list[float]] = []
    for v in values:
        if groups and sum(counts[x] for x in groups[-1]) < min_questions:
            groups[-1].append(v)
        else:
            groups.append([v])
    if len(groups) > 1 and sum(counts[x] for x in groups[-1]) < min_questions:
        groups[-2].extend(groups.pop())
    edges = [0.0]
    for before, after in itertools.pairwise(groups):
        edges.append((before[-1] + after[0]) / 2)
    edges.append(1.0)
    return list(itertools.pairwise(edges))


def _choose(
    members: list[list[str]], actions: list[Action], allowance: float
) -> tuple[int, ...] | None:
    """The action index per bin with the most right answers within ``allowance`` tokens in
    all; ties to the cheaper. ``None`` if nothing fits."""
    right = [[sum(a.correct[q] for q in qs) for a in actions] for qs in members]
    cost = [[sum(a.tokens[q] for q in qs) for a in actions] for qs in members]
    if len(actions) ** len(members) <= _MAX_ASSIGNMENTS:
        best: tuple[int, ...] | None = None
        best_key = (-1.0, 0.0)
        for assignment in itertools.product(range(len(actions)), repeat=len(members)):
            spent = sum(cost[b][a] for b, a in enumerate(assignment))
            if spent > allowance + 1e-9:
                continue
            key = (float(sum(right[b][a] for b, a in enumerate(assignment))), -spent)
            if key > best_key:
                best, best_key = assignment, key
        return best
    # Greedy: start from the cheapest action per bin, then take the upgrades with the most
    # right answers per token while they fit.
    current = [min(range(len(actions)), key=lambda a: cost[b][a]) for b in range(len(members))]
    spent = sum(cost[b][a] for b, a in enumerate(current))
    if spent > allowance + 1e-9:
        return None
    while True:
        upgrades = [
            (
                (right[b][a] - right[b][current[b]]) / max(cost[b][a] - cost[b][current[b]], 1e-9),
                b,
                a,
            )
            for b in range(len(members))
            for a in range(len(actions))
            if right[b][a] > right[b][current[b]]
            and spent - cost[b][current[b]] + cost[b][a] <= allowance + 1e-9
        ]
        if not upgrades:
            return tuple(current)
        _, b, a = max(upgrades)
        spent += cost[b][a] - cost[b][current[b]]
        current[b] = a
