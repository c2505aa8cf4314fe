"""Lookahead search (Snell et al. 2024): beam search whose steps are judged by where they lead.

Like ``BeamPRM``, but each candidate step is scored by rolling out ``k`` more steps at
temperature 0 (stopping at the end of the solution) and taking the PRM score at the end of the
rollout. The rollout only informs the ranking: the beam goes on from the candidate step. Cost
about N x (k + 1) steps a round; ``k = 0`` is beam search.
"""

from __future__ import annotations

from collections.abc import Sequence

from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.runtime.model import Model
from ttc.scoring.base import Selector
from ttc.scoring.extract import extract_answer
from ttc.scoring.prm import Aggregation, ProcessRewardModel, aggregate
from ttc.strategies.base import Extractor, OnBudget
from ttc.strategies.beam_prm import BeamPRM
from ttc.strategies.search import Beam, SearchOptions
from ttc.strategies.steps import StepFormat
from ttc.types import SamplingParams
from ttc.validation import check_int

__all__ = ["Lookahead"]


class Lookahead(BeamPRM):
    """Beam search where a step's value is the PRM score after ``k`` greedy rollout steps.

    Args: as ``BeamPRM``, plus ``k``: rollout steps per candidate (1; Snell et al. swept 1 and
    3). Rollouts use ``params`` at temperature 0, and all rollouts of a round go out together.
    The tree shows each beam's rollout.
    """

    def __init__(
        self,
        source: Model,
        prm: ProcessRewardModel,
        n: int = 16,
        beam_width: int | None = None,
        *,
        k: int = 1,
        width: int | None = None,
        max_rounds: int = 40,
        aggregation: Aggregation | str = "last",
        remove_duplicates: bool = True,
        params: SamplingParams | None = None,
        step_format: StepFormat | None = None,
        selector: Selector | None = None,
        extract: Extractor = extract_answer,
        options: SearchOptions | None = None,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        check_int("k", k, ge=0)
        if options is None:
            options = SearchOptions.of(
                n,
                beam_width,
                width=width,
                max_rounds=max_rounds,
                aggregation=aggregation,
                remove_duplicates=remove_duplicates,
                params=params,
                step_format=step_format,
                selector=selector,
                extract=extract,
            )
        super().__init__(
            source, prm, options=options, budget=budget, on_budget=on_budget, trace=trace
        )
        self.k = k
        self.rollout_params = self.options.params.model_copy(update={"temperature": 0.0})

    def __repr__(self) -> str:
        return (
            f"Lookahead({self.source!r}, {self.prm!r}, n={self.n}, "
            f"beam_width={self.beam_width}, k={self.k})"
        )

    def lookahead_steps(self) -> int | None:
        return self.k

    async def value(self, ctx: RunContext, question: str, beams: Sequence[Beam]) -> None:
        """Roll every unfinished beam out ``k`` greedy steps, then score each beam's path (its
        steps plus its rollout) in one PRM call; the value is the aggregate at the path's end."""
        rollouts: dict[int, list[str]] = {b.id: [] for b in beams}
        open_ = [b for b in beams if not b.done]
        ids = iter(range(-1, -(2**62), -1))  # rollout steps are not beams of the tree
        for _ in range(self.k):
            if not open_:
                break
            plan = [(Beam(id=b.id, steps=b.steps + rollouts[b.id]), 1) for b in open_]
            groups = await self.generate(
                ctx, question, plan, ids, to_end=False, params=self.rollout_params
            )
            still: list[Beam] = []
            for beam, group in zip(open_, groups):
                step = group[0]
                if step.end != "empty":
                    rollouts[beam.id].append(step.steps[-1])
                if not step.done:
                    still.append(beam)
            open_ = still
        paths = [Beam(id=b.id, steps=b.steps + rollouts[b.id]) for b in beams]
        try:
            await self.score(ctx, question, paths)
        finally:  # after a stop too: the paths scored before it keep their (paid) scores
            for beam, path in zip(beams, paths):
                if not path.scored:
                    continue
                beam.scores = path.scores[: len(beam.steps)]
                beam.rollout = rollouts[beam.id]
                beam.value = aggregate(path.scores, self.options.aggregation)
                beam.scored = True
