"""What the step-wise searches share: their options, beams, the search tree, and a search
state that owns the budget-stop bookkeeping.

``BeamPRM``, ``Lookahead`` and ``DVTS`` differ only in which beams they expand and keep. A
``SearchState`` does the rest: it expands beams and scores them, keeping what was paid for when
the budget or the provider stops a round, sets finished beams aside, records every round in a
typed tree, and knows which beams to answer from. The three strategy modules read like the
papers' descriptions: expand, score, set finished aside, keep the top N/M.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from pydantic import BaseModel, Field, model_serializer

from ttc.errors import BudgetExceeded, ConfigError, GenerationError, ProviderError
from ttc.runtime import tracing
from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.runtime.model import Model
from ttc.scoring.base import Selector
from ttc.scoring.extract import extract_answer
from ttc.scoring.prm import Aggregation, ProcessRewardModel, aggregate, check_aggregation
from ttc.scoring.selectors import WeightedMajority
from ttc.strategies.base import Extractor, OnBudget, Strategy
from ttc.strategies.steps import Step, StepEnd, StepFormat, StepGenerator, StepPath
from ttc.types import Candidate, Message, Result, SamplingParams, StopReason
from ttc.validation import check_int

__all__ = [
    "DEFAULT_STEP_PARAMS",
    "Beam",
    "BeamStatus",
    "SearchOptions",
    "SearchRound",
    "SearchState",
    "SearchStopped",
    "StepSearch",
]

#: search-and-learn's sampling defaults for a step: temperature 0.8, top_p 1.0.
DEFAULT_STEP_PARAMS = SamplingParams(temperature=0.8, top_p=1.0, max_tokens=512)

BeamStatus = Literal["kept", "pruned", "finished", "duplicate", "chosen", "alternative"]
"""What became of a beam in its round: kept (expanded next round), pruned, finished (set
aside), a duplicate of an earlier beam of the round; for DVTS, the step its subtree chose or one
of the alternatives it did not."""


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """The settings of a step-wise search, checked once.

    Args:
        n: N, the number of beams (and of final candidates).
        beam_width: M, the beam width: continuations per kept beam; N must be a multiple of M.
        max_rounds: at most this many steps per beam; the last round generates to the end.
        aggregation: how a beam's step scores become its score (``last``, ``min``, ``prod``,
            ``mean``).
        remove_duplicates: drop a new beam whose text equals an earlier one of the same round
            (beam search and lookahead).
        params: sampling parameters of a step (default temperature 0.8, top_p 1.0, 512 tokens).
        step_format: the delimiter, completion template, answer pattern and end markers.
        selector: picks the answer among the final beams (default weighted best-of-N;
            ``Argmax()`` for plain best-of-N).
        extract: how to read the answer out of a beam's text.
        width_name: the name the beam width was given under (``beam_width`` or its alias
            ``width``), so an error names what the caller wrote.
    """

    n: int = 16
    beam_width: int = 4
    max_rounds: int = 40
    aggregation: Aggregation = "last"
    remove_duplicates: bool = True
    params: SamplingParams = DEFAULT_STEP_PARAMS
    step_format: StepFormat = field(default_factory=StepFormat)
    selector: Selector = field(default_factory=WeightedMajority)
    extract: Extractor = extract_answer
    width_name: str = field(default="beam_width", repr=False, compare=False)

    def __post_init__(self) -> None:
        width = self.width_name
        for name, value in (
            ("n", self.n),
            (width, self.beam_width),
            ("max_rounds", self.max_rounds),
        ):
            check_int(name, value, ge=1)
        if self.n % self.beam_width:
            fits = max(self.beam_width, self.n - self.n % self.beam_width)
            raise ConfigError(
                f"n must be a multiple of {width}: n={self.n} beams cannot be split into groups "
                f"of {width}={self.beam_width} (n // {width} beams are kept and each is "
                f"expanded {width} ways); try n={fits}"
            )
        object.__setattr__(self, "aggregation", check_aggregation(self.aggregation))

    @property
    def keep(self) -> int:
        """N/M: the beams kept each round, or DVTS's subtrees."""
        return self.n // self.beam_width

    @classmethod
    def of(
        cls,
        n: int = 16,
        beam_width: int | None = None,
        *,
        width: int | None = None,
        max_rounds: int = 40,
        aggregation: Aggregation | str = "last",
        remove_duplicates: bool = True,
        params: SamplingParams | None = None,
        step_format: StepFormat | None = None,
        selector: Selector | None = None,
        extract: Extractor = extract_answer,
    ) -> SearchOptions:
        """The options from a strategy's keyword arguments: ``None`` takes the default, and
        ``width`` is an alias of ``beam_width`` (both, differing, is a ``ConfigError``)."""
        width_name = "beam_width"
        if width is not None:
            if beam_width is not None and beam_width != width:
                raise ConfigError(
                    f"beam_width={beam_width} and width={width}: width is an alias of "
                    "beam_width; give one of them"
                )
            beam_width, width_name = width, "width"
        return cls(
            n=n,
            beam_width=4 if beam_width is None else beam_width,
            width_name=width_name,
            max_rounds=max_rounds,
            aggregation=check_aggregation(aggregation),
            remove_duplicates=remove_duplicates,
            params=params or DEFAULT_STEP_PARAMS,
            step_format=step_format or StepFormat(),
            selector=selector or WeightedMajority(),
            extract=extract,
        )


class Beam(BaseModel):
    """A partial (or finished) solution: its steps, each step's PRM score, and the value the
    search ranks it by (the aggregated score, or for lookahead the score after its rollout).

    ``status``, ``rollout`` and ``subtree`` are what the search tree shows of it."""

    id: int
    steps: list[str]
    parent: int | None = None
    end: StepEnd | None = None
    scores: list[float] = Field(default_factory=list)
    value: float = 0.0
    completion_tokens: int = 0
    #: Whether the PRM scored it (not when the budget stopped the search first).
    scored: bool = False
    rollout: list[str] = Field(default_factory=list)
    status: BeamStatus = "pruned"
    subtree: int | None = None

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

    def node(self) -> dict[str, Any]:
        """The beam as the tree shows it: its new step, that step's score, its value, rollout
        (lookahead), status and subtree (DVTS)."""
        own_step = bool(self.steps) and self.end != "empty"
        node: dict[str, Any] = {
            "id": self.id,
            "parent": self.parent,
            "step": self.steps[-1] if own_step else "",
            "end": self.end,
            "step_score": self.scores[-1] if self.scores and own_step else None,
            "value": self.value,
        }
        if self.rollout:
            node["rollout"] = list(self.rollout)
        node["status"] = self.status
        if self.subtree is not None:
            node["subtree"] = self.subtree
        return node


class SearchRound(BaseModel):
    """One round of the search tree: the beams it produced and what became of each.

    Serialized as ``Result.tree`` shows it (``round``, ``to_end``, ``path``, ``lookahead`` for
    Lookahead, ``stopped_by`` when a stop ended the round, then each beam's node)."""

    round: int
    to_end: bool
    path: StepPath
    lookahead: int | None = None
    stopped_by: StopReason | None = None
    beams: list[Beam] = Field(default_factory=list)

    @model_serializer(mode="plain")
    def _record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round, "to_end": self.to_end, "path": self.path}
        if self.lookahead is not None:
            out["lookahead"] = self.lookahead
        if self.stopped_by is not None:
            out["stopped_by"] = self.stopped_by
        out["beams"] = [b.node() for b in self.beams]
        return out


class SearchStopped(Exception):
    """A round could not be completed: the budget ran out or the provider failed for good.

    ``groups`` holds what the round did generate (and was paid for), grouped by parent as
    ``StepSearch.generate`` returns it; a parent whose requests failed has an empty group.
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
        source: a ``Model`` whose steps are generated (see ``StepGenerator``).
        prm: the ``ProcessRewardModel`` that scores steps.
        options: the search's ``SearchOptions``.
        budget, on_budget, trace: as every ``Strategy``.
    """

    def __init__(
        self,
        source: Model,
        prm: ProcessRewardModel,
        options: SearchOptions,
        *,
        budget: Budget | None,
        on_budget: OnBudget,
        trace: bool,
    ) -> None:
        super().__init__(budget=budget, on_budget=on_budget, trace=trace)
        if not isinstance(prm, ProcessRewardModel):
            raise ConfigError(
                f"prm must be a ProcessRewardModel (e.g. ttc.scoring.ArithmeticPRM()), "
                f"got {type(prm).__name__}"
            )
        self.generator = StepGenerator(source, options.step_format)
        self.source = source
        self.prm = prm
        self.options = options

    # The options under the names the strategies have always shown.
    @property
    def n(self) -> int:
        return self.options.n

    @property
    def beam_width(self) -> int:
        return self.options.beam_width

    @property
    def width(self) -> int:
        """Alias of ``beam_width``."""
        return self.options.beam_width

    @property
    def params(self) -> SamplingParams:
        return self.options.params

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.source!r}, {self.prm!r}, n={self.n}, beam_width={self.beam_width})"

    @staticmethod
    def question(prompt: str | tuple[Message, ...]) -> str:
        """The question as text: step-wise search continues raw text."""
        if not isinstance(prompt, str):
            raise ConfigError(
                "prompt: step-wise search takes the question as text (the chat step protocol "
                "builds the chat messages itself)"
            )
        return prompt

    def state(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> SearchState:
        """A fresh search over ``prompt`` in the run ``ctx``."""
        return SearchState(self, ctx, self.question(prompt))

    # ------------------------------------------------------------------ generation, scoring

    async def generate(
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
        use = params or self.options.params

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
            raise _stopped(ctx, failures, groups)
        return groups

    async def score(self, ctx: RunContext, question: str, beams: Sequence[Beam]) -> None:
        """Score every step of ``beams`` in one PRM call; set each beam's scores and value."""
        if not beams:
            return
        try:
            rows = await self.prm.score_steps(question, [b.steps for b in beams])
        except (BudgetExceeded, GenerationError, ProviderError) as exc:
            # The beams whose every step was scored (and paid for) before it failed keep it.
            self._set_scores(beams, getattr(exc, "partial_rows", None) or [])
            raise _stopped(ctx, [exc]) from exc
        self._set_scores(beams, rows)

    async def value(self, ctx: RunContext, question: str, beams: Sequence[Beam]) -> None:
        """Give each new beam the value it is ranked by: its aggregated PRM score (lookahead
        scores where the beam leads instead)."""
        await self.score(ctx, question, beams)

    def _set_scores(self, beams: Sequence[Beam], rows: Sequence[list[float] | None]) -> None:
        for beam, row in zip(beams, rows):
            if row is None:
                continue
            beam.scores = row
            beam.value = aggregate(row, self.options.aggregation)
            beam.scored = True

    # ------------------------------------------------------------------ choosing, answering

    @staticmethod
    def top(beams: Sequence[Beam], k: int) -> list[Beam]:
        """The ``k`` beams of highest value; the earlier one wins a tie."""
        order = sorted(range(len(beams)), key=lambda i: (-beams[i].value, i))
        return [beams[i] for i in sorted(order[:k])]

    def lookahead_steps(self) -> int | None:
        """The rollout steps shown on every round of the tree: lookahead's ``k``."""
        return None

    def candidate(self, beam: Beam) -> Candidate:
        """A final beam as a candidate: text, steps, extracted answer, score."""
        text = beam.text
        return Candidate(
            text=text,
            steps=list(beam.steps),
            answer=self.options.extract(text),
            score=beam.value if beam.scored else None,
            scores={self.prm.name: beam.value} if beam.scored else {},
            finish_reason="length" if beam.end == "length" else "stop",
            completion_tokens=beam.completion_tokens,
            model=self.source.model,
        )

    def result(self, search: SearchState, beams: Sequence[Beam]) -> Result:
        """The result over the final ``beams``; a provider failure with nothing to show
        raises."""
        stopped = search.stopped
        if stopped is not None and stopped.reason == "error" and not beams:
            raise stopped.cause
        candidates = [self.candidate(b) for b in beams]
        selection = self.options.selector.select(candidates)
        return Result(
            answer=selection.answer,
            best=selection.best,
            candidates=candidates,
            votes=selection.votes,
            tied=selection.tied,
            unreadable_verdicts=self.prm.pop_unreadable(),
            stopped_by=stopped.reason if stopped is not None else None,
            errors=[str(stopped.cause)] if stopped is not None else [],
            tree=search.tree(),
        )


class SearchState:
    """One search in progress: the rounds so far, the beams set aside as finished, and what a
    stop left to answer from.

    Every method keeps what was paid for: when the budget or the provider stops a round,
    ``stopped`` says why, the round's paid-for beams stay in it (scored if the PRM can still be
    paid), and the search ends after that round."""

    def __init__(self, search: StepSearch, ctx: RunContext, question: str) -> None:
        self.search = search
        self.ctx = ctx
        self.question = question
        self.rounds: list[SearchRound] = []
        self.finished: list[Beam] = []
        #: After a stop: the unfinished beams to answer from.
        self.partial: list[Beam] = []
        self.stopped: SearchStopped | None = None
        self._ids = itertools.count(1)
        self._traced = 0  # rounds already sent to ttc.instrument()'s tracer

    @property
    def current(self) -> SearchRound:
        return self.rounds[-1]

    def start_round(self, number: int) -> bool:
        """Open round ``number``; whether it is the last, which generates to the end."""
        to_end = number == self.search.options.max_rounds - 1
        self._trace_closed_rounds()
        self.rounds.append(
            SearchRound(
                round=number,
                to_end=to_end,
                path=self.search.generator.path,
                lookahead=self.search.lookahead_steps(),
            )
        )
        return to_end

    async def expand(self, plan: Sequence[tuple[Beam, int]]) -> list[list[Beam]]:
        """Continue each ``(beam, k)`` of ``plan`` with ``k`` steps; the children, grouped by
        parent, join the round. After a stop, the groups hold what was paid for."""
        try:
            groups = await self.search.generate(
                self.ctx, self.question, plan, self._ids, to_end=self.current.to_end
            )
        except SearchStopped as stop:
            self._stop(stop)
            groups = stop.groups
        self.current.beams.extend(c for group in groups for c in group)
        return groups

    async def score(
        self,
        beams: Sequence[Beam],
        how: Callable[[RunContext, str, Sequence[Beam]], Awaitable[None]] | None = None,
    ) -> None:
        """Value ``beams`` (by ``how``, default the search's ``value``). If the round was
        stopped, or the valuing stops it, the beams are scored plainly if the PRM can still
        be paid; else they stay unscored (finished ones still vote, with no weight)."""
        value = how or self.search.value
        if self.stopped is None:
            try:
                await value(self.ctx, self.question, beams)
                return
            except SearchStopped as stop:
                self._stop(stop)
        with contextlib.suppress(SearchStopped):
            await self.search.score(self.ctx, self.question, beams)

    def set_aside(self, beams: Sequence[Beam]) -> list[Beam]:
        """Set the finished ``beams`` aside (they are candidates now); the unfinished ones."""
        going: list[Beam] = []
        for beam in beams:
            if beam.done:
                beam.status = "finished"
                self.finished.append(beam)
            else:
                going.append(beam)
        return going

    def keep(self, beams: Sequence[Beam], k: int) -> list[Beam]:
        """The ``k`` best of ``beams``, marked kept (the rest stay pruned)."""
        kept = self.search.top(beams, k)
        for beam in kept:
            beam.status = "kept"
        return kept

    @staticmethod
    def unique(beams: Sequence[Beam]) -> list[Beam]:
        """The beams whose text is new this round; later copies are marked ``duplicate``."""
        seen: set[str] = set()
        out: list[Beam] = []
        for beam in beams:
            if beam.text in seen:
                beam.status = "duplicate"
                continue
            seen.add(beam.text)
            out.append(beam)
        return out

    def answer_from_deepest(self, active: Sequence[Beam], children: Sequence[Beam]) -> None:
        """After a stop, answer from the deepest beams paid for: the interrupted round's
        unfinished children where they were scored (all, or those whose verdicts were paid
        before the budget ran out), else the beams they would have continued."""
        grown = {c.parent for c in children if c.scored}
        deeper = [c for c in children if c.scored and not c.done]
        self.partial = [b for b in active if b.id not in grown and b.steps] + deeper

    def final(self, n: int) -> list[Beam]:
        """The beams to answer from: the finished ones, else (after a stop) the partial ones;
        at most ``n``, the best."""
        final = self.finished or self.partial
        return self.search.top(final, n) if len(final) > n else final

    def tree(self) -> list[dict[str, Any]]:
        """The search tree as ``Result.tree`` holds it: one JSON-ready record a round."""
        self._trace_closed_rounds()
        return [r.model_dump() for r in self.rounds]

    def _trace_closed_rounds(self) -> None:
        """``ttc.instrument()``: each round, once closed, is an event on the run's span."""
        if tracing.active is not None:
            for record in self.rounds[self._traced :]:
                tracing.active.round(record.model_dump())
        self._traced = len(self.rounds)

    def _stop(self, stop: SearchStopped) -> None:
        if self.stopped is None:
            self.stopped = stop
            self.current.stopped_by = stop.reason


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
