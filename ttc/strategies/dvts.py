"""Diverse verifier tree search, DVTS (search-and-learn, Hugging Face 2024).

Beam search's survivors tend to share one prefix. DVTS splits the N beams into N/M independent
subtrees: each proposes M next steps and keeps its best by PRM score, so no subtree's scores
ever decide another's path. A subtree ends when its chosen step ends the solution (end of
sequence, an empty step, the answer pattern such as ``\\boxed{``). The output is each subtree's
M last-step alternatives (N in total), and the answer is best-of-N over them.
"""

from __future__ import annotations

import itertools
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

__all__ = ["DVTS"]


class DVTS(StepSearch):
    """N/M independent subtrees, each greedily following its best of M proposed steps.

    Args:
        model: a completion-style ``Model`` (raw text is continued as is).
        prm: the process reward model.
        n: N, the final candidates (16).
        width: M, the steps each subtree proposes a round (4); ``n`` must be a multiple of it.
        max_rounds: at most this many steps (40); the last round generates to the end.
        aggregation: how a path's step scores become its score (``last`` by default).
        params: sampling parameters of a step (default temperature 0.8, top_p 1.0).
        step_format: the step delimiter, completion template, answer pattern, end markers.
        final_selector: default ``WeightedMajority()``; ``Argmax()`` for plain best-of-N.
        extract: how to read the answer out of a beam's text.

    ``result.candidates`` are the N last-step alternatives (finished or not: a subtree ends on
    its chosen step); ``result.tree`` records each round with the subtree of every beam. When
    the budget cannot pay for a whole round, each subtree answers with the newest alternatives
    it paid for (the interrupted round's, where they came back and could be scored), with
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

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        question = self.question(prompt)
        ids = itertools.count(1)
        subtrees = self.n // self.width
        current = [Beam(id=0, steps=[]) for _ in range(subtrees)]  # each subtree's chosen path
        alternatives: list[list[Beam]] = [[] for _ in range(subtrees)]
        ended = [False] * subtrees
        tree: list[dict[str, Any]] = []
        stopped: SearchStopped | None = None
        for number in range(self.max_rounds):
            to_end = number == self.max_rounds - 1
            live = [i for i in range(subtrees) if not ended[i]]
            if not live:
                break
            groups: list[list[Beam]] = []
            try:
                groups = await self.expand(
                    ctx, question, [(current[i], self.width) for i in live], ids, to_end=to_end
                )
                # One PRM call for the whole round; each subtree then looks at its own only.
                await self.score(ctx, question, [c for group in groups for c in group])
            except SearchStopped as stop:
                # Keep what the interrupted round paid for (the steps, when it was the PRM
                # that stopped), scored where the PRM was or can still be paid (unscored
                # alternatives are kept too: they vote with no weight).
                stopped, groups = stop, stop.groups or groups
                await self.score_what_was_paid(ctx, question, [c for g in groups for c in g])
            status: dict[int, str] = {}
            subtree_of: dict[int, int] = {}
            for i, group in zip(live, groups):
                if not group:  # nothing came back for this subtree: it keeps its last round
                    continue
                alternatives[i] = group
                best = self.top(group, 1)[0]
                current[i] = best
                ended[i] = best.done
                subtree_of.update({c.id: i for c in group})
                status.update({c.id: "finished" if c.done else "alternative" for c in group})
                status[best.id] = "chosen"
            record = round_record(
                number,
                [c for group in groups for c in group],
                status,
                to_end=to_end,
                path=self.generator.path,
            )
            if stopped is not None:
                record["stopped_by"] = stopped.reason
            for beam in record["beams"]:
                beam["subtree"] = subtree_of[beam["id"]]
            tree.append(record)
            if stopped is not None:
                break
        final = [b for group in alternatives for b in group]
        return self.result(final, tree, stopped)
