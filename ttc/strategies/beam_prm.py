"""Beam search guided by a process reward model (Snell et al. 2024; search-and-learn).

N beams, beam width M. Sample N first steps; score them with the PRM; keep the top N/M; sample
M continuations of each survivor (N again); set finished beams aside; repeat until the beams
finish, N beams have finished, or ``max_rounds`` rounds have run (the last one generates to the
end). The answer is weighted best-of-N over the finished beams.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.runtime.model import Model
from ttc.scoring.base import Selector
from ttc.scoring.extract import extract_answer
from ttc.scoring.prm import Aggregation, ProcessRewardModel
from ttc.strategies.base import Extractor, OnBudget
from ttc.strategies.search import Beam, SearchStopped, StepSearch, round_record
from ttc.strategies.steps import StepFormat
from ttc.types import Message, Result, SamplingParams

__all__ = ["BeamPRM"]


class BeamPRM(StepSearch):
    """Beam search with a PRM: keep the N/M best partial solutions, expand each M ways.

    Args:
        model: any ``Model``: raw text is continued as is; chat endpoints continue the final
            assistant message where they can, else take the chat step protocol.
        prm: the process reward model, e.g. ``ttc.scoring.ArithmeticPRM()``.
        n: N, the beams (16).
        width: M, the beam width (4); ``n`` must be a multiple of it.
        max_rounds: at most this many steps (40); the last round generates to the end.
        aggregation: ``last`` (default, best in Snell et al.), ``min``, ``prod`` or ``mean``.
        remove_duplicates: drop a new beam whose text equals an earlier one of the same round
            (it would only repeat the same continuations).
        params: sampling parameters of a step (default temperature 0.8, top_p 1.0).
        step_format: the step delimiter (``"\\n\\n"``), completion template, answer pattern.
        final_selector: default ``WeightedMajority()`` (weighted best-of-N); ``Argmax()`` for
            best-of-N.
        extract: how to read the answer out of a beam's text.

    ``result.candidates`` are the finished beams (with ``steps`` and PRM ``score``; at most N,
    the best by score); ``result.tree`` the search tree. When the budget cannot pay for a
    whole round, the steps it did pay for are kept (scored, if the PRM can still be paid) and
    the result holds the finished beams, or if none finished the deepest partial beams, with
    ``stopped_by="budget"``.
    """

    def __init__(
        self,
        model: Model,
        prm: ProcessRewardModel,
        n: int = 16,
        width: int = 4,
        *,
        max_rounds: int = 40,
        aggregation: Aggregation | str = "last",
        remove_duplicates: bool = True,
        params: SamplingParams | None = None,
        step_format: StepFormat | None = None,
        final_selector: Selector | None = None,
        extract: Extractor = extract_answer,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        super().__init__(
            model,
            prm,
            n=n,
            width=width,
            max_rounds=max_rounds,
            aggregation=aggregation,
            params=params,
            step_format=step_format,
            final_selector=final_selector,
            extract=extract,
            budget=budget,
            on_budget=on_budget,
            trace=trace,
        )
        self.remove_duplicates = remove_duplicates

    async def value(self, ctx: RunContext, question: str, beams: Sequence[Beam]) -> None:
        """Give each new beam the value it is ranked by: here its aggregated PRM score."""
        await self.score(ctx, question, beams)

    def round_extra(self) -> dict[str, Any]:
        """Settings shown on every round of the tree."""
        return {}

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        question = self.question(prompt)
        ids = itertools.count(1)
        keep = self.n // self.width
        active = [Beam(id=0, steps=[])]
        finished: list[Beam] = []
        partial: list[Beam] = []  # after a stop: the unfinished beams to answer from
        tree: list[dict[str, Any]] = []
        stopped: SearchStopped | None = None
        for number in range(self.max_rounds):
            to_end = number == self.max_rounds - 1
            # The first round samples N first steps; later ones N continuations spread over
            # the survivors (M each when N/M survived).
            plan = [(active[0], self.n)] if number == 0 else self.spread(active)
            status: dict[int, str] = {}
            try:
                groups = await self.expand(ctx, question, plan, ids, to_end=to_end)
            except SearchStopped as stop:
                stopped, groups = stop, stop.groups
            new = [c for group in groups for c in group]
            children = _drop_duplicates(new, status) if self.remove_duplicates else new
            scored = False
            if stopped is None:
                try:
                    await self.value(ctx, question, children)
                    scored = True
                except SearchStopped as stop:
                    stopped = stop
            if not scored:  # what the interrupted round produced, scored if the PRM can be paid
                scored = await self.score_what_was_paid(ctx, question, children)
            # Finished beams are kept even unscored (paid for; they vote with no weight).
            done = [c for c in children if c.done]
            going = [c for c in children if not c.done]
            finished.extend(done)
            status.update({c.id: "finished" for c in done})
            if stopped is None:
                active = self.top(going, keep)
                status.update({c.id: "kept" for c in active})
            else:
                # Answer from the deepest beams paid for: the interrupted round's children
                # where they were scored (all, or those whose verdicts were paid before the
                # budget ran out), else the beams they would have continued.
                deeper = [c for c in going if c.scored]
                grown = {c.parent for c in children if c.scored}
                partial = [b for b in active if b.id not in grown and b.steps] + deeper
            tree.append(
                round_record(
                    number,
                    new,
                    status,
                    to_end=to_end,
                    path=self.generator.path,
                    **self.round_extra(),
                    **({"stopped_by": stopped.reason} if stopped is not None else {}),
                )
            )
            if stopped is not None or not active or len(finished) >= self.n:
                break
        final = finished or partial
        if len(final) > self.n:
            final = self.top(final, self.n)
        return self.result(final, tree, stopped)

    def spread(self, beams: Sequence[Beam]) -> list[tuple[Beam, int]]:
        """The round's N generations over the surviving ``beams``: M each when N/M survived;
        when fewer did (the rest finished or were duplicates), the best get the extra ones,
        so every round still samples N (search-and-learn repeats its active beams up to N)."""
        each, extra = divmod(self.n, len(beams))
        best = {b.id for b in self.top(beams, extra)} if extra else set()
        counts = [each + (b.id in best) for b in beams]
        return [(b, k) for b, k in zip(beams, counts) if k]


def _drop_duplicates(beams: Sequence[Beam], status: dict[int, str]) -> list[Beam]:
    """The beams whose text is new this round; later copies are marked ``duplicate``."""
    seen: set[str] = set()
    out: list[Beam] = []
    for beam in beams:
        if beam.text in seen:
            status[beam.id] = "duplicate"
            continue
        seen.add(beam.text)
        out.append(beam)
    return out
