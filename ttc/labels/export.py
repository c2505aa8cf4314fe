"""Step labels written in the formats PRM trainers read, and read back.

* ``math-shepherd``: the published Math-Shepherd data (``peiyi9979/Math-Shepherd``): one JSON
  line a solution, ``input`` = the question, a space, then the steps (``Step i: ...``, one a
  line) each ending in the step tag ``" ки"``; ``label`` = the same text with each tag's
  ``ки`` replaced by ``+`` (good) or ``-`` (bad); ``task`` names the source (``GSM8K``).
* ``trl``: TRL's stepwise supervision (what ``PRMTrainer`` reads): ``prompt`` (the question),
  ``completions`` (the steps, delimiters stripped) and ``labels`` (one bool a step); as JSONL
  or as a ``datasets.Dataset`` (``to_trl_dataset``, needs the ``train`` extra).
* ``prm800k``: PRM800K's layout: ``question`` (``problem``, ``ground_truth_answer``) and
  ``label`` (``steps``, each with one completion rated 1 or -1 and ``chosen_completion`` 0;
  ``finish_reason`` ``"solution"`` or ``"found_error"``).
* ``ttc``: the labelled questions as stored, every field kept (soft labels, rollout counts).

A solution is exported up to its first unlabelled step (binary search leaves the steps after
the first error unlabelled). Hard labels by default; ``soft_threshold`` labels a step good when
its soft estimate reaches the threshold instead (where it has one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from ttc.errors import ConfigError
from ttc.labels.estimate import LabelledQuestion, LabelledSolution

__all__ = [
    "STEP_TAG",
    "ExportFormat",
    "LabelledSteps",
    "PromptField",
    "export_labels",
    "labelled_steps",
    "read_export",
    "read_math_shepherd",
    "read_prm800k",
    "read_trl",
    "to_math_shepherd",
    "to_prm800k",
    "to_trl",
    "to_trl_dataset",
]

ExportFormat = Literal["math-shepherd", "trl", "prm800k", "ttc"]
_FORMATS: tuple[str, ...] = get_args(ExportFormat)

#: Math-Shepherd's step tag: every step ends with it in ``input``; ``label`` has ``+``/``-``.
STEP_TAG = "ки"
_STEP_NUMBER = re.compile(r"^[Ss]tep \d+:\s*")


@dataclass(frozen=True)
class LabelledSteps:
    """One solution as training data: the question, its steps (delimiters stripped) and a
    label a step."""

    question: str
    steps: tuple[str, ...]
    labels: tuple[bool, ...]


def check_format(name: str) -> ExportFormat:
    """``name`` if it names an export format; else a ``ConfigError`` listing them."""
    if name not in _FORMATS:
        raise ConfigError(f"format must be one of {', '.join(_FORMATS)}; got {name!r}")
    return name  # type: ignore[return-value]


def _solution_steps(
    solution: LabelledSolution, soft_threshold: float | None
) -> tuple[list[str], list[bool]]:
    steps: list[str] = []
    labels: list[bool] = []
    for step in solution.steps:
        if step.hard is None:
            break
        text = step.text.strip()
        if not text:
            continue
        good = step.hard
        if soft_threshold is not None and step.soft is not None:
            good = step.soft >= soft_threshold
        steps.append(text)
        labels.append(good)
    return steps, labels


PromptField = Literal["question", "prompt"]
"""What a row's question is: the dataset's ``question``, or the ``prompt`` the model was sent
(the question in the dataset's template): a PRM is best trained on the text it will be given,
and step-wise search gives it the prompt it searches from."""


def labelled_steps(
    questions: Iterable[LabelledQuestion],
    *,
    soft_threshold: float | None = None,
    prompt_field: PromptField = "question",
) -> Iterator[LabelledSteps]:
    """Every solution with at least one labelled step, cut at its first unlabelled step."""
    if prompt_field not in ("question", "prompt"):
        raise ConfigError(f"prompt_field must be question or prompt, got {prompt_field!r}")
    for q in questions:
        text = q.question if prompt_field == "question" else q.prompt
        for solution in q.solutions:
            steps, labels = _solution_steps(solution, soft_threshold)
            if steps:
                yield LabelledSteps(text.strip(), tuple(steps), tuple(labels))


# ------------------------------------------------------------------ Math-Shepherd


def _clean(step: str) -> str:
    """A step as one line of Math-Shepherd's text: no tag inside it, no line breaks."""
    return " ".join(step.replace(STEP_TAG, "").split())


def to_math_shepherd(
    data: Iterable[LabelledSteps], *, task: str = "GSM8K", numbered: bool = True
) -> list[dict[str, str]]:
    """Math-Shepherd's rows (``input``, ``label``, ``task``); ``numbered`` writes ``Step i:``
    before each step, as the published data does."""
    rows = []
    for item in data:
        lines = [
            (f"Step {i}: " if numbered else "") + _clean(step)
            for i, step in enumerate(item.steps, 1)
        ]
        question = " ".join(item.question.replace(STEP_TAG, "").split())
        tagged = [f"{line} {STEP_TAG}" for line in lines]
        marked = [f"{line} {'+' if good else '-'}" for line, good in zip(lines, item.labels)]
        rows.append(
            {
                "input": f"{question} " + "\n".join(tagged),
                "label": f"{question} " + "\n".join(marked),
                "task": task,
            }
        )
    return rows


def read_math_shepherd(rows: Iterable[dict[str, Any]]) -> list[LabelledSteps]:
    """Math-Shepherd's rows read back: the question is what comes before ``Step 1:`` (in an
    unnumbered row, up to its last question mark, as TRL's conversion script reads it)."""
    out = []
    for n, row in enumerate(rows):
        text, label = str(row["input"]), str(row["label"])
        pieces = text.split(STEP_TAG)
        if len(pieces) < 2:
            raise ConfigError(f"row {n}: input has no step tag {STEP_TAG!r}")
        labels: list[bool] = []
        offset = 0
        for piece in pieces[:-1]:
            offset += len(piece)
            mark = label[offset : offset + 1]
            if mark not in ("+", "-"):
                raise ConfigError(f"row {n}: label has {mark!r} where a step tag is, not + or -")
            labels.append(mark == "+")
            offset += 1
        body = pieces[:-1]
        first = body[0]
        found = re.search(r"[Ss]tep 1:", first)
        if found is not None:
            question, body[0] = first[: found.start()], first[found.start() :]
        elif "?" in first:  # unnumbered: the question ends at its last question mark
            cut = first.rindex("?") + 1
            question, body[0] = first[:cut], first[cut:]
        else:
            raise ConfigError(f"row {n}: cannot tell the question from the first step")
        steps = tuple(_STEP_NUMBER.sub("", piece.strip()).strip() for piece in body)
        out.append(LabelledSteps(question.strip(), steps, tuple(labels)))
    return out


# ------------------------------------------------------------------ TRL stepwise supervision


def to_trl(data: Iterable[LabelledSteps]) -> list[dict[str, Any]]:
    """TRL's stepwise-supervision rows (``prompt``, ``completions``, ``labels``)."""
    return [
        {"prompt": d.question, "completions": list(d.steps), "labels": list(d.labels)} for d in data
    ]


def to_trl_dataset(data: Iterable[LabelledSteps]) -> Any:
    """The TRL rows as a ``datasets.Dataset`` (the ``train`` extra installs ``datasets``)."""
    try:
        from datasets import Dataset, Features, Sequence, Value
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "to_trl_dataset needs the datasets package: pip install 'ttc-sdk[train]'"
        ) from exc
    features = Features(
        {
            "prompt": Value("string"),
            "completions": Sequence(Value("string")),
            "labels": Sequence(Value("bool")),
        }
    )
    return Dataset.from_list(to_trl(data), features=features)


def read_trl(rows: Iterable[dict[str, Any]]) -> list[LabelledSteps]:
    """TRL rows (dicts, or a ``datasets.Dataset``) read back."""
    out = []
    for n, row in enumerate(rows):
        steps, labels = list(row["completions"]), list(row["labels"])
        if len(steps) != len(labels):
            raise ConfigError(f"row {n}: {len(steps)} completions but {len(labels)} labels")
        out.append(
            LabelledSteps(
                str(row["prompt"]), tuple(map(str, steps)), tuple(bool(v) for v in labels)
            )
        )
    return out


# ------------------------------------------------------------------ PRM800K


def to_prm800k(questions: Iterable[LabelledQuestion]) -> list[dict[str, Any]]:
    """PRM800K-style rows, one a solution: each step one completion rated 1 or -1."""
    rows = []
    for q in questions:
        for solution in q.solutions:
            steps, labels = _solution_steps(solution, None)
            if not steps:
                continue
            rows.append(
                {
                    "question": {
                        "problem": q.question.strip(),
                        "ground_truth_answer": q.reference,
                    },
                    "label": {
                        "steps": [
                            {
                                "completions": [
                                    {"text": step, "rating": 1 if good else -1, "flagged": False}
                                ],
                                "human_completion": None,
                                "chosen_completion": 0,
                            }
                            for step, good in zip(steps, labels)
                        ],
                        "total_time": None,
                        "finish_reason": "solution" if all(labels) else "found_error",
                    },
                    "is_quality_control_question": False,
                    "is_initial_screening_question": False,
                    "generation": None,
                }
            )
    return rows


def read_prm800k(rows: Iterable[dict[str, Any]]) -> list[LabelledSteps]:
    """PRM800K rows read back: each step's chosen completion; rating 1 is good (0 and -1
    are not)."""
    out = []
    for row in rows:
        steps, labels = [], []
        for step in row["label"]["steps"]:
            chosen = step.get("chosen_completion")
            completion = step["completions"][chosen if isinstance(chosen, int) else 0]
            steps.append(str(completion["text"]))
            labels.append(completion.get("rating") == 1)
        out.append(LabelledSteps(str(row["question"]["problem"]), tuple(steps), tuple(labels)))
    return out


# ------------------------------------------------------------------ files


def export_labels(
    questions: Sequence[LabelledQuestion],
    path: str | Path,
    fmt: ExportFormat | str,
    *,
    soft_threshold: float | None = None,
    task: str = "GSM8K",
    prompt_field: PromptField = "question",
) -> int:
    """Write ``questions`` to ``path`` as JSONL in format ``fmt``; returns the rows written."""
    fmt = check_format(fmt)
    if soft_threshold is not None and not 0.0 <= soft_threshold <= 1.0:
        raise ConfigError(f"soft_threshold must be between 0 and 1, got {soft_threshold}")
    rows: list[dict[str, Any]]
    if fmt == "ttc":
        rows = [q.model_dump(mode="json") for q in questions]
    elif fmt == "prm800k":
        rows = to_prm800k(questions)
    else:
        data = labelled_steps(questions, soft_threshold=soft_threshold, prompt_field=prompt_field)
        rows = to_trl(data) if fmt == "trl" else to_math_shepherd(data, task=task)
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def read_export(path: str | Path, fmt: ExportFormat | str) -> list[Any]:
    """An exported file read back: ``LabelledSteps`` rows, or ``LabelledQuestion``s for
    ``ttc``."""
    fmt = check_format(fmt)
    with Path(path).expanduser().open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    if fmt == "ttc":
        return [LabelledQuestion.model_validate(r) for r in rows]
    if fmt == "trl":
        return read_trl(rows)
    if fmt == "prm800k":
        return read_prm800k(rows)
    return read_math_shepherd(rows)
