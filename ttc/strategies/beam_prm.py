"""Beam search guided by a process reward model (Snell et al. 2024; search-and-learn).

N beams, beam width M. Sample N first steps; score them with the PRM; keep the top N/M; sample
M continuations of each survivor (N again); set finished beams aside; repeat until the beams
finish, N beams have finished, or ``max_rounds`` rounds have run (the last one generates to the
end). The answer is weighted best-of-N over the finished beams.
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

__all__ = ["BeamPRM"]


class BeamPRM(StepSearch):
    """Beam search with a PRM: keep the N/M best partial solutions, expand each M ways.

    Args:
        source: any ``Model``: raw text is continued as is; chat endpoints continue the final
            assistant message where they can, else take the chat step protocol.
        prm: the process reward model, e.g. ``ttc.scoring.ArithmeticPRM()``.
        n: N, the beams (16).
        beam_width: M, the beam width (4); ``n`` must be a multiple of it. ``width`` is an
            alias.
        max_rounds: at most this many steps (40); the last round generates to the end.
        aggregation: ``last`` (default, best in Snell et al.), ``min``, ``prod`` or ``mean``.
        remove_duplicates: drop a new beam whose text equals an earlier one of the same round
            (it would only repeat the same continuations).
        params: sampling parameters of a step (default temperature 0.8, top_p 1.0).
        step_format: the step delimiter (``"\\n\\n"``), completion template, answer pattern.
        selector: picks the answer among the final beams: default ``WeightedMajority()``
            (weighted best-of-N); ``Argmax()`` for best-of-N.
        extract: how to read the answer out of a beam's text.
        options: all of the above as one ``SearchOptions`` (then pass none of them).

    ``result.candidates`` are the finished beams (with ``steps`` and PRM ``score``; at most N,
    the best by score); ``result.tree`` the search tree. When the budget cannot pay for a
    whole round, the steps it did pay for are kept (scored, if the PRM can still be paid) and
    the result holds the finished beams, or if none finished the deepest partial beams, with
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
        super().__init__(source, prm, options, budget=budget, on_budget=on_budget, trace=trace)

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        search = self.state(prompt, ctx)
        n, keep = self.options.n, self.options.keep
        active = [Beam(id=0, steps=[])]
        for number in range(self.options.max_rounds):
            search.start_round(number)
            # The first round samples N first steps; later ones N continuations spread over
            # the survivors (M each when N/M survived).
            plan = [(active[0], n)] if number == 0 else self.spread(active)
            children = [c for group in await search.expand(plan) for c in group]
            if self.options.remove_duplicates:
                children = search.unique(children)
            await search.score(children)
            going = search.set_aside(children)
            if search.stopped is not None:
                search.answer_from_deepest(active, children)
                break
            active = search.keep(going, keep)
            if not active or len(search.finished) >= n:
                break
        return self.result(search, search.final(n))

    def spread(self, beams: Sequence[Beam]) -> list[tuple[Beam, int]]:
        """The round's N generations over the surviving ``beams``: M each when N/M survived;
        when fewer did (the rest finished or were duplicates), the best get the extra ones,
        so every round still samples N (search-and-learn repeats its active beams up to N)."""
        each, extra = divmod(self.options.n, len(beams))
        best = {b.id for b in self.top(beams, extra)} if extra else set()
        counts = [each + (b.id in best) for b in beams]
        return [(b, k) for b, k in zip(beams, counts) if k]
