"""``ttc eval --strategy adaptive-allocation``: one budget over all of a run's questions, never
passed, spent where votes are unsettled; every question stored judged, as any run's; a run that
crashed resumes with what it stored counted against the budget."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ttc import Budget
from ttc.adapters import FunctionModel
from ttc.adapters.function import prompt_text
from ttc.errors import ConfigError, ServerError
from ttc.eval.datasets import Dataset, load_dataset
from ttc.eval.experiment import load_experiment
from ttc.eval.runner import EvalSummary, evaluate
from ttc.eval.solver import Solver, named_strategy
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.runtime.model import Model
from ttc.runtime.retry import RetryPolicy
from ttc.types import GenerateRequest, Result, SamplingParams, Usage

pytestmark = pytest.mark.anyio

#: Per question, its reference and the answers its samples give in turn: "easy" questions
#: agree at once, "split" ones need a few rounds to settle, "hopeless" ones never agree.
QUESTIONS = {
    "easy one": ("4", ["4"]),
    "easy two": ("9", ["9"]),
    "split": ("7", ["7", "7", "7", "8"]),
    "hopeless": ("2", [str(i) for i in range(3, 1000)]),
}
PARAMS = SamplingParams(max_tokens=8)


def write_dataset(folder: Path) -> Path:
    path = folder / "tiny.jsonl"
    lines = [
        json.dumps({"question": q, "answer": f"#### {ref}"}) for q, (ref, _) in QUESTIONS.items()
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def scripted() -> FunctionModel:
    counters = {q: itertools.count() for q in QUESTIONS}

    def reply(request: GenerateRequest, i: int) -> str:
        question = prompt_text(request)
        answers = QUESTIONS[question][1]
        return f"So the answer is {answers[next(counters[question]) % len(answers)]}"

    return FunctionModel(reply, model="scripted")


def allocation(model: Model, **params: object) -> Solver:
    options = {"batch": 4, "max_n": 16, **params}
    make = named_strategy("adaptive-allocation", 1, params=PARAMS, strategy_params=options)
    return Solver(model, make, make.spec.config())


def stored(out: Path, run: str) -> dict[str, QuestionRecord]:
    with ResultsStore(out) as store:
        return {r.question: r for r in store.records(run)}


def stored_usage(out: Path, run: str) -> Usage:
    with ResultsStore(out) as store:
        return store.usage(run)


class Rounds:
    """A progress display that records what it is told."""

    animated = False

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.updates = 0

    def start(self, summary: EvalSummary) -> None:
        pass

    def update(self, usage: Usage) -> None:
        self.updates += 1

    def refresh(self, usage: Usage) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)

    def stop(self) -> None:
        pass


@pytest.fixture
def data(tmp_path: Path) -> Dataset:
    return load_dataset(write_dataset(tmp_path))


async def test_every_question_is_stored_judged_and_the_unsettled_get_more_samples(
    tmp_path: Path, data: Dataset
) -> None:
    model = scripted()
    display = Rounds()
    budget = Budget(requests=100)  # enough for every question to reach its end
    summary = await evaluate(data, allocation(model), tmp_path, budget=budget, progress=display)
    assert summary.stored == summary.total == 4 and summary.stopped_by is None
    records = stored(tmp_path, summary.run)
    easy, split, hopeless = records["easy one"], records["split"], records["hopeless"]
    # Judged with each question's verifier, as any strategy's results are.
    assert easy.correct and records["easy two"].correct and split.correct
    assert not hopeless.correct
    assert all(c.verified is not None for r in records.values() for c in r.result.candidates)
    # Settled questions left after one batch; the split one took more; the hopeless one max_n.
    assert len(easy.result.candidates) == 4 and easy.result.stopped_by == "settled"
    assert len(split.result.candidates) == 12 and split.result.stopped_by == "settled"
    assert len(hopeless.result.candidates) == 16 and hopeless.result.stopped_by is None
    assert summary.accuracy == 0.75
    # What was stored is what was spent, and the display heard of every round.
    assert stored_usage(tmp_path, summary.run).requests == model.usage.requests
    assert summary.usage.requests == model.usage.requests
    assert display.updates == 4 and len(display.notes) == 4  # max_n / batch rounds
    assert display.notes == [
        f"round {r}: {d} of 4 questions done" for r, d in enumerate([2, 2, 3, 4], 1)
    ]


@pytest.mark.parametrize(
    "budget",
    [Budget(requests=5), Budget(requests=9), Budget(tokens=250), Budget(tokens=400)],
    ids=str,
)
async def test_the_shared_budget_is_never_passed_and_goes_to_the_unsettled(
    tmp_path: Path, data: Dataset, budget: Budget
) -> None:
    model = scripted()
    summary = await evaluate(data, allocation(model, max_n=64), tmp_path, budget=budget)
    spent = model.usage
    assert budget.requests is None or spent.requests <= budget.requests
    assert budget.tokens is None or spent.total_tokens <= budget.tokens
    # Every question got its first batch, so every one is stored with a verdict.
    records = stored(tmp_path, summary.run)
    assert len(records) == 4 and summary.stored == 4
    assert records["easy one"].correct and records["easy two"].correct
    assert len(records["easy one"].result.candidates) == 4
    # The rest of the budget went to the unsettled questions.
    assert len(records["hopeless"].result.candidates) > 4
    assert records["hopeless"].result.stopped_by == "budget"
    assert stored_usage(tmp_path, summary.run).requests == spent.requests


async def test_a_budget_too_small_for_every_question_stores_those_it_paid_for(
    tmp_path: Path, data: Dataset
) -> None:
    model = scripted()
    first = await evaluate(data, allocation(model), tmp_path, budget=Budget(requests=3))
    assert model.usage.requests == 3
    assert first.stored == 3 and first.incomplete == 1 and first.stopped_by == "budget"
    assert "requests" in (first.budget_error or "")
    # A larger budget answers the last one; the stored three count against it.
    again = await evaluate(data, allocation(model), tmp_path, budget=Budget(requests=4))
    assert again.skipped == 3 and again.new == 1 and again.stored == 4
    assert model.usage.requests == 4


class Crash(Exception):
    pass


class CrashAfterRound(Rounds):
    """Kills the run (an exception out of the display) once the first round is stored."""

    def note(self, text: str) -> None:
        raise Crash(text)


async def test_a_crashed_run_resumes_and_what_it_stored_counts_against_the_budget(
    tmp_path: Path, data: Dataset
) -> None:
    budget, solver = Budget(requests=8), allocation(scripted(), max_n=64)
    with pytest.raises(Crash, match="round 1"):
        await evaluate(data, solver, tmp_path, budget=budget, progress=CrashAfterRound())
    run = "tiny-adaptive-allocation-n1"
    assert set(stored(tmp_path, run)) == {"easy one", "easy two"}  # settled in round one
    kept = stored_usage(tmp_path, run)
    assert kept.requests == 2
    model = scripted()
    summary = await evaluate(data, allocation(model, max_n=64), tmp_path, budget=budget)
    assert summary.run == run and summary.skipped == 2 and summary.stored == 4
    # Only what the stored questions did not spend was left for the resumed run.
    assert model.usage.requests == 8 - kept.requests
    assert stored_usage(tmp_path, run).requests == 8


def test_on_round_sees_each_question_once_in_the_round_it_leaves() -> None:
    from ttc.strategies.allocation import AdaptiveAllocation

    rounds: list[list[tuple[int, int]]] = []

    def seen(finished: Sequence[tuple[int, Result]]) -> None:  # a plain function works too
        rounds.append([(i, len(r.candidates)) for i, r in finished])

    prompts = list(QUESTIONS)
    allocation = AdaptiveAllocation(scripted(), budget=None, batch=4, max_n=16)
    results = allocation.run_sync(prompts, on_round=seen)
    assert rounds == [[(0, 4), (1, 4)], [], [(2, 12)], [(3, 16)]]
    assert [len(r.candidates) for r in results] == [4, 4, 12, 16]


async def test_a_question_whose_provider_fails_is_noted_and_retried_by_a_rerun(
    tmp_path: Path, data: Dataset
) -> None:
    down = True
    fine = scripted()

    def reply(request: GenerateRequest, i: int) -> str:
        if down and prompt_text(request) == "split":
            raise ServerError("down", status=503)
        return fine.fn(request, i)  # type: ignore[return-value]

    model = FunctionModel(reply, retry=RetryPolicy(max_attempts=1))
    budget = Budget(requests=100)
    first = await evaluate(data, allocation(model), tmp_path, budget=budget)
    assert first.stored == 3 and list(first.failed) == ["3"]
    assert "line 3" in first.failed["3"] and "down" in first.failed["3"]
    with ResultsStore(tmp_path) as store:
        assert list(store.failures(first.run)) == ["3"]
    down = False
    second = await evaluate(data, allocation(model), tmp_path, budget=budget)
    assert second.new == 1 and second.stored == 4 and not second.failed
    assert stored(tmp_path, second.run)["split"].correct


async def test_a_run_without_a_budget_or_with_bad_settings_is_refused(
    tmp_path: Path, data: Dataset
) -> None:
    with pytest.raises(ConfigError, match="budget: adaptive-allocation spends one budget"):
        await evaluate(data, allocation(scripted()), tmp_path)
    with pytest.raises(ConfigError, match="drop --ray"):
        await evaluate(data, allocation(scripted()), tmp_path, budget=Budget(tokens=9), ray=True)
    with pytest.raises(ConfigError, match="batch"):
        named_strategy("adaptive-allocation", 1, strategy_params={"batch": 0})
    with pytest.raises(ConfigError, match="threshold"):
        named_strategy("adaptive-allocation", 1, strategy_params={"threshold": "1.5"})
    with pytest.raises(ConfigError, match="unknown parameter 'width'"):
        named_strategy("adaptive-allocation", 1, strategy_params={"width": 2})
    assert not (tmp_path / "results.sqlite").exists()  # refused before anything was stored


def test_an_experiment_cell_takes_the_files_budget_or_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    cell = '[[strategy]]\nname = "adaptive-allocation"\nbatch = 2\n'
    path.write_text(f'datasets = ["{write_dataset(tmp_path)}"]\n{cell}', encoding="utf-8")
    with pytest.raises(ConfigError, match="budget_tokens"):
        load_experiment(path)
    path.write_text(
        f'datasets = ["{write_dataset(tmp_path)}"]\nbudget_tokens = 500\n{cell}', encoding="utf-8"
    )
    experiment = load_experiment(path)
    assert experiment.budget_tokens == 500
    assert experiment.cells[0].strategy.param("batch") == 2


# --------------------------------------------------------------------------------------------
# The command line


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    from ttc.cli import app

    def resolve(name: str, **kwargs: Any) -> Model:
        return scripted()

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)

    def invoke(*args: str | Path) -> Any:
        return CliRunner().invoke(app, [str(a) for a in args])

    return invoke


def test_ttc_eval_runs_it_and_ttc_report_reads_the_store(tmp_path: Path, cli: Any) -> None:
    dataset, out = write_dataset(tmp_path), tmp_path / "out"
    args = ["eval", dataset, "-s", "adaptive-allocation", "-o", out, "--max-tokens", "8"]
    result = cli(*args, "--budget-tokens", "400", "--param", "batch=4", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stored"] == 4 and summary["accuracy"] == 0.75
    usage = summary["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= 400
    records = stored(out, summary["run"])
    assert len(records["easy one"].result.candidates) == 4
    assert len(records["hopeless"].result.candidates) > 4
    with ResultsStore(out) as store:
        (info,) = store.runs()
        assert info.config["strategy"] == "adaptive-allocation" and info.config["max_n"] == 32
    report = cli("report", out, "--markdown", "--no-plots")
    assert report.exit_code == 0, report.output
    assert "adaptive-allocation" in report.stdout
    # The budget is required, and named; a bad --param names the parameter.
    missing = cli(*args)
    assert missing.exit_code == 2 and "--budget-tokens" in missing.output
    bad = cli(*args, "--budget-tokens", "400", "--param", "max_n=0")
    assert bad.exit_code == 2 and "max_n" in bad.output


def test_ttc_run_refuses_it_on_one_prompt(cli: Any) -> None:
    result = cli("run", "easy one", "-s", "adaptive-allocation", "--budget-tokens", "100")
    assert result.exit_code == 2
    assert "ttc eval" in result.output and "adaptive-consistency" in result.output
