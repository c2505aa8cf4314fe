"""One budget over many questions, spent where the answers are still unsettled.

A fixed ``n`` per question spends as much on a question whose first samples all agree as on one
whose vote is split. ``AdaptiveAllocation`` draws samples for a list of questions in rounds under
one shared budget: every question first gets a batch; after each round a question whose vote is
settled (the stopping rule of ``AdaptiveConsistency`` passes its threshold) or that reached
``max_n`` leaves; the others get another batch, the least settled first, until none is left or
the budget cannot pay for more. Every question gets a result, marked ``stopped_by="budget"`` when
the budget ran out before its vote settled.

``run(prompts, on_round=...)`` shows each round's leavers as they leave: ``ttc eval`` judges
and stores them then, so a killed run keeps every question finished in an earlier round.
"""

from __future__ import annotations

import inspect
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from ttc.errors import ConfigError, TTCError
from ttc.runtime.budget import Budget
from ttc.runtime.context import run_scope
from ttc.runtime.sync import run_sync
from ttc.scoring.extract import extract_answer, normalize_answer
from ttc.scoring.selectors import MajorityVote
from ttc.strategies.adaptive_consistency import (
    _RULES,
    StoppingRule,
    check_rule,
    check_threshold,
    positive_int,
)
from ttc.strategies.base import Draw, Extractor, Source, check_source, draw
from ttc.types import Message, Prompt, Result, SamplingParams, StopReason, Usage, as_request_prompt

OnRound = Callable[[Sequence[tuple[int, Result]]], Awaitable[None] | None]
"""Called after each round with ``(index in prompts, final result)`` of every question that
left in it (settled, ``max_n`` reached, cut short by the budget, failed); sync or async."""


@dataclass
class _Question:
    prompt: str | tuple[Message, ...]
    drawn: Draw = field(default_factory=Draw)
    votes: Counter[str] = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    confidence: float = 0.0
    stopped_by: StopReason | None = None
    done: bool = False


class AdaptiveAllocation:
    """Self-consistency over many questions under one budget, spent where votes are unsettled.

    Args:
        source: a ``Model`` or a ``Strategy`` to draw samples from.
        budget: the shared hard limits for all the questions together (tokens, USD, requests,
            seconds); never passed.
        batch: samples a question gets per round (one request on a native-``n`` provider).
        max_n: the most samples any one question gets.
        threshold: a question leaves once its stopping rule's probability reaches this.
        rule: ``"beta"`` or ``"dirichlet"``, as in ``AdaptiveConsistency``.
        params: sampling parameters (default: the model's).
        extract: how to read the answer out of a sample's text.

    ``run(prompts)`` returns one ``Result`` per prompt, in order; each result's ``usage`` is what
    its own samples cost, ``confidence`` its rule's probability and ``stopped_by`` ``"settled"``
    (the rule passed before ``max_n``), ``"budget"`` (the budget ran out first) or ``None``
    (it got ``max_n`` samples). ``usage`` on the object is the total of the last run.
    """

    def __init__(
        self,
        source: Source,
        *,
        budget: Budget | None,
        batch: int = 4,
        max_n: int = 32,
        threshold: float = 0.95,
        rule: StoppingRule = "beta",
        params: SamplingParams | None = None,
        extract: Extractor = extract_answer,
    ) -> None:
        self.source = check_source(source)
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError(f"budget must be a ttc.Budget or None, got {type(budget).__name__}")
        self.budget = budget
        self.batch = positive_int("batch", batch)
        self.max_n = positive_int("max_n", max_n)
        self.threshold = check_threshold(threshold)
        self.rule = check_rule(rule)
        self.params = params
        self.extract = extract
        self.usage = Usage()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, budget={self.budget!r}, "
            f"batch={self.batch}, max_n={self.max_n})"
        )

    async def run(self, prompts: Sequence[Prompt], on_round: OnRound | None = None) -> list[Result]:
        """Answer every prompt; the budget covers them all. ``on_round`` (``OnRound``) sees
        each question's final result in the round it leaves; what it spends (a verifier's
        model calls) is charged to the same budget."""
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
            raise ConfigError("prompts must be a list of prompts (texts or message lists)")
        questions = [_Question(as_request_prompt(p)) for p in prompts]
        start = time.perf_counter()
        with run_scope(self.budget, trace=False) as shared:
            pending = list(enumerate(questions))
            while pending:
                await self._round([q for _, q in pending])
                for _, q in pending:
                    self._update(q)
                if on_round is not None:
                    elapsed = time.perf_counter() - start
                    left = [(i, self._result(q, elapsed)) for i, q in pending if q.done]
                    shown = on_round(left)
                    if inspect.isawaitable(shown):
                        await shown
                # The least settled first: if the budget runs short, they are the ones served.
                pending = sorted(
                    ((i, q) for i, q in pending if not q.done), key=lambda iq: iq[1].confidence
                )
        self.usage = shared.usage.snapshot()
        elapsed = time.perf_counter() - start
        return [self._result(q, elapsed) for q in questions]

    def run_sync(self, prompts: Sequence[Prompt], on_round: OnRound | None = None) -> list[Result]:
        """``run`` for synchronous code; works inside a running event loop too."""
        return run_sync(lambda: self.run(prompts, on_round))

    async def _round(self, pending: list[_Question]) -> None:
        async with anyio.create_task_group() as tg:
            for q in pending:  # started in priority order, so they reserve in that order
                tg.start_soon(self._draw_batch, q)

    async def _draw_batch(self, q: _Question) -> None:
        size = min(self.batch, self.max_n - len(q.drawn.candidates))
        before = len(q.drawn.candidates)
        with run_scope(None, trace=False) as mine:
            fresh = Draw()
            try:
                await draw(
                    self.source,
                    q.prompt,
                    size,
                    params=self.params,
                    extract=self.extract,
                    into=fresh,
                )
            except TTCError as exc:  # nothing came back: the provider failed for good
                fresh.stopped_by = "error"
                fresh.errors.append(str(exc))
        q.usage = q.usage + mine.usage.snapshot()
        q.drawn.candidates.extend(fresh.candidates)
        q.drawn.errors.extend(fresh.errors)
        for c in fresh.candidates:
            key = normalize_answer(c.answer) if c.answer is not None else ""
            if key:
                q.votes[key] += 1
        if fresh.stopped_by is not None or len(q.drawn.candidates) == before:
            q.stopped_by = fresh.stopped_by or "error"
            q.done = True

    def _update(self, q: _Question) -> None:
        q.confidence = _RULES[self.rule](list(q.votes.values()))
        if q.done:
            if q.stopped_by == "budget" and q.confidence >= self.threshold:
                q.stopped_by = "settled"  # the budget cut it short, but its vote had settled
            return
        n = len(q.drawn.candidates)
        if q.confidence >= self.threshold and n < self.max_n:
            q.stopped_by, q.done = "settled", True
        elif n >= self.max_n:
            q.done = True

    def _result(self, q: _Question, elapsed: float) -> Result:
        selection = MajorityVote().select(q.drawn.candidates)
        return Result(
            answer=selection.answer,
            best=selection.best,
            candidates=q.drawn.candidates,
            votes=selection.votes,
            usage=q.usage,
            stopped_by=q.stopped_by,
            errors=q.drawn.errors,
            confidence=q.confidence,
            elapsed_s=elapsed,
        )
