"""Exports of step labels: Math-Shepherd's text format, TRL's stepwise supervision (JSONL and a
datasets Dataset) and PRM800K-style JSON round-trip with the same labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttc.errors import ConfigError
from ttc.labels import LabelledQuestion, LabelledSolution, StepLabel
from ttc.labels.export import (
    LabelledSteps,
    export_labels,
    labelled_steps,
    read_export,
    read_trl,
    to_math_shepherd,
    to_trl_dataset,
)


def questions() -> list[LabelledQuestion]:
    right = LabelledSolution(
        text=" 2 + 3 = 5\n5 + 4 = 9\nThe answer is 9.",
        answer="9",
        correct=True,
        steps=[
            StepLabel(text=" 2 + 3 = 5\n", hard=True, soft=0.5, rollouts=4, hits=2),
            StepLabel(text="5 + 4 = 9\n", hard=True, soft=1.0, rollouts=4, hits=4),
            StepLabel(text="The answer is 9.", hard=True, soft=1.0),
        ],
    )
    # binary search: the step after the first error was not probed
    wrong = LabelledSolution(
        text=" 2 + 3 = 6\n6 + 4 = 10\nThe answer is 10.",
        answer="10",
        correct=False,
        steps=[
            StepLabel(text=" 2 + 3 = 6\n", hard=False, soft=0.0, rollouts=4),
            StepLabel(text="6 + 4 = 10\n", hard=None),
            StepLabel(text="The answer is 10.", hard=False, soft=0.0),
        ],
    )
    return [
        LabelledQuestion(
            id="1",
            question="What is 2 + 3 + 4?",
            prompt="Q: What is 2 + 3 + 4?\nA:",
            reference="9",
            solutions=[right, wrong],
        )
    ]


EXPECTED = [
    LabelledSteps(
        "What is 2 + 3 + 4?",
        ("2 + 3 = 5", "5 + 4 = 9", "The answer is 9."),
        (True, True, True),
    ),
    LabelledSteps("What is 2 + 3 + 4?", ("2 + 3 = 6",), (False,)),
]


def test_solutions_are_cut_at_their_first_unlabelled_step() -> None:
    assert list(labelled_steps(questions())) == EXPECTED


def test_a_soft_threshold_relabels_steps_that_have_a_soft_estimate() -> None:
    (first, _) = labelled_steps(questions(), soft_threshold=0.75)
    assert first.labels == (False, True, True)


def test_math_shepherd_rows_look_like_the_published_data() -> None:
    (row, _) = to_math_shepherd(EXPECTED)
    assert row["input"] == (
        "What is 2 + 3 + 4? Step 1: 2 + 3 = 5 ки\nStep 2: 5 + 4 = 9 ки\nStep 3: The answer is 9. ки"
    )
    assert row["label"] == (
        "What is 2 + 3 + 4? Step 1: 2 + 3 = 5 +\nStep 2: 5 + 4 = 9 +\nStep 3: The answer is 9. +"
    )
    assert row["task"] == "GSM8K"


@pytest.mark.parametrize("fmt", ["math-shepherd", "trl", "prm800k"])
def test_exports_round_trip_with_the_same_labels(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"labels.{fmt}.jsonl"
    assert export_labels(questions(), path, fmt) == 2
    assert read_export(path, fmt) == EXPECTED


def test_the_ttc_export_keeps_every_field(tmp_path: Path) -> None:
    export_labels(questions(), tmp_path / "all.jsonl", "ttc")
    assert read_export(tmp_path / "all.jsonl", "ttc") == questions()


def test_prm800k_rows_rate_steps_and_say_how_the_solution_ended(tmp_path: Path) -> None:
    export_labels(questions(), tmp_path / "p.jsonl", "prm800k")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows[0]["question"] == {"problem": "What is 2 + 3 + 4?", "ground_truth_answer": "9"}
    assert [s["completions"][0]["rating"] for s in rows[0]["label"]["steps"]] == [1, 1, 1]
    assert rows[0]["label"]["finish_reason"] == "solution"
    assert rows[1]["label"]["finish_reason"] == "found_error"


def test_the_trl_dataset_has_the_stepwise_supervision_columns() -> None:
    pytest.importorskip("datasets")
    dataset = to_trl_dataset(EXPECTED)
    assert dataset.column_names == ["prompt", "completions", "labels"]
    assert read_trl(dataset) == EXPECTED


def test_bad_formats_and_rows_are_named() -> None:
    with pytest.raises(ConfigError, match="format"):
        export_labels(questions(), "x.jsonl", "csv")
    with pytest.raises(ConfigError, match="soft_threshold"):
        export_labels(questions(), "x.jsonl", "trl", soft_threshold=2.0)
    with pytest.raises(ConfigError, match="row 0"):
        read_trl([{"prompt": "q", "completions": ["a"], "labels": [True, False]}])


def test_rows_can_carry_the_prompt_the_model_was_sent(tmp_path: Path) -> None:
    (first, _) = labelled_steps(questions(), prompt_field="prompt")
    assert first.question == "Q: What is 2 + 3 + 4?\nA:"
    export_labels(questions(), tmp_path / "t.jsonl", "trl", prompt_field="prompt")
    assert read_export(tmp_path / "t.jsonl", "trl")[0].question == "Q: What is 2 + 3 + 4?\nA:"
    with pytest.raises(ConfigError, match="prompt_field"):
        list(labelled_steps(questions(), prompt_field="title"))  # type: ignore[arg-type]
