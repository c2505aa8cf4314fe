"""Step labels from rollouts: Math-Shepherd's estimates and OmegaPRM's binary search.

A solution is sampled whole and cut into steps at the step format's delimiter (as step-wise
search writes them: every step but the last ends with the delimiter, so the steps joined are
the solution's text). A step is labelled by rolling out ``k`` completions from the prefix that
ends with it and checking each against the gold answer with the question's verifier:

* **hard** estimation (Math-Shepherd): the step is good if *any* completion reaches the gold
  answer;
* **soft** estimation: the *fraction* of completions that do.

The last step needs no rollout: the solution itself is its only completion, so its labels are
the solution's verdict. ``method="mc"`` rolls out from every other step (all of a question's
rollouts at once, so an in-process engine batches them); ``method="binary"`` is OmegaPRM's
binary search for the first wrong step of each wrong solution: about ``log2(steps)`` prefixes
are probed instead of every one. A correct solution is then good at every step (it is itself
a completion that reaches the answer; no rollout needed), the steps before the first wrong one
are good, the first wrong one is bad, and the steps after it that were not probed are not
labelled (``None``); OmegaPRM keeps them out of training, and so do the exports.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, get_args

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ttc.errors import ConfigError
from ttc.runtime.model import Model
from ttc.scoring.base import Verifier
from ttc.strategies.steps import StepFormat, StepGenerator
from ttc.types import Candidate, SamplingParams, Usage

__all__ = [
    "LabelMethod",
    "LabelledQuestion",
    "LabelledSolution",
    "StepLabel",
    "StepLabeller",
    "check_method",
    "split_steps",
]

LabelMethod = Literal["mc", "binary"]
"""``mc``: Math-Shepherd's Monte Carlo labels (hard and soft) for every step; ``binary``:
OmegaPRM's binary search for the first wrong step of each wrong solution (hard labels)."""

_METHODS: tuple[str, ...] = get_args(LabelMethod)

Extract = Callable[[str], "str | None"]


def check_method(method: str) -> LabelMethod:
    """``method`` if it names a labelling method; else a ``ConfigError`` listing them."""
    if method not in _METHODS:
        raise ConfigError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
    return method  # type: ignore[return-value]


class StepLabel(BaseModel):
    """One step and its labels.

    ``hard``: some rollout from this step reached the gold answer; ``soft``: the fraction that
    did (``None`` where not measured); ``rollouts`` completions were drawn from this step and
    ``hits`` of them were correct. ``inferred``: the label was not measured here but follows
    from other steps (binary search: a step before a good probe is good).
    """

    model_config = ConfigDict(extra="forbid")

    text: str
    hard: bool | None = None
    soft: float | None = None
    rollouts: int = 0
    hits: int = 0
    inferred: bool = False
    shared: bool = Field(
        False,
        description="The rollouts were drawn once for an identical prefix of another solution "
        "of the question (and counted there).",
    )
    verdicts: list[bool] = Field(
        default_factory=list,
        description="Each rollout's verdict, in order: labels from fewer rollouts can be "
        "recomputed (agreement of 8 against 32).",
    )


class LabelledSolution(BaseModel):
    """A sampled solution cut into labelled steps, its answer and whether it is correct."""

    model_config = ConfigDict(extra="forbid")

    text: str
    answer: str | None = None
    correct: bool
    steps: list[StepLabel]

    @property
    def first_error(self) -> int | None:
        """The 0-based index of the first step labelled bad (hard), ``None`` if none is."""
        for i, step in enumerate(self.steps):
            if step.hard is False:
                return i
        return None

    @property
    def rollouts(self) -> int:
        """Completions drawn to label this solution (an identical prefix of another solution
        is rolled out once, and counted there)."""
        return sum(s.rollouts for s in self.steps if not s.shared)


class LabelledQuestion(BaseModel):
    """One question's labelled solutions, as the store keeps them.

    ``question`` is the dataset's question, ``prompt`` what the model was sent (the question in
    the dataset's template, e.g. a few-shot prompt); ``usage`` what sampling and rollouts cost.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    position: int = 0
    question: str
    prompt: str
    reference: str
    level: str | None = None
    fingerprint: str = ""
    method: LabelMethod = "mc"
    rollouts_per_step: int = Field(0, ge=0)
    solutions: list[LabelledSolution] = Field(default_factory=list)
    usage: Usage = Usage()


def split_steps(text: str, delimiter: str) -> list[str]:
    """``text`` cut into steps at ``delimiter``, kept at the end of every step but the last;
    blank pieces join the step before them, so the steps joined give ``text`` back."""
    if not delimiter:
        raise ConfigError("delimiter must not be empty")
    parts = text.split(delimiter)
    pieces = [p + delimiter for p in parts[:-1]] + [parts[-1]]
    steps: list[str] = []
    for piece in pieces:
        if steps and not steps[-1].replace(delimiter, "").strip():
            steps[-1] += piece  # a blank start (a leading delimiter) joins the next step
        elif steps and not piece.strip():
            steps[-1] += piece
        else:
            steps.append(piece)
    return [s for s in steps if s] or ([text] if text else [])


class StepLabeller:
    """Samples solutions of a question and labels their steps from rollouts.

    Args:
        model: any ttc ``Model`` that can continue a partial solution (see ``StepGenerator``).
        solutions: solutions sampled per question.
        rollouts: completions rolled out from each labelled step (Math-Shepherd's N).
        method: ``"mc"`` or ``"binary"`` (see the module docs).
        step_format: the step delimiter, template and end markers, as step-wise search uses.
        params: sampling parameters of solutions and rollouts.
    """

    def __init__(
        self,
        model: Model,
        *,
        solutions: int = 4,
        rollouts: int = 8,
        method: LabelMethod | str = "mc",
        step_format: StepFormat | None = None,
        params: SamplingParams | None = None,
    ) -> None:
        if isinstance(solutions, bool) or not isinstance(solutions, int) or solutions < 1:
            raise ConfigError(f"solutions must be a positive integer, got {solutions!r}")
        if isinstance(rollouts, bool) or not isinstance(rollouts, int) or rollouts < 1:
            raise ConfigError(f"rollouts must be a positive integer, got {rollouts!r}")
        self.method: LabelMethod = check_method(method)
        self.generator = StepGenerator(model, step_format)
        self.format = self.generator.format
        self.solutions = solutions
        self.rollouts = rollouts
        self.params = params or SamplingParams()

    async def label(
        self, prompt: str, verifier: Verifier, extract: Extract
    ) -> list[LabelledSolution]:
        """Sample solutions of ``prompt`` and label every step; ``verifier`` judges answers
        (``extract`` reads them out of a text)."""
        sampled = await self.generator.next_steps(
            prompt, [], self.solutions, self.params, to_end=True
        )
        texts = [s.text for s in sampled]
        verdicts = await self._judge(prompt, texts, verifier, extract)
        solutions = [
            LabelledSolution(
                text=text,
                answer=extract(text),
                correct=ok,
                steps=[StepLabel(text=s) for s in split_steps(text, self.format.delimiter)],
            )
            for text, ok in zip(texts, verdicts)
        ]
        solutions = [s for s in solutions if s.steps]
        for solution in solutions:  # the last step: the solution is its own completion
            last = solution.steps[-1]
            last.hard, last.soft = solution.correct, float(solution.correct)
        rollouts = _Rollouts(self, prompt, verifier, extract)
        if self.method == "mc":
            await self._monte_carlo(solutions, rollouts)
        else:
            await _run_all([functools.partial(self._binary_search, s, rollouts) for s in solutions])
        return solutions

    async def _monte_carlo(
        self, solutions: Sequence[LabelledSolution], rollouts: _Rollouts
    ) -> None:
        """Roll out from every step but the last of every solution, all at once."""
        jobs = []
        for solution in solutions:
            texts = [s.text for s in solution.steps]
            for i in range(len(texts) - 1):
                jobs.append(functools.partial(rollouts.label, texts[: i + 1], solution.steps[i]))
        await _run_all(jobs)

    async def _binary_search(self, solution: LabelledSolution, rollouts: _Rollouts) -> None:
        """OmegaPRM: the first step from which no rollout reaches the gold answer."""
        steps = solution.steps
        if solution.correct:
            for step in steps[:-1]:
                step.hard, step.inferred = True, True
            return
        texts = [s.text for s in steps]
        lo, hi = 0, len(steps) - 1  # 0-based; the last step is known bad
        while lo < hi:
            mid = (lo + hi) // 2
            await rollouts.label(texts[: mid + 1], steps[mid])
            if steps[mid].hard:
                lo = mid + 1
            else:
                hi = mid
        for i, step in enumerate(steps):
            if i < lo and step.rollouts == 0:
                step.hard, step.inferred = True, True
            elif i == lo:
                step.hard = False
                if step.rollouts == 0 and i < len(steps) - 1:
                    step.inferred = True
            elif i > lo and step.rollouts == 0 and i < len(steps) - 1:
                step.hard, step.soft = None, None  # not measured: left out, as in OmegaPRM

    async def rollout(
        self, prompt: str, prefix: Sequence[str], verifier: Verifier, extract: Extract
    ) -> list[bool]:
        """The verdicts of ``rollouts`` completions from ``prefix``, drawn in one call."""
        done = await self.generator.next_steps(
            prompt, prefix, self.rollouts, self.params, to_end=True
        )
        head = "".join(prefix)
        return await self._judge(prompt, [head + d.text for d in done], verifier, extract)

    @staticmethod
    async def _judge(
        prompt: str, texts: Sequence[str], verifier: Verifier, extract: Extract
    ) -> list[bool]:
        if not texts:
            return []
        candidates = [Candidate(text=t, answer=extract(t)) for t in texts]
        return [bool(v) for v in await verifier.verify(prompt, candidates)]


class _Rollouts:
    """One question's rollouts: each distinct prefix is rolled out once (solutions often
    share their first steps), and every step that ends it takes those verdicts."""

    def __init__(
        self, labeller: StepLabeller, prompt: str, verifier: Verifier, extract: Extract
    ) -> None:
        self.labeller = labeller
        self.prompt = prompt
        self.verifier = verifier
        self.extract = extract
        self.done: dict[tuple[str, ...], list[bool]] = {}
        self.pending: dict[tuple[str, ...], anyio.Event] = {}

    async def label(self, prefix: Sequence[str], step: StepLabel) -> None:
        """Label ``step`` (the last of ``prefix``) from the prefix's rollouts."""
        key = tuple(prefix)
        while key in self.pending:
            await self.pending[key].wait()
        if key in self.done:
            _apply(step, self.done[key], shared=True)
            return
        event = self.pending[key] = anyio.Event()
        try:
            verdicts = await self.labeller.rollout(self.prompt, prefix, self.verifier, self.extract)
            self.done[key] = verdicts
        finally:
            del self.pending[key]
            event.set()
        _apply(step, verdicts, shared=False)


def _apply(step: StepLabel, verdicts: Sequence[bool], *, shared: bool) -> None:
    """A step's hard and soft labels from its rollouts' verdicts."""
    step.rollouts = len(verdicts)
    step.verdicts = list(verdicts)
    step.hits = sum(verdicts)
    step.hard = step.hits > 0
    step.soft = step.hits / step.rollouts if step.rollouts else None
    step.inferred = False
    step.shared = shared


async def _run_all(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run ``jobs`` concurrently; on the first error cancel the rest and raise it as is (not
    in an ``ExceptionGroup``), so a caller can catch ``BudgetExceeded``."""
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def guarded(job: Callable[[], Awaitable[None]]) -> None:
            nonlocal error
            try:
                await job()
            except Exception as exc:
                error = error or exc
                tg.cancel_scope.cancel()

        for job in jobs:
            tg.start_soon(guarded, job)
    if error is not None:
        raise error
