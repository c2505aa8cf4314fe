"""Diverse verifier tree search, DVTS (search-and-learn, Hugging Face 2024).

Beam search's survivors tend to share one prefix. DVTS splits the N beams into N/M independent
subtrees: each proposes M next steps and keeps its best by PRM score, so no subtree's scores
ever decide another's path. A subtree ends when its chosen step ends the solution (end of
sequence, an empty step, the answer pattern such as ``\\boxed{``). The output is each subtree's
M last-step alternatives (N in total), and the answer is best-of-N over them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.runtime.model import Model
from ttc.scoring.base import Selector
from ttc.scoring.extract import extract_answer
from ttc.scoring.prm import Aggregation, ProcessRewardModel
from ttc.strategies.base import Extractor, OnBudget
from ttc.strategies.search import Beam, SearchOptions, StepSearch
from ttc.strategies.steps import StepFormat
from ttc.types import Message, Result, SamplingParams

__all__ = ["DVTS"]


class DVTS(StepSearch):
    """N/M independent subtrees, each greedily following its best of M proposed steps.

    Args:
        source: a completion-style ``Model`` (raw text is continued as is).
        prm: the process reward model.
        n: N, the final candidates (16).
        beam_width: M, the steps each subtree proposes a round (4); ``n`` must be a multiple
            of it. ``width`` is an alias.
        max_rounds: at most this many steps (40); the last round generates to the end.
        aggregation: how a path's step scores become its score (``last`` by default).
        params: sampling parameters of a step (default temperature 0.8, top_p 1.0).
        step_format: the step delimiter, completion template, answer pattern, end markers.
        selector: default ``WeightedMajority()``; ``Argmax()`` for plain best-of-N.
        extract: how to read the answer out of a beam's text.
        options: all of the above as one ``SearchOptions`` (then pass none of them).

    ``result.candidates`` are the N last-step alternatives (finished or not: a subtree ends on
    its chosen step); ``result.tree`` records each round with the subtree of every beam. When
    the budget cannot pay for a whole round, each subtree answers with the newest alternatives
    it paid for (the interrupted round's, where they came back and could be scored), with
    ``stopped_by="budget"``.
    """

    def __init__(
        self,
        source: Model,
        prm: ProcessRewardModel,
        n: int = 16,
        beam_width: int | None = None,
        *,
        width: int | None = None,
        max_rounds: int = 40,
        aggregation: Aggregation | str = "last",
        params: SamplingParams | None = None,
        step_format: StepFormat | None = None,
        selector: Selector | None = None,
        extract: Extractor = extract_answer,
        options: SearchOptions | None = None,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        if options is None:
            options = SearchOptions.of(
                n,
                beam_width,
                width=width,
                max_rounds=max_rounds,
                aggregation=aggregation,
                params=params,
                step_format=step_format,
                selector=selector,
                extract=extract,
            )
        super().__init__(source, prm, options, budget=budget, on_budget=on_budget, trace=trace)

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        search = self.state(prompt, ctx)
        m = self.options.beam_width
        current = [Beam(id=0, steps=[]) for _ in range(self.options.keep)]  # each one's path
        alternatives: list[list[Beam]] = [[] for _ in current]
        live = list(range(len(current)))
        for number in range(self.options.max_rounds):
            if not live:
                break
            search.start_round(number)
            groups = await search.expand([(current[i], m) for i in live])
            # One PRM call for the whole round; each subtree then looks at its own only.
            await search.score([c for group in groups for c in group])
            for i, group in zip(live, groups):
                if group:  # when nothing came back, the subtree keeps its last round
                    alternatives[i] = group
                    current[i] = self.choose(i, group)
            live = [i for i in live if not current[i].done]
            if search.stopped is not None:
                break
        return self.result(search, [b for group in alternatives for b in group])

    def choose(self, subtree: int, group: Sequence[Beam]) -> Beam:
        """The subtree's best proposal, which it goes on from; the others are alternatives
        (finished ones are marked so; they are all candidates at the end)."""
        for beam in group:
            beam.subtree = subtree
            beam.status = "finished" if beam.done else "alternative"
        best = self.top(group, 1)[0]
        best.status = "chosen"
        return best
