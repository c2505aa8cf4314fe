"""``ttc eval`` and ``ttc report`` through typer's CliRunner, on a FunctionModel standing in
for the model a name resolves to: JSON summaries, resume, tables, Markdown, plots, and one clear
error for a bad strategy, a bad dataset line or a bad option, with nothing stored lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ttc.adapters import FunctionModel
from ttc.cli import register
from ttc.cli.eval import EXIT_BUDGET, EvalStrategy
from ttc.eval.datasets import load_dataset
from ttc.eval.solver import STRATEGIES
from ttc.runtime.model import Model
from ttc.types import GenerateRequest

runner = CliRunner()


def eval_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """The eval commands alone."""

    register(app)
    return app


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every model name resolves to a FunctionModel that is right on every other sample."""
    refs = {e.question: e.reference for e in load_dataset("gsm8k-sample")}
    names: list[str] = []

    def resolve(name: str, **kwargs: Any) -> Model:
        names.append(name)

        def reply(request: GenerateRequest, i: int) -> str:
            assert isinstance(request.prompt, str)
            answer = refs.get(request.prompt, "0") if i % 2 == 0 else "9999"
            return f"Thinking. The answer is {answer}."

        return FunctionModel(reply, model="fake", **kwargs)

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)
    return names


def run(*args: str | Path) -> Any:
    return runner.invoke(eval_app(), [str(a) for a in args])


def flat(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_eval_then_resume_then_report(tmp_path: Path, fake_model: list[str]) -> None:
    out = tmp_path / "results"
    args = ["eval", "gsm8k-sample", "--limit", "6", "-n", "4", "--out", out, "--json"]
    first = run(*args, "--model", "groq/some-model", "--seed", "3")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["run"] == "gsm8k-sample-repeated-sample-n4-function-fake"
    assert (data["stored"], data["new"], data["skipped"]) == (6, 6, 0)
    assert data["accuracy"] == 1.0 and data["stopped_by"] is None
    assert fake_model == ["groq/some-model"]
    again = run(*args, "--model", "groq/some-model", "--seed", "3")
    assert json.loads(again.stdout)["skipped"] == 6 and json.loads(again.stdout)["new"] == 0
    changed = run(*args, "--model", "groq/some-model", "--seed", "4")
    assert changed.exit_code == 2 and "made with seed=3, this one has seed=4" in flat(
        changed.output
    )
    vote = run(
        "eval", "gsm8k-sample", "--limit", "6", "-n", "4", "-s", "self-consistency", "-o", out
    )
    assert vote.exit_code == 0, vote.output
    assert "6/6 questions stored" in vote.stdout and f"ttc report {out}" in vote.stdout

    report = run("report", out)
    assert report.exit_code == 0, report.output
    assert "gsm8k-sample-repeated-sample-n4-function-fake" in report.stdout
    assert "gsm8k-sample-self-consistency-n4-function-fake" in report.stdout
    assert "pass@k %" in report.stdout and "majority@k %" in report.stdout
    for stem in ("coverage", "accuracy_vs_tokens"):
        assert (out / f"{stem}.png").stat().st_size > 5000
        assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    assert not (out / "accuracy_vs_usd.png").exists()  # nothing cost money

    markdown = run("report", out, "--markdown", "--no-plots", "--run", data["run"])
    assert markdown.exit_code == 0, markdown.output
    text = markdown.stdout
    assert text.startswith("## Results") and "| k | pass@k % |" in text
    assert "self-consistency" not in text.split("### ")[0]  # only the run asked for
    assert (out / "report.md").read_text() == text


def test_budget_stop_is_reported(tmp_path: Path, fake_model: list[str]) -> None:
    result = run(
        "eval", "gsm8k-sample", "-n", "2", "-o", tmp_path, "--budget-requests", "3", "-c", "1"
    )
    # A documented exit status, so a script can tell "stopped early" from "done".
    assert result.exit_code == EXIT_BUDGET == 3, result.output
    assert "3/20 questions stored" in result.stdout
    assert "stopped by the run's budget" in flat(result.output)
    assert "exit status 3" in flat(result.output)


def test_unknown_strategy_lists_the_valid_names(tmp_path: Path) -> None:
    result = run("eval", "gsm8k-sample", "--strategy", "beam", "-o", tmp_path)
    assert result.exit_code == 2
    for name in STRATEGIES:
        assert name in result.output
    assert {s.value for s in EvalStrategy} == set(STRATEGIES)


def test_strategy_names_match_ttc_run() -> None:
    from ttc.cli import StrategyName

    assert {s.value for s in StrategyName} == set(STRATEGIES)


def test_a_bad_dataset_line_is_one_clear_error_and_stored_results_stay(
    tmp_path: Path, fake_model: list[str]
) -> None:
    out = tmp_path / "out"
    good = run("eval", "gsm8k-sample", "--limit", "3", "-n", "2", "-o", out, "--name", "r")
    assert good.exit_code == 0, good.output
    db = (out / "results.sqlite").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "#### 1"}\n{"question": "b"}\n')
    result = run("eval", bad, "-n", "2", "-o", out, "--name", "r")
    assert result.exit_code == 2
    assert f"{bad}:2: missing field 'answer'" in result.output.replace("\n", "")
    assert "the line has: question" in flat(result.output)
    assert (out / "results.sqlite").read_bytes() == db
    field = run("eval", "gsm8k-sample", "-o", out, "--field", "question")
    assert field.exit_code == 2 and "--field takes ROLE=NAME" in flat(field.output)


def test_report_of_a_missing_folder(tmp_path: Path) -> None:
    result = run("report", tmp_path / "nothing")
    assert result.exit_code == 2 and "no results at" in flat(result.output)
