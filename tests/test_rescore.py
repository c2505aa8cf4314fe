"""``ttc rescore``: a stored run's samples scored again by a PRM, without sampling again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from ttc.adapters.function import FunctionModel
from ttc.cli import app
from ttc.errors import ConfigError, ProviderError
from ttc.eval.compare import compare_runs
from ttc.eval.datasets import Dataset, load_dataset
from ttc.eval.rescore import rescore, rescored_config, rescored_spec
from ttc.eval.runner import evaluate
from ttc.eval.solver import Solver, spec_strategy
from ttc.eval.store import ResultsStore
from ttc.scoring.base import Scorer
from ttc.scoring.prm import ArithmeticPRM, PRMScorer
from ttc.scoring.selectors import WeightedMajority
from ttc.strategies.registry import StrategySpec
from ttc.types import Candidate, GenerateRequest, Prompt

# One sample in four does the sum right; the other three agree on a wrong total, so the vote
# is wrong and a PRM that checks the arithmetic is right.
RIGHT = "We add {a} + {b} = {s}.\nThe answer is {s}."
WRONG = "We add {a} + {b} = {w}.\nThe answer is {w}."
QUESTIONS = [(2, 3), (4, 5), (10, 7)]


def _dataset(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    lines = [
        json.dumps(
            {"question": f"What is {a} + {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b}"}
        )
        for a, b in QUESTIONS
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _reply(request: GenerateRequest, i: int) -> str:
    text = request.prompt if isinstance(request.prompt, str) else str(request.prompt)
    a, b = next((a, b) for a, b in QUESTIONS if f"What is {a} + {b}?" in text)
    template = RIGHT if i % 4 == 0 else WRONG
    return template.format(a=a, b=b, s=a + b, w=a + b + 1)


def _source(tmp_path: Path) -> tuple[Path, Dataset, dict[str, object]]:
    """A self-consistency run of n=4 on the three sums, stored as run 'sc'."""
    path = _dataset(tmp_path)
    data = load_dataset(path, "gsm8k")
    spec = StrategySpec.of("self-consistency", n=4)
    config = {**spec.config(), "model": "embedded", "dataset": str(path), "format": "gsm8k"}
    solver = Solver(
        model=FunctionModel(_reply, native_n=False), strategy=spec_strategy(spec), config=config
    )
    out = tmp_path / "results"
    anyio.run(lambda: evaluate(data, solver, out, run="sc"))
    return out, data, config


class Counting(Scorer):
    """The arithmetic PRM's scorer, counting the questions it scores (or failing on one)."""

    name = "arithmetic"

    def __init__(self, fail_on: str | None = None) -> None:
        self.inner = PRMScorer(ArithmeticPRM(), delimiter="\n", aggregation="min")
        self.prompts: list[str] = []
        self.fail_on = fail_on

    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        assert isinstance(prompt, str)
        self.prompts.append(prompt)
        if self.fail_on is not None and self.fail_on in prompt:
            raise ProviderError("the PRM's server went away")
        return await self.inner.score(prompt, candidates)


def test_a_prm_on_stored_samples_changes_the_selection_and_nothing_else(tmp_path: Path) -> None:
    out, data, config = _source(tmp_path)
    spec = rescored_spec(config, "arithmetic")
    new_config = rescored_config("sc", config, spec)
    scorer = Counting()

    def go() -> object:
        return rescore(
            out, "sc", scorer, WeightedMajority(), data, config=new_config, name="sc-arith"
        )

    summary = anyio.run(go)
    assert (summary.total, summary.new, summary.skipped, summary.failed) == (3, 3, 0, 0)
    assert summary.source_accuracy == 0.0 and summary.accuracy == 1.0
    with ResultsStore(out) as store:
        before = {r.id: r for r in store.records("sc")}
        after = {r.id: r for r in store.records("sc-arith")}
        stored = store.run("sc-arith").config
    # The best-of-n run these samples stand for, with the sampling settings and the source.
    assert stored["strategy"] == "best-of-n" and stored["scorer"] == "prm"
    assert stored["prm"] == "arithmetic" and stored["n"] == 4
    assert stored["rescored_from"] == "sc" and stored["dataset"] == config["dataset"]
    assert "stop_when_settled" in stored  # best-of-n's own parameter, not a leftover
    for qid, old in before.items():
        new = after[qid]
        assert not old.correct and new.correct
        assert new.result.usage == old.result.usage  # the samples' cost, unchanged
        assert [c.text for c in new.result.candidates] == [c.text for c in old.result.candidates]
        assert [c.verified for c in new.result.candidates] == [
            c.verified for c in old.result.candidates
        ]
        # min over steps: the right sum 1.0, "The answer is N." 0.5 (nothing to check).
        expected = [0.5 if c.verified else 0.0 for c in old.result.candidates]
        assert [c.score for c in new.result.candidates] == expected
        assert [c.scores.get("arithmetic") for c in new.result.candidates] == expected
        assert all(set(c.scores) <= {"verified", "arithmetic"} for c in new.result.candidates)
        assert all(c.score is None for c in old.result.candidates)  # the source is untouched
    # The PRM read the prompts the samples were drawn for.
    assert scorer.prompts == [data.prompt(e) for e in data.examples]
    # A rerun skips what is stored; the report draws the run as its own series.
    again = anyio.run(go)
    assert (again.new, again.skipped) == (0, 3) and len(scorer.prompts) == 3
    with ResultsStore(out) as store:
        runs = [(r.name, r.config, store.records(r.name)) for r in store.runs()]
    names = {s.name for s in compare_runs(runs)}
    assert "best-of-n (prm: arithmetic) rescored: weighted@k" in names
    assert "self-consistency: majority@k" in names
    # Two trained heads are two series, named by the folder each reads.
    head = {"strategy": "best-of-n", "scorer": "prm", "prm": "hidden-state", "n": 4}
    records = runs[0][2]
    twin = [
        ("a", {**head, "prm.path": "prms/head-a"}, records),
        ("b", {**head, "prm.path": "prms/head-b/"}, records),
    ]
    named = {s.name for s in compare_runs(twin)}
    assert {"best-of-n (prm: hidden-state head-a)", "best-of-n (prm: hidden-state head-b)"} <= named


def test_a_failing_prm_loses_no_question_and_a_rerun_finishes(tmp_path: Path) -> None:
    out, data, config = _source(tmp_path)
    new_config = rescored_config("sc", config, rescored_spec(config, "arithmetic"))
    broken = Counting(fail_on="What is 4 + 5?")
    summary = anyio.run(
        lambda: rescore(out, "sc", broken, WeightedMajority(), data, config=new_config, name="r")
    )
    assert (summary.new, summary.failed) == (2, 1)
    with ResultsStore(out) as store:
        assert "the PRM's server went away" in next(iter(store.failures("r").values()))
        assert store.count("sc") == 3  # the source keeps every question
    fixed = Counting()
    summary = anyio.run(
        lambda: rescore(out, "sc", fixed, WeightedMajority(), data, config=new_config, name="r")
    )
    assert (summary.new, summary.skipped, summary.correct) == (1, 2, 3)
    assert len(fixed.prompts) == 1


def test_rescoring_refuses_what_it_cannot_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="finished beams"):
        rescored_spec({"strategy": "beam-prm", "n": 4}, "arithmetic")
    with pytest.raises(ConfigError, match="unknown PRM option 'path'"):
        rescored_spec({"strategy": "best-of-n", "n": 4}, "arithmetic", {"path": "x"})
    with pytest.raises(ConfigError, match=r"needs prm\.path"):
        rescored_spec({"strategy": "best-of-n", "n": 4}, "hidden-state")
    out, data, config = _source(tmp_path)
    new_config = rescored_config("sc", config, rescored_spec(config, "arithmetic"))
    scorer = Counting()
    with pytest.raises(ConfigError, match=r"no run .nope.*its runs: sc"):
        anyio.run(
            lambda: rescore(
                out, "nope", scorer, WeightedMajority(), data, config=new_config, name="r"
            )
        )
    other = load_dataset("gsm8k-sample")
    with pytest.raises(ConfigError, match=r"reads differently in dataset .gsm8k-sample"):
        anyio.run(
            lambda: rescore(
                out, "sc", scorer, WeightedMajority(), other, config=new_config, name="r"
            )
        )
    assert scorer.prompts == []  # nothing scored before the checks


def test_ttc_rescore_reads_the_run_and_prints_both_accuracies(tmp_path: Path) -> None:
    out, _, _ = _source(tmp_path)
    runner = CliRunner()
    args = ["rescore", str(out), "--run", "sc", "--prm", "arithmetic", "--json"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["source_accuracy"] == 0.0 and summary["accuracy"] == 1.0
    assert summary["rescored"] == 3 and summary["run"].startswith("sc-arithmetic-")
    again = runner.invoke(app, args)
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 3
    bad = runner.invoke(app, [*args, "--param", "width=2"])
    assert bad.exit_code == 2 and "prm.KEY=VALUE" in bad.output
    search = runner.invoke(app, ["rescore", str(out), "--run", "missing", "--prm", "arithmetic"])
    assert search.exit_code == 2 and "no run 'missing'" in search.output
