"""The experiment grid's budget axis: ``budgets = [...]`` generated tokens per question."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from ttc.adapters.function import FunctionModel
from ttc.errors import ConfigError
from ttc.eval.datasets import load_dataset
from ttc.eval.experiment import load_experiment, run_experiment
from ttc.eval.store import ResultsStore
from ttc.runtime.budget import Budget
from ttc.strategies import SelfConsistency
from ttc.strategies.registry import StrategySpec
from ttc.types import GenerateRequest, SamplingParams

GRID = """
out = "{out}"
datasets = ["graded-dev"]
models = ["scripted"]
levels = [1, 2]
per_level = 2
max_tokens = 20
budgets = [20, 60]

[[strategy]]
name = "self-consistency"
n = 8

[[strategy]]
name = "beam-prm"
n = 4
width = 2
budgets = [40]
"""

GRADED = load_dataset("graded-dev")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(text.replace("{out}", str(tmp_path / "results")))
    return path


def _right(request: GenerateRequest, i: int) -> str:
    """A right answer to the question the prompt ends with (the graded suite's reference):
    steps of one line each, 14 or 15 words (tokens) in all."""
    prompt = request.prompt
    assert isinstance(prompt, str)
    example = max(GRADED.examples, key=lambda e: prompt.rfind(e.question))
    return f"Tom has 2 apples.\nThen 2 + 3 = 5 apples.\nThe answer is {example.reference}."


def test_a_budgets_grid_makes_one_cell_per_budget_and_no_question_passes_its_budget(
    tmp_path: Path,
) -> None:
    experiment = load_experiment(_write(tmp_path, GRID))
    budgets = [(cell.strategy.name, cell.budget) for cell in experiment.cells]
    assert budgets == [("self-consistency", 20), ("self-consistency", 60), ("beam-prm", 40)]
    names = [cell.run_name() for cell in experiment.cells]
    assert names[0].startswith("graded-dev-self-consistency-n8-b20-")
    assert len(set(names)) == 3
    assert [cell.config()["budget"] for cell in experiment.cells] == [20, 60, 40]
    model = FunctionModel(_right, native_n=True)
    summaries = anyio.run(lambda: run_experiment(experiment, models={"scripted": model}))
    assert [s.new for s in summaries] == [4, 4, 4]
    assert all(s.finished and not s.failed for s in summaries)
    with ResultsStore(experiment.out) as store:
        for cell, name in zip(experiment.cells, names):
            assert store.run(name).config["budget"] == cell.budget
            records = store.records(name)
            assert len(records) == 4
            for record in records:
                usage = record.result.usage
                assert cell.budget is not None
                assert 0 < usage.completion_tokens <= cell.budget
                # Prompts are not charged: the few-shot prompt alone is far above any budget.
                assert usage.prompt_tokens > cell.budget
        # 8 samples of 14-15 tokens need over 112, each reserved at max_tokens (20): the
        # budget stops both sampling cells part-way (one sample fits 20, a few fit 60), and
        # the answer so far is stored and judged (it is right), not left for a rerun.
        for name, most in ((names[0], 1), (names[1], 4)):
            for record in store.records(name):
                assert record.result.stopped_by == "budget"
                assert record.result.budget_stop is not None
                assert record.result.budget_stop.limit == "completion_tokens"
                assert 1 <= len(record.result.candidates) <= most
                assert record.correct and record.result.answer == record.reference


def test_a_rerun_of_a_budgets_grid_skips_every_stored_cell(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, GRID))
    model = FunctionModel(_right, native_n=True)
    anyio.run(lambda: run_experiment(experiment, models={"scripted": model}))

    def never(request: GenerateRequest, i: int) -> str:
        raise AssertionError("a stored cell ran again")

    again = FunctionModel(never)
    summaries = anyio.run(lambda: run_experiment(experiment, models={"scripted": again}))
    assert [s.new for s in summaries] == [0, 0, 0]
    assert [s.skipped for s in summaries] == [4, 4, 4]


def test_a_model_budget_stop_is_not_stored_as_an_answer(tmp_path: Path) -> None:
    """A stop by the model's own budget (shared by every question) is the run's, even where
    each question has its own budget: the question is left for a rerun, not stored."""
    experiment = load_experiment(_write(tmp_path, GRID.replace("[20, 60]", "[60]")))
    # Room for the first question's 60 tokens and a few of the second's.
    model = FunctionModel(_right, native_n=True, budget=Budget(completion_tokens=70))
    summaries = anyio.run(lambda: run_experiment(experiment, models={"scripted": model}))
    first = summaries[0]
    assert first.stopped_by == "budget" and not first.finished
    with ResultsStore(experiment.out) as store:
        stored = store.records(experiment.cells[0].run_name())
    # The first question fits; the second is cut by the model's budget and not stored.
    assert [record.id for record in stored] == ["L1-001"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("budgets = [20, 60]", "budgets = [0]"), "budgets must be an integer of at least 1"),
        (("budgets = [20, 60]", "budgets = []"), "budgets must not be empty"),
        (("budgets = [20, 60]", "budgets = ['many']"), "budgets must be an integer"),
        (("budgets = [20, 60]", "budgets = [20, 20]"), "budgets lists a budget twice"),
        (("budgets = [40]", "budgets = [-1]"), r"\[\[strategy\]\] #2 budgets must be an integer"),
        (("budgets = [40]", "budgets = 2.5"), r"\[\[strategy\]\] #2 budgets must be an integer"),
        (
            ('name = "beam-prm"\nn = 4\nwidth = 2', 'name = "adaptive-allocation"'),
            "per-question budgets do not apply",
        ),
    ],
)
def test_bad_budgets_fail_naming_the_key(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = GRID.replace(*change)
    if "adaptive-allocation" in text:
        text = "budget_tokens = 1000\n" + text
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_a_completion_tokens_budget_charges_generated_tokens_only() -> None:
    prompt = "word " * 500  # 500 prompt tokens: a total-token budget of 50 would allow nothing
    model = FunctionModel(lambda request, i: "one two three four five six seven eight nine ten")
    params = SamplingParams(max_tokens=10)
    strategy = SelfConsistency(model, 16, params=params, budget=Budget(completion_tokens=50))
    result = anyio.run(strategy.run, prompt)
    assert result.stopped_by == "budget"
    assert result.usage.completion_tokens <= 50 and result.usage.prompt_tokens >= 500
    assert len(result.candidates) >= 1
    assert result.budget_stop is not None and result.budget_stop.limit == "completion_tokens"


def test_the_report_places_budget_cells_at_their_tokens_and_shows_no_pass_at_k_for_beams(
    tmp_path: Path,
) -> None:
    from ttc.cli.report import markdown_comparison, markdown_report
    from ttc.eval.compare import ALL, load_comparison
    from ttc.eval.report import load_reports

    experiment = load_experiment(_write(tmp_path, GRID))
    model = FunctionModel(_right, native_n=True)
    anyio.run(lambda: run_experiment(experiment, models={"scripted": model}))
    series = {(s.name, s.level): s for s in load_comparison(str(experiment.out))}
    # The two budgets of self-consistency are one series, at the tokens each really spent.
    voting = series[("self-consistency", ALL)]
    assert [p.budget_tokens for p in voting.points] == [20, 60]
    assert voting.points[0].tokens <= 20 < voting.points[1].tokens <= 60
    assert [p.budget_tokens for p in series[("beam-prm (arithmetic)", ALL)].points] == [40]
    table = markdown_comparison(list(series.values()))
    assert "| self-consistency | all | 8 | 20 |" in table
    assert "| self-consistency | all | 8 | 60 |" in table
    reports = {r.config["strategy"]: r for r in load_reports(str(experiment.out))}
    beams = reports["beam-prm"]
    assert not beams.samples_are_draws and reports["self-consistency"].samples_are_draws
    assert "budget=40" in beams.label
    text = markdown_report([beams])
    overview = next(line for line in text.splitlines() if line.startswith(f"| {beams.run}"))
    # accuracy shown; pass@1, pass@n and majority@n are not, for a search's beams.
    assert overview.split(" | ")[3] == f"{100 * beams.accuracy:.1f}"
    assert overview.split(" | ")[4:7] == ["-", "-", "-"]
    assert "not independent samples" in text and "pass@k %" not in text


def test_a_completion_tokens_limit_holds_under_concurrency() -> None:
    """Many runs at once under one generated-token budget: reservations keep the spend at or
    under the limit however the requests interleave, and prompts are never charged."""
    from ttc.runtime.context import run_scope

    model = FunctionModel(lambda request, i: " ".join(["w"] * (3 + i % 7)), native_n=False)
    params = SamplingParams(max_tokens=12)
    limit = 200

    async def main() -> tuple[int, int]:
        with run_scope(Budget(completion_tokens=limit)) as scope:
            strategy = SelfConsistency(model, 8, params=params)
            async with anyio.create_task_group() as group:
                for q in range(12):
                    group.start_soon(strategy.run, f"question {q} " + "context " * 40)
            usage = scope.usage.snapshot()
            assert scope.ledger is not None
            return usage.completion_tokens, scope.ledger.spent_completion_tokens

    generated, spent = anyio.run(main)
    assert generated == spent and limit - 12 < spent <= limit


def test_ttc_eval_config_runs_the_budget_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from ttc.cli import app

    def resolve(name: str, **kwargs: object) -> FunctionModel:
        return FunctionModel(_right, model="fake", native_n=True)

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)
    path = _write(tmp_path, GRID)
    result = CliRunner().invoke(app, ["eval", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["cells"]
    assert [c["run"].rsplit("-", 2)[1] for c in cells] == ["b20", "b60", "b40"]
    # Questions of 4 a cell, each within its budget of generated tokens.
    assert [c["generated_tokens"] <= 4 * b for c, b in zip(cells, (20, 60, 40))] == [True] * 3
    assert all(c["tokens"] > c["generated_tokens"] for c in cells)  # prompts, uncharged


def test_a_policy_fitted_on_a_budget_cell_runs_its_strategy_under_that_budget(
    tmp_path: Path,
) -> None:
    from test_policy_fit import EASY, HARD, record

    from ttc.eval.policy_fit import fit_policy
    from ttc.strategies import BeamPRM
    from ttc.strategies.registry import BuildContext, policy_factory

    where = {"dataset": "d", "format": "graded", "model": "m"}
    with ResultsStore(tmp_path) as store:
        store.open_run("sc8", {**where, "strategy": "self-consistency", "n": 8})
        beam = {**StrategySpec.of("beam-prm", n=16).config(), **where, "budget": 200}
        store.open_run("beam16-b200", beam)
        for i, q in enumerate(EASY):
            store.put("sc8", record(q, i, ["5"] * 8, "5", True))
            store.put("beam16-b200", record(q, i, ["5"] * 16, "5", True))
        for i, q in enumerate(HARD, start=len(EASY)):
            store.put("sc8", record(q, i, ["1", "2", "3", "4"] * 2, "9", False))
            store.put("beam16-b200", record(q, i, ["9"] * 16, "9", True))
    fit = fit_policy(tmp_path, budget=120, probe_n=4)
    hard = fit.policy.bin_for(0.25)
    assert hard.action == "beam-prm"
    # The cell's budget goes with the action; the dataset's format is no strategy parameter.
    assert hard.params["budget"] == 200 and "format" not in hard.params
    built = policy_factory(BuildContext())(hard.action, hard.params, FunctionModel(_right))
    assert isinstance(built, BeamPRM)
    assert built.budget == Budget(completion_tokens=200)
    with pytest.raises(ConfigError, match="budget: expected a positive integer"):
        policy_factory(BuildContext())("beam-prm", {"n": 4, "budget": 0}, FunctionModel(_right))
