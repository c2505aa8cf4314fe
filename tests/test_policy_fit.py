"""Fitting a compute-optimal policy from stored runs: bins from the probe's agreement, the best
action per bin within the budget, oracle runs kept out, and the fitted policy runnable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ttc.cli import app
from ttc.errors import ConfigError
from ttc.eval.policy_fit import fit_policy
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.strategies.compute_optimal import ComputeOptimal, Policy
from ttc.strategies.registry import BuildContext, policy_factory
from ttc.types import Candidate, Result, Usage

#: Ten easy questions (the probe agrees, and is right) and ten hard ones (the probe splits;
#: only the expensive beam search gets them right).
EASY = [f"e{i}" for i in range(10)]
HARD = [f"h{i}" for i in range(10)]
TOKENS_PER_SAMPLE = 10


def record(qid: str, position: int, answers: list[str], gold: str, correct: bool) -> QuestionRecord:
    candidates = [
        Candidate(
            text=f"The answer is {a}",
            answer=a,
            verified=(a == gold),
            completion_tokens=TOKENS_PER_SAMPLE,
        )
        for a in answers
    ]
    usage = Usage(completion_tokens=TOKENS_PER_SAMPLE * len(answers), requests=1)
    result = Result(answer=answers[0] if answers else None, candidates=candidates, usage=usage)
    return QuestionRecord(
        id=qid,
        position=position,
        question=qid,
        reference=gold,
        fingerprint=qid,
        correct=correct,
        result=result,
    )


def make_store(folder: Path) -> Path:
    with ResultsStore(folder) as store:
        store.open_run("sc8", {"strategy": "self-consistency", "n": 8, "model": "m"})
        store.open_run(
            "beam16",
            {"strategy": "beam-prm", "n": 16, "width": 4, "prm": "arithmetic", "model": "m"},
        )
        store.open_run("oracle", {"strategy": "repeated-sample", "n": 8, "model": "m"})
        for i, q in enumerate(EASY):
            store.put("sc8", record(q, i, ["5"] * 8, "5", True))
            store.put("beam16", record(q, i, ["5"] * 16, "5", True))
            store.put("oracle", record(q, i, ["5"] * 8, "5", True))
        for i, q in enumerate(HARD, start=len(EASY)):
            split = ["1", "2", "3", "4", "1", "2", "3", "4"]
            store.put("sc8", record(q, i, split, "9", False))
            store.put("beam16", record(q, i, ["9"] * 16, "9", True))
            store.put("oracle", record(q, i, [*split, "9"], "9", True))
    return folder


def test_the_fit_spends_where_it_pays_and_keeps_to_the_budget(tmp_path: Path) -> None:
    folder = make_store(tmp_path / "runs")
    # Probe: 4 samples = 40 tokens. Stop on easy (40), beam search on hard (40 + 160).
    # Mean: (10 * 40 + 10 * 200) / 20 = 120 tokens.
    fit = fit_policy(folder, budget=120, probe_n=4)
    policy = fit.policy
    assert policy.bin_for(1.0).action == "stop"
    assert policy.bin_for(0.25).action == "beam-prm"
    assert policy.bin_for(0.25).params["width"] == 4 and policy.bin_for(0.25).params["n"] == 16
    assert fit.accuracy.mean == 1.0 and fit.tokens == pytest.approx(120)
    # Beam search on everything would also be right everywhere but costs 200 a question: over
    # the budget. The best single action within 120 tokens is stopping at the probe.
    assert fit.best_fixed == "stop" and fit.best_fixed_accuracy.mean == 0.5
    assert policy.fitted_on["probe_run"] == "sc8"
    assert policy.fitted_on["questions"] == 20
    # The oracle run (judged by the reference) is never an action.
    assert all(b.action != "repeated-sample" for b in policy.bins)


def test_a_tighter_budget_gives_up_on_the_hard_bin(tmp_path: Path) -> None:
    fit = fit_policy(make_store(tmp_path / "runs"), budget=60, probe_n=4)
    assert {b.action for b in fit.policy.bins} == {"stop"}
    assert fit.accuracy.mean == 0.5
    with pytest.raises(ConfigError, match="no policy fits a budget of 10 tokens"):
        fit_policy(tmp_path / "runs", budget=10, probe_n=4)


def test_the_fitted_policy_builds_its_strategies_through_the_registry(tmp_path: Path) -> None:
    from ttc.adapters import FunctionModel

    fit = fit_policy(make_store(tmp_path / "runs"), budget=120, probe_n=4)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(fit.policy.model_dump(mode="json")), encoding="utf-8")
    model = FunctionModel(lambda request, i: "The answer is 3")
    strategy = ComputeOptimal(model, Policy.load(path), factory=policy_factory(BuildContext()))
    result = strategy.run_sync("easy question")
    assert result.routing is not None and result.routing.action == "stop"
    assert result.answer == "3"


def test_fit_policy_command_writes_a_loadable_policy(tmp_path: Path) -> None:
    folder = make_store(tmp_path / "runs")
    for name in ("policy.json", "policy.toml"):
        out = tmp_path / name
        result = CliRunner().invoke(
            app, ["fit-policy", str(folder), "--budget", "120", "--output", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert "beam16" in result.output and "best single strategy" in result.output
        loaded = Policy.load(out)
        assert loaded.bin_for(0.25).action == "beam-prm"
        assert loaded.fitted_on["budget_tokens"] == 120
    bad = CliRunner().invoke(app, ["fit-policy", str(tmp_path / "nothing"), "--budget", "5"])
    assert bad.exit_code == 2
    assert "no results" in bad.output


def test_ttc_eval_and_ttc_run_offer_every_registered_strategy() -> None:
    from ttc.cli import StrategyName
    from ttc.cli.eval import EvalStrategy
    from ttc.strategies.registry import STRATEGIES

    assert {s.value for s in EvalStrategy} == set(STRATEGIES)
    assert {s.value for s in StrategyName} == set(STRATEGIES)
