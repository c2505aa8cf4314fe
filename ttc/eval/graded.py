"""A difficulty-graded suite of arithmetic word problems: level L takes L reasoning steps.

Small models fail GSM8K at the floor, so strategies cannot be told apart there. These problems
control difficulty: level 1 is one operation on small numbers ("Tom has 7 apples. Then Tom buys
5 more apples. How many apples does Tom have now?"), level 8 is a chain of eight. Each problem
has a worked solution, one line a step, whose calculations carry GSM8K's ``<<a+b=c>>``
annotations, so ``GSM8KAnswer`` grades answers and ``ArithmeticPRM`` checks the steps.

``generate(seed, per_level)`` is deterministic for a seed (its own ``random.Random``, no global
state). Two splits ship with the package: ``graded-dev`` (calibration and tuning) and
``graded-test`` (held out: nothing is tuned on it); both load by name in ``ttc eval``.
``GRADED_FEW_SHOT`` is the completion template made for the suite: worked examples of the same
format, one step a line, ending with "The answer is N.", that the embedded base model continues.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ttc.errors import ConfigError

__all__ = [
    "GRADED_FEW_SHOT",
    "GRADED_STEP_DELIMITER",
    "GRADED_STOPS",
    "LEVELS",
    "Problem",
    "Step",
    "generate",
    "generate_level",
    "solution_steps",
    "write_jsonl",
]

#: The levels: the number of operations (reasoning steps) a problem takes.
LEVELS: tuple[int, ...] = tuple(range(1, 9))

#: How a worked solution separates its steps (one line a step): the step delimiter that
#: step-wise search (``StepFormat(delimiter=...)``) should use on this suite.
GRADED_STEP_DELIMITER = "\n"

#: Stop strings of a whole-solution sample: a blank line ends an answer, "Question:" is the
#: model starting the next example on its own.
GRADED_STOPS: tuple[str, ...] = ("\n\n", "Question:")

_NAMES = ("Tom", "Ann", "Sam", "Mia", "Ben", "Lily", "Max", "Zoe", "Leo", "Ella", "Jack", "Nora")
_ITEMS = ("apples", "marbles", "stickers", "cookies", "pencils", "books", "cards", "shells")
_MAX_VALUE = 40  # every intermediate value stays at or below this
_MAX_OPERAND = 9


@dataclass(frozen=True)
class Step:
    """One operation: the sentence the question says, the sentence the solution writes, and
    the calculation (``left op right = value``)."""

    event: str
    left: int
    op: str
    right: int
    value: int

    @property
    def expression(self) -> str:
        return f"{self.left}{self.op}{self.right}"


@dataclass(frozen=True)
class Problem:
    """A generated problem: its question, its steps, and its answer."""

    id: str
    level: int
    question: str
    steps: tuple[Step, ...]
    answer: int
    subject: str
    item: str
    start: int

    def solution(self, *, annotate: bool = True) -> str:
        """The worked solution: the start restated, then one line a step (the question's
        sentence and its calculation); GSM8K annotations with ``annotate``."""
        lines = [f"{self.subject} has {self.start} {self.item}."]
        lines += [_solution_line(self, step, annotate) for step in self.steps]
        return "\n".join(lines)

    def gsm8k_answer(self) -> str:
        """The solution in GSM8K's format: annotated steps, then ``#### N``."""
        return f"{self.solution()}\n#### {self.answer}"

    def few_shot_answer(self) -> str:
        """The solution as the few-shot template writes it: plain equations, then the
        answer sentence."""
        return f"{self.solution(annotate=False)}\nThe answer is {self.answer}."

    def record(self) -> dict[str, str]:
        """The JSONL line: GSM8K fields plus ``id`` and ``level``."""
        return {
            "id": self.id,
            "level": str(self.level),
            "question": self.question,
            "answer": self.gsm8k_answer(),
        }


def _solution_line(problem: Problem, step: Step, annotate: bool) -> str:
    calc = f"{step.left} {step.op} {step.right} = "
    calc += f"<<{step.expression}={step.value}>>{step.value}" if annotate else str(step.value)
    return f"Then {step.event}, so {problem.subject} has {calc} {problem.item}."


def _step(rng: random.Random, subject: str, other: str, item: str, value: int) -> Step:
    """One random operation on ``value`` that keeps the count between 1 and ``_MAX_VALUE``."""
    choices = []
    if value + 2 <= _MAX_VALUE:
        choices.append("+")
    if value >= 4:
        choices.append("-")
    if value * 2 <= _MAX_VALUE:
        choices.append("*")
    op = rng.choice(choices)
    if op == "+":
        right = rng.randint(2, min(_MAX_OPERAND, _MAX_VALUE - value))
        event = f"{subject} buys {right} more {item}"
        return Step(event, value, "+", right, value + right)
    if op == "-":
        right = rng.randint(2, min(_MAX_OPERAND, value - 2))
        event = f"{subject} gives {right} {item} to {other}"
        return Step(event, value, "-", right, value - right)
    right = rng.choice([k for k in (2, 3) if value * k <= _MAX_VALUE])
    event = f"the number of {item} {subject} has {'doubles' if right == 2 else 'triples'}"
    return Step(event, value, "*", right, value * right)


def generate_level(rng: random.Random, level: int, index: int) -> Problem:
    """One problem of ``level`` operations from ``rng``."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS[0]}..{LEVELS[-1]}, got {level!r}")
    subject, other = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    start = rng.randint(2, _MAX_OPERAND)
    value = start
    steps: list[Step] = []
    for _ in range(level):
        step = _step(rng, subject, other, item, value)
        steps.append(step)
        value = step.value
    sentences = [f"{subject} has {start} {item}."]
    sentences += [f"Then {step.event}." for step in steps]
    sentences.append(f"How many {item} does {subject} have now?")
    return Problem(
        id=f"L{level}-{index:03d}",
        level=level,
        question=" ".join(sentences),
        steps=tuple(steps),
        answer=value,
        subject=subject,
        item=item,
        start=start,
    )


def generate(
    seed: int, per_level: int, levels: Sequence[int] = LEVELS, *, exclude: Sequence[str] = ()
) -> list[Problem]:
    """``per_level`` distinct problems of each level, in level order; the same for the same
    seed. ``exclude``: question texts never to produce (another split's, the few-shot's)."""
    if isinstance(per_level, bool) or not isinstance(per_level, int) or per_level < 1:
        raise ConfigError(f"per_level must be a positive integer, got {per_level!r}")
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[Problem] = []
    for level in levels:
        made = 0
        tries = 0
        while made < per_level:
            tries += 1
            if tries > 100 * per_level:
                raise ConfigError(f"cannot make {per_level} distinct problems of level {level}")
            problem = generate_level(rng, level, made + 1)
            if problem.question in seen:
                continue
            seen.add(problem.question)
            out.append(problem)
            made += 1
    return out


_CALC = re.compile(r"<<([0-9+\-*]+)=(-?\d+)>>")


def solution_steps(solution: str) -> Iterator[tuple[str, int]]:
    """``(expression, written result)`` of every annotated step of a GSM8K-style solution."""
    for match in _CALC.finditer(solution):
        yield match.group(1), int(match.group(2))


def write_jsonl(problems: Sequence[Problem], path: Path) -> None:
    """Write problems as JSONL (``id``, ``level``, ``question``, ``answer``)."""
    lines = [json.dumps(p.record(), ensure_ascii=False) for p in problems]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# The few-shot examples: problems of the suite's format from a seed neither split uses (the
# splits exclude their questions). Their levels were chosen on the dev split (calibration).
_FEW_SHOT_SEED = 20261203
FEW_SHOT_LEVELS: tuple[int, ...] = (1, 2, 1, 3)


def few_shot_examples(levels: Sequence[int] = FEW_SHOT_LEVELS) -> list[Problem]:
    """The worked examples of a few-shot template, one of each level given, in order."""
    return [
        generate_level(random.Random(_FEW_SHOT_SEED + i), level, 0)
        for i, level in enumerate(levels)
    ]


def few_shot_template(levels: Sequence[int] = FEW_SHOT_LEVELS) -> str:
    """A completion template: worked examples of ``levels``, then ``{question}``."""
    shots = "".join(
        f"Question: {p.question}\nAnswer: {p.few_shot_answer()}\n\n"
        for p in few_shot_examples(levels)
    )
    return shots + "Question: {question}\nAnswer:"


#: The completion template made for the suite: worked examples (levels ``FEW_SHOT_LEVELS``),
#: one step a line, then the question. Send with ``GRADED_STOPS``; step-wise search uses
#: ``GRADED_STEP_DELIMITER``.
GRADED_FEW_SHOT = few_shot_template()

_FEW_SHOT = few_shot_examples()

#: Question texts of the few-shot examples (never in a split).
FEW_SHOT_QUESTIONS: tuple[str, ...] = tuple(p.question for p in _FEW_SHOT)

#: The shipped splits: name -> (file, seed). The test split excludes the dev split's questions.
SPLITS: dict[str, tuple[str, int]] = {
    "graded-dev": ("graded_dev.jsonl", 1),
    "graded-test": ("graded_test.jsonl", 2),
}

#: Problems per level in each shipped split.
PER_LEVEL = 25


def build_splits(folder: Path) -> dict[str, Path]:
    """Write the shipped splits into ``folder`` (how ``ttc/eval/data/graded_*.jsonl`` were made:
    ``python -m ttc.eval.graded``)."""
    written: dict[str, Path] = {}
    exclude: list[str] = list(FEW_SHOT_QUESTIONS)
    for name, (file, seed) in SPLITS.items():
        problems = generate(seed, PER_LEVEL, exclude=exclude)
        exclude += [p.question for p in problems]
        path = folder / file
        write_jsonl(problems, path)
        written[name] = path
    return written


if __name__ == "__main__":  # pragma: no cover
    for split, file in build_splits(Path(__file__).resolve().parent / "data").items():
        print(f"{split}: {file}")
