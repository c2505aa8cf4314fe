"""``ttc collect``, ``ttc export-labels`` and ``ttc train-prm`` through typer's CliRunner, on a
FunctionModel standing in for the model a name resolves to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ttc.adapters import FunctionModel
from ttc.adapters.function import prompt_text
from ttc.cli.labels import register
from ttc.eval.datasets import load_dataset
from ttc.labels.export import read_export
from ttc.runtime.model import Model
from ttc.types import GenerateRequest

runner = CliRunner()


def labels_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """The label commands alone."""

    register(app)
    return app


def run(*args: str | Path) -> Any:
    return runner.invoke(labels_app(), [str(a) for a in args])


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Solutions of two lines; the first line is right on even samples. A rollout after a
    right first line reaches the reference, after a wrong one it does not."""
    refs = {e.question: e.reference for e in load_dataset("gsm8k-sample")}

    def resolve(name: str, **kwargs: Any) -> Model:
        def reply(request: GenerateRequest, i: int) -> str:
            text = prompt_text(request)
            question = next(q for q in refs if q in text)
            answer = refs[question]
            tail = text[text.index(question) + len(question) :]
            if "Step one" not in tail:
                line = "Step one is right." if i % 2 == 0 else "Step one is wrong."
                last = answer if i % 2 == 0 else "9999"
                return f"\n{line}\n\nThe answer is {last}."
            return f"The answer is {answer if 'right' in tail else '9999'}."

        return FunctionModel(reply, model="fake", **kwargs)

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)


def test_collect_reports_statistics_resumes_and_exports(tmp_path: Path, fake_model: None) -> None:
    out = tmp_path / "labels"
    args: list[str | Path] = [
        "collect",
        "gsm8k-sample",
        "--limit",
        "3",
        "-n",
        "2",
        "-k",
        "2",
        "--out",
        out,
    ]
    first = run(*args, "--json", "--export", tmp_path / "trl.jsonl")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert (data["stored"], data["new"]) == (3, 3)
    stats = data["stats"]
    assert stats["solutions"] == 6 and stats["steps_per_solution"] == 2.0
    assert stats["fraction_positive"] == 0.5  # right solutions good twice, wrong ones bad twice
    assert stats["first_error_positions"] == {"1": 3}
    assert data["exported_rows"] == 6
    rows = read_export(tmp_path / "trl.jsonl", "trl")
    assert {r.labels for r in rows} == {(True, True), (False, False)}

    again = run(*args, "--json")
    assert json.loads(again.stdout)["skipped"] == 3

    table = run(*args)
    assert table.exit_code == 0 and "steps per solution" in table.stdout

    exported = run("export-labels", out, tmp_path / "ms.jsonl", "--format", "math-shepherd")
    assert exported.exit_code == 0, exported.output
    shepherd = read_export(tmp_path / "ms.jsonl", "math-shepherd")
    assert [r.labels for r in shepherd] == [r.labels for r in rows]


def test_collect_with_binary_search(tmp_path: Path, fake_model: None) -> None:
    result = run(
        "collect", "gsm8k-sample", "--limit", "2", "-n", "2", "-k", "3",
        "--method", "binary", "--out", tmp_path / "o", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["stats"]
    assert stats["first_error_positions"] == {"1": 2}
    assert stats["rollouts"] == 2 * 3  # one probe a wrong solution of two steps


def test_bad_options_exit_2(tmp_path: Path, fake_model: None) -> None:
    assert run("collect", tmp_path / "missing.jsonl").exit_code == 2
    missing = run("export-labels", tmp_path / "nothing", tmp_path / "x.jsonl")
    assert missing.exit_code == 2
    head = run("train-prm", tmp_path / "x.jsonl", "--output", tmp_path / "p")
    assert head.exit_code == 2 and "no such file" in head.output


@pytest.mark.hf
def test_train_prm_fits_a_head_on_a_collected_run(
    tmp_path: Path, fake_model: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import tiny_models

    from ttc.scoring.prm_trained import HiddenStatePRM

    out = tmp_path / "labels"
    collected = run("collect", "gsm8k-sample", "--limit", "3", "-n", "2", "-k", "2", "--out", out)
    assert collected.exit_code == 0, collected.output
    corpus = [e.question for e in load_dataset("gsm8k-sample")] + ["Step one is right or wrong."]
    policy = tiny_models.build_tiny_llama(
        tmp_path_factory.mktemp("policy"), corpus * 5, ["<unk>", "<s>", "</s>", "<pad>"],
        chat_template=None,
    )  # fmt: skip
    trained = run(
        "train-prm", out, "--method", "head", "--embedder", policy, "--output", tmp_path / "prm"
    )
    assert trained.exit_code == 0, trained.output
    assert "training AUC" in trained.stdout
    prm = HiddenStatePRM.load(tmp_path / "prm")
    assert prm.embedder.spec()["model_dir"] == str(policy)


def test_collect_on_gsm8k_with_the_embedded_template_labels_a_step_a_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded Gemma's paragraph template makes every GSM8K solution one step; collect
    prompts with its step-wise twin instead and cuts solutions at line ends."""
    from ttc.adapters.gemma import GSM8K_FEW_SHOT, GSM8K_STEP_FEW_SHOT
    from ttc.labels.collect import LabelStore

    prompts: list[str] = []
    ref = load_dataset("gsm8k-sample").examples[0].reference

    def resolve(name: str, **kwargs: Any) -> Model:
        def reply(request: GenerateRequest, i: int) -> str:
            text = prompt_text(request)
            prompts.append(text)
            if text.endswith("Answer:"):  # a whole solution: two calculations, then the answer
                return f" 2 + 3 = 5.\n5 * 2 = 10.\nThe answer is {ref}."
            return f"The answer is {'9999' if text.endswith('10.' + chr(10)) else ref}."

        model = FunctionModel(reply, model="fake", **kwargs)
        model.template = GSM8K_FEW_SHOT  # type: ignore[attr-defined]  # as LlamaCpp() has
        return model

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)
    out = tmp_path / "labels"
    result = run("collect", "gsm8k-sample", "--limit", "1", "-n", "1", "-k", "2", "-o", out)
    assert result.exit_code == 0, result.output
    head = GSM8K_STEP_FEW_SHOT.split("{question}")[0]
    assert prompts and all(p.startswith(head) for p in prompts)
    with LabelStore(out) as store:
        (run_info,) = store.runs()
        (question,) = store.labels(run_info.name)
    assert run_info.config["format"] == "gsm8k-steps" and run_info.config["delimiter"] == "\n"
    (solution,) = question.solutions
    assert [s.text for s in solution.steps] == [
        " 2 + 3 = 5.\n",
        "5 * 2 = 10.\n",
        f"The answer is {ref}.",
    ]
    # every step but the last rolled out from its prefix; rollouts after the second go wrong
    assert [(s.rollouts, s.hard) for s in solution.steps] == [(2, True), (2, False), (0, True)]
