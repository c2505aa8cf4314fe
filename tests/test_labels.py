"""Step labels from rollouts: Math-Shepherd's hard and soft estimates equal hand-computed ones,
OmegaPRM's binary search finds the first wrong step with the rollouts it should, and a killed
collection resumes without redoing stored questions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anyio
import pytest

from ttc.adapters.function import FunctionModel, prompt_text
from ttc.errors import ConfigError
from ttc.eval.datasets import load_dataset
from ttc.labels import (
    LabelStore,
    StepLabeller,
    collect_labels,
    label_stats,
    split_steps,
    subsample_agreement,
)
from ttc.runtime.budget import Budget
from ttc.scoring import GSM8KAnswer
from ttc.scoring.extract import extract_answer
from ttc.strategies.steps import StepFormat
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio

LINES = StepFormat(delimiter="\n")
QUESTION = "Q: 2 + 3 + 4?\nA:"

SOLUTIONS = [" 2 + 3 = 5\n5 + 4 = 9\nThe answer is 9.", " 2 + 3 = 5\n5 + 4 = 7\nThe answer is 7."]
ROLLOUTS = {
    # from the first step: two of four completions reach 9
    " 2 + 3 = 5\n": [
        "5 + 4 = 9\nThe answer is 9.",
        "5 + 4 = 8\nThe answer is 8.",
        "5 + 4 = 7\nThe answer is 7.",
        "5 + 4 = 9\nThe answer is 9.",
    ],
    " 2 + 3 = 5\n5 + 4 = 9\n": ["The answer is 9."] * 4,
    " 2 + 3 = 5\n5 + 4 = 7\n": ["The answer is 7."] * 4,
}


def scripted(question: str = QUESTION) -> FunctionModel:
    """Solutions in order for the bare question; for a prefix, its rollouts in turn."""
    seen: Counter[str] = Counter()

    def reply(request: GenerateRequest, index: int) -> str:
        prefix = prompt_text(request)[len(question) :]
        if not prefix:
            text = SOLUTIONS[seen[""] % len(SOLUTIONS)]
        else:
            options = ROLLOUTS[prefix]
            text = options[seen[prefix] % len(options)]
        seen[prefix] += 1
        return text

    return FunctionModel(reply)


def test_split_steps_keeps_the_text_and_the_delimiters() -> None:
    assert split_steps("a\nb\nc", "\n") == ["a\n", "b\n", "c"]
    assert split_steps("a\n\nb\n", "\n") == ["a\n\n", "b\n"]
    assert split_steps("\na\nb", "\n") == ["\na\n", "b"]
    for text in ("a\n\nb\n", "\n\nx", "one", "a\nb\nc\n\n"):
        assert "".join(split_steps(text, "\n")) == text


async def test_monte_carlo_labels_equal_hand_computed_ones() -> None:
    model = scripted()
    labeller = StepLabeller(model, solutions=2, rollouts=4, method="mc", step_format=LINES)
    solutions = await labeller.label(QUESTION, GSM8KAnswer("9"), extract_answer)

    right, wrong = solutions
    assert [right.correct, wrong.correct] == [True, False]
    assert [s.text for s in right.steps] == [" 2 + 3 = 5\n", "5 + 4 = 9\n", "The answer is 9."]
    # hard: any rollout reaches 9; soft: the fraction that does; the last step: the verdict
    assert [(s.hard, s.soft) for s in right.steps] == [(True, 0.5), (True, 1.0), (True, 1.0)]
    assert [(s.hard, s.soft) for s in wrong.steps] == [(True, 0.5), (False, 0.0), (False, 0.0)]
    assert [s.rollouts for s in right.steps] == [4, 4, 0]
    assert right.steps[0].verdicts == [True, False, False, True]  # in rollout order
    assert wrong.first_error == 1 and right.first_error is None
    # two solutions, then four rollouts from each of three distinct prefixes: the first step,
    # which both solutions share, is rolled out once and its labels serve both
    assert model.samples == 2 + 4 * 3
    assert not right.steps[0].shared and wrong.steps[0].shared
    assert right.rollouts + wrong.rollouts == 12


async def test_label_statistics_count_steps_positives_and_first_errors() -> None:
    from ttc.labels import LabelledQuestion

    labeller = StepLabeller(scripted(), solutions=2, rollouts=4, step_format=LINES)
    sols = await labeller.label(QUESTION, GSM8KAnswer("9"), extract_answer)
    stats = label_stats(
        [LabelledQuestion(id="q", question="q", prompt=QUESTION, reference="9", solutions=sols)]
    )
    assert stats.steps_per_solution == 3.0
    assert stats.fraction_positive == pytest.approx(4 / 6)
    assert stats.first_errors == {2: 1} and stats.no_error == 1
    assert stats.rollouts == 12
    # hard labels from the first two rollouts of each step against all four
    assert subsample_agreement(
        [LabelledQuestion(id="q", question="q", prompt=QUESTION, reference="9", solutions=sols)], 2
    ) == (3, 3)


def first_error_model(question: str, steps: int, first_wrong: int) -> FunctionModel:
    """A wrong solution of ``steps`` lines; a rollout reaches the answer iff its prefix stops
    before line ``first_wrong`` (0-based)."""
    solution = "".join(f"step {i}\n" for i in range(steps - 1)) + "The answer is 1."

    def reply(request: GenerateRequest, index: int) -> str:
        prefix = prompt_text(request)[len(question) :]
        if not prefix:
            return solution
        kept = prefix.count("\n")
        return "The answer is 42." if kept <= first_wrong else "The answer is 1."

    return FunctionModel(reply)


@pytest.mark.parametrize(
    ("steps", "first_wrong", "probes"),
    [(8, 5, 3), (8, 0, 3), (8, 7, 3), (5, 2, 2), (2, 0, 1), (1, 0, 0), (4, 3, 2)],
)
async def test_binary_search_finds_the_first_wrong_step_with_log_rollouts(
    steps: int, first_wrong: int, probes: int
) -> None:
    model = first_error_model("Q", steps, first_wrong)
    labeller = StepLabeller(model, solutions=1, rollouts=3, method="binary", step_format=LINES)
    (solution,) = await labeller.label("Q", GSM8KAnswer("42"), extract_answer)
    assert not solution.correct
    assert len(solution.steps) == steps
    assert solution.first_error == first_wrong
    assert all(s.hard for s in solution.steps[:first_wrong])
    assert solution.rollouts == 3 * probes
    assert model.samples == 1 + 3 * probes  # the solution, then k rollouts a probe
    # steps after the first error that no probe measured carry no label
    for i, step in enumerate(solution.steps[first_wrong + 1 : -1], first_wrong + 1):
        assert step.hard is None or step.rollouts, i


async def test_binary_search_spends_nothing_on_a_correct_solution() -> None:
    model = first_error_model("Q", 4, 99)
    labeller = StepLabeller(model, solutions=1, rollouts=3, method="binary", step_format=LINES)
    (solution,) = await labeller.label("Q", GSM8KAnswer("1"), extract_answer)
    assert solution.correct
    assert [s.hard for s in solution.steps] == [True] * 4
    assert model.samples == 1


def test_bad_settings_name_the_field() -> None:
    model = scripted()
    with pytest.raises(ConfigError, match="method"):
        StepLabeller(model, method="beam")
    with pytest.raises(ConfigError, match="rollouts"):
        StepLabeller(model, rollouts=0)
    with pytest.raises(ConfigError, match="solutions"):
        StepLabeller(model, solutions=0)


# ------------------------------------------------------------------ collection and resume

QUESTIONS = [("What is 2 + 3?", "5"), ("What is 4 + 4?", "8"), ("What is 1 + 6?", "7")]


def write_dataset(path: Path) -> Path:
    lines = [json.dumps({"question": q, "answer": f"#### {a}"}) for q, a in QUESTIONS]
    path.write_text("\n".join(lines) + "\n")
    return path


def arithmetic_model(
    asked: list[str],
    block_on: str | None = None,
    started: anyio.Event | None = None,
    release: anyio.Event | None = None,
) -> FunctionModel:
    """Answers each question right in two lines; rollouts finish it. Notes every question it
    is asked; ``block_on`` waits for ``release`` (a run killed mid-question)."""

    async def reply(request: GenerateRequest, index: int) -> str:
        text = prompt_text(request)
        question = next(q for q, _ in QUESTIONS if text.startswith(q))
        asked.append(question)
        if question == block_on and started is not None and release is not None:
            started.set()
            await release.wait()
        answer = dict(QUESTIONS)[question]
        if text == question:
            return f"\nWe add.\nThe answer is {answer}."
        return f"The answer is {answer}."

    return FunctionModel(reply)


async def test_collection_stores_labels_and_a_killed_run_resumes(tmp_path: Path) -> None:
    data = load_dataset(write_dataset(tmp_path / "qs.jsonl"))
    out = tmp_path / "labels"
    asked: list[str] = []
    started, release = anyio.Event(), anyio.Event()
    model = arithmetic_model(asked, block_on=QUESTIONS[1][0], started=started, release=release)
    labeller = StepLabeller(model, solutions=2, rollouts=2, step_format=LINES)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: collect_labels(data, labeller, out, run="run", concurrency=1))
        with anyio.fail_after(20):
            await started.wait()  # the first question is stored before the second starts
        tg.cancel_scope.cancel()  # killed while the second question is in flight

    with LabelStore(out) as store:
        assert store.count("run") == 1
        (first,) = store.labels("run")
    assert first.id == "1" and len(first.solutions) == 2

    asked.clear()
    again = StepLabeller(arithmetic_model(asked), solutions=2, rollouts=2, step_format=LINES)
    summary = await collect_labels(data, again, out, run="run", concurrency=2)
    assert summary.skipped == 1 and summary.new == 2 and summary.stored == 3
    assert QUESTIONS[0][0] not in asked  # the stored question was not asked again
    with LabelStore(out) as store:
        labelled = store.labels("run")
        records = store.records("run")
    assert [q.id for q in labelled] == ["1", "2", "3"]
    assert all(r.result.candidates[0].verified for r in records)  # ttc report reads them
    for q in labelled:
        for sol in q.solutions:
            assert [s.hard for s in sol.steps] == [True, True]
            assert sol.steps[0].soft == 1.0
        assert q.usage.completion_tokens > 0


async def test_a_resumed_collection_must_have_the_same_settings(tmp_path: Path) -> None:
    data = load_dataset(write_dataset(tmp_path / "qs.jsonl"))
    labeller = StepLabeller(arithmetic_model([]), solutions=1, rollouts=2, step_format=LINES)
    await collect_labels(data, labeller, tmp_path / "o", run="r")
    other = StepLabeller(arithmetic_model([]), solutions=1, rollouts=3, step_format=LINES)
    with pytest.raises(ConfigError, match="rollouts"):
        await collect_labels(data, other, tmp_path / "o", run="r")


async def test_the_budget_stops_the_collection_and_keeps_finished_questions(
    tmp_path: Path,
) -> None:
    data = load_dataset(write_dataset(tmp_path / "qs.jsonl"))
    labeller = StepLabeller(arithmetic_model([]), solutions=2, rollouts=2, step_format=LINES)
    summary = await collect_labels(
        data, labeller, tmp_path / "o", run="r", concurrency=1, budget=Budget(requests=5)
    )
    assert summary.stopped_by == "budget"
    assert 0 < summary.stored < 3
    with LabelStore(tmp_path / "o") as store:
        assert len(store.labels("r")) == summary.stored
        progress = store.progress("r")
        assert progress is not None and progress.stopped_by == "budget"
