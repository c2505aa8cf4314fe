"""What the step-wise searches share: beams, a round's generation and scoring, the search tree,
and the final choice.

``BeamPRM``, ``Lookahead`` and ``DVTS`` differ only in which beams they expand and keep; the
bookkeeping lives here so the three strategy modules read like the papers' descriptions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ttc.errors import BudgetExceeded, ConfigError, GenerationError, ProviderError
from ttc.runtime import tracing
from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.runtime.model import Model
from ttc.scoring.base import Selector
from ttc.scoring.prm import Aggregation, ProcessRewardModel, aggregate, check_aggregation
from ttc.scoring.selectors import WeightedMajority
from ttc.strategies.base import Extractor, OnBudget, Strategy
from ttc.strategies.steps import Step, StepEnd, StepFormat, StepGenerator
from ttc.types import Candidate, Message, Result, SamplingParams, StopReason
from ttc.validation import check_int

__all__ = ["DEFAULT_STEP_PARAMS", "Beam", "StepSearch"]

#: search-and-learn's sampling defaults for a step: temperature 0.8, top_p 1.0.
DEFAULT_STEP_PARAMS = SamplingParams(temperature=0.8, top_p=1.0, max_tokens=512)


@dataclass
class Beam:
    """A partial (or finished) solution: its steps, each step's PRM score, and the value the
    search ranks it by (the aggregated score, or for lookahead the score after its rollout)."""

    id: int
    steps: list[str]
    parent: int | None = None
    end: StepEnd | None = None
    scores: list[float] = field(default_factory=list)
    value: float = 0.0
    completion_tokens: int = 0
    rollout: list[str] = field(default_factory=list)
    #: Whether the PRM scored it (not when the budget stopped the search first).
    scored: bool = False

    @property
    def done(self) -> bool:
        """Whether the beam is complete (its last step did not stop at the delimiter)."""
        return self.end is not None and self.end != "delimiter"

    @property
    def text(self) -> str:
        """The solution so far: its steps joined as they were generated."""
        return "".join(self.steps)

    def child(self, beam_id: int, step: Step) -> Beam:
        """This beam continued by ``step``. An empty step ends the beam without adding a
        step, so it is not scored as if it were one."""
        return Beam(
            id=beam_id,
            steps=[*self.steps] if step.end == "empty" else [*self.steps, step.text],
            parent=self.id,
            end=step.end,
            completion_tokens=self.completion_tokens + (step.completion_tokens or 0),
        )


class SearchStopped(Exception):
    """A round could not be completed: the budget ran out or the provider failed for good.

    ``groups`` holds what the round did generate (and was paid for), grouped by parent as
    ``StepSearch.expand`` returns it; a parent whose requests failed has an empty group.
    """

    def __init__(
        self,
        reason: StopReason,
        cause: BaseException,
        groups: list[list[Beam]] | None = None,
    ) -> None:
        super().__init__(str(cause))
        self.reason: StopReason = reason
        self.cause = cause
        self.groups: list[list[Beam]] = groups or []


class StepSearch(Strategy):
    """The base of step-wise searches guided by a process reward model.

    Args:
        model: a completion-style ``Model`` that continues raw text (see ``StepGenerator``).
        prm: the ``ProcessRewardModel`` that scores steps.
        n: N, the number of beams (and of final candidates).
        width: M, the beam width: continuations per kept beam; N must be a multiple of M.
        max_rounds: at most this many steps per beam; the last round generates to the end.
        aggregation: how a beam's step scores become its score (``last``, ``min``, ``prod``,
            ``mean``).
        params: sampling parameters of a step (default temperature 0.8, top_p 1.0, 512 tokens).
        step_format: the delimiter, completion template, answer pattern and end markers.
        final_selector: picks the answer among the final beams (default weighted best-of-N;
            ``Argmax()`` for plain best-of-N).
        extract: how to read the answer out of a beam's text.
    """

    def __init__(
        self,
        model: Model,
        prm: ProcessRewardModel,
        *,
        n: int,
        width: int,
        max_rounds: int,
        aggregation: Aggregation | str,
        params: SamplingParams | None,
        step_format: StepFormat | None,
        final_selector: Selector | None,
        extract: Extractor,
        budget: Budget | None,
        on_budget: OnBudget,
        trace: bool,
    ) -> None:
        super().__init__(budget=budget, on_budget=on_budget, trace=trace)
        for name, value in (("n", n), ("width", width), ("max_rounds", max_rounds)):
            check_int(name, value, ge=1)
        if n % width:
            raise ConfigError(
                f"n must be a multiple of width: n={n} beams cannot be split into groups of "
                f"width={width} (n // width beams are kept and each is expanded width ways); "
                f"try n={max(width, n - n % width)}"
            )
        if not isinstance(prm, ProcessRewardModel):
            raise ConfigError(
                f"prm must be a ProcessRewardModel (e.g. ttc.scoring.ArithmeticPRM()), "
                f"got {type(prm).__name__}"
            )
        self.model = model
        self.prm = prm
        self.n = n
        self.width = width
        self.max_rounds = max_rounds
        self.aggregation: Aggregation = check_aggregation(aggregation)
        self.params = params or DEFAULT_STEP_PARAMS
        self.generator = StepGenerator(model, step_format)
        self.final_selector = final_selector or WeightedMajority()
        self.extract = extract

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.model!r}, {self.prm!r}, n={self.n}, width={self.width})"

    # ------------------------------------------------------------------ shared steps

    @staticmethod
    def question(prompt: str | tuple[Message, ...]) -> str:
        """The question as text: step-wise search continues raw text."""
        if not isinstance(prompt, str):
            raise ConfigError(
                "prompt: step-wise search takes the question as text (the chat step protocol "
                "builds the chat messages itself)"
            )
        return prompt

    async def expand(
        self,
        ctx: RunContext,
        question: str,
        plan: Sequence[tuple[Beam, int]],
        ids: Iterator[int],
        *,
        to_end: bool,
        params: SamplingParams | None = None,
    ) -> list[list[Beam]]:
        """Continue each ``(beam, k)`` of ``plan`` with ``k`` sampled steps. All generations
        of the round go out together; the children come back grouped by parent.

        When some requests fail (budget, provider), the steps that did come back, paid-for
        samples of a partly refused request included, travel on the ``SearchStopped``."""
        got: list[list[Step]] = [[] for _ in plan]
        failures: list[BaseException] = []
        use = params or self.params

        async def one(i: int, beam: Beam, k: int) -> None:
            try:
                got[i] = await self.generator.next_steps(
                    question, beam.steps, k, use, to_end=to_end
                )
            except BudgetExceeded as exc:
                got[i] = self.generator.read(exc.completions, beam.steps, to_end=to_end)
                failures.append(exc)
            except (GenerationError, ProviderError) as exc:
                failures.append(exc)

        if len(plan) == 1:
            await one(0, *plan[0])
        else:
            async with anyio.create_task_group() as tg:
                for i, (beam, k) in enumerate(plan):
                    tg.start_soon(one, i, beam, k)
        groups = [
            [beam.child(next(ids), step) for step in steps] for (beam, _), steps in zip(plan, got)
        ]
        if failures:
            raise self._stopped(ctx, failures, groups)
        return groups

    async def score_what_was_paid(
        self, ctx: RunContext, question: str, beams: Sequence[Beam]
    ) -> bool:
        """After a stop, score the beams the interrupted round did produce, if the PRM can
        still be paid; whether it could."""
        try:
            await self.score(ctx, question, beams)
        except SearchStopped:
            return False
        return True

    async def score(self, ctx: RunContext, question: str, beams: Sequence[Beam]) -> None:
        """Score every step of ``beams`` in one PRM call; set each beam's scores and value."""
        if not beams:
            return
        try:
            rows = await self.prm.score_steps(question, [b.steps for b in beams])
        except (BudgetExceeded, GenerationError, ProviderError) as exc:
            # The beams whose every step was scored (and paid for) before it failed keep it.
            self._set_scores(beams, getattr(exc, "partial_rows", None) or [])
            raise self._stopped(ctx, [exc]) from exc
        self._set_scores(beams, rows)

    def _set_scores(self, beams: Sequence[Beam], rows: Sequence[list[float] | None]) -> None:
        for beam, row in zip(beams, rows):
            if row is None:
                continue
            beam.scores = row
            beam.value = aggregate(row, self.aggregation)
            beam.scored = True

    @staticmethod
    def _stopped(
        ctx: RunContext,
        failures: Sequence[BaseException],
        groups: list[list[Beam]] | None = None,
    ) -> SearchStopped:
        budget = next((f for f in failures if isinstance(f, BudgetExceeded)), None)
        if budget is not None:
            ctx.budget_error = ctx.budget_error or budget
            return SearchStopped("budget", budget, groups)
        return SearchStopped("error", failures[-1], groups)

    @staticmethod
    def top(beams: Sequence[Beam], k: int) -> list[Beam]:
        """The ``k`` beams of highest value; the earlier one wins a tie."""
        order = sorted(range(len(beams)), key=lambda i: (-beams[i].value, i))
        return [beams[i] for i in sorted(order[:k])]

    def candidate(self, beam: Beam) -> Candidate:
        """A final beam as a candidate: text, steps, extracted answer, score."""
        text = beam.text
        return Candidate(
            text=text,
            steps=list(beam.steps),
            answer=self.extract(text),
            score=beam.value if beam.scored else None,
            scores={self.prm.name: beam.value} if beam.scored else {},
            finish_reason="length" if beam.end == "length" else "stop",
            completion_tokens=beam.completion_tokens,
            model=self.model.model,
        )

    def result(
        self,
        beams: Sequence[Beam],
        tree: list[dict[str, Any]],
        stopped: SearchStopped | None,
    ) -> Result:
        """The result over the final beams; a provider failure with nothing to show raises."""
        if stopped is not None and stopped.reason == "error" and not beams:
            raise stopped.cause
        candidates = [self.candidate(b) for b in beams]
        selection = self.final_selector.select(candidates)
        return Result(
            answer=selection.answer,
            best=selection.best,
            candidates=candidates,
            votes=selection.votes,
            tied=selection.tied,
            unreadable_verdicts=self.prm.pop_unreadable(),
            stopped_by=stopped.reason if stopped is not None else None,
            errors=[str(stopped.cause)] if stopped is not None else [],
            tree=tree,
        )


def round_record(
    number: int,
    beams: Sequence[Beam],
    status: dict[int, str],
    *,
    to_end: bool,
    **extra: Any,
) -> dict[str, Any]:
    """One round of the search tree, as JSON-ready data: each new beam's step, scores, value
    and what became of it (``kept``, ``pruned``, ``finished``, ``duplicate``...)."""
    record: dict[str, Any] = {
        "round": number,
        "to_end": to_end,
        **extra,
        "beams": [
            {
                "id": b.id,
                "parent": b.parent,
                "step": b.steps[-1] if b.steps and b.end != "empty" else "",
                "end": b.end,
                "step_score": b.scores[-1] if b.scores and b.end != "empty" else None,
                "value": b.value,
                **({"rollout": list(b.rollout)} if b.rollout else {}),
                "status": status.get(b.id, "pruned"),
            }
            for b in beams
        ],
    }
    if tracing.active is not None:  # ttc.instrument(): the round is an event
        tracing.active.round(record)
    return record
