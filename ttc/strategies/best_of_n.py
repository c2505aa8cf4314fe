"""Best-of-N and self-consistency.

Best-of-N (Snell et al. 2024): score each full answer with a verifier, a reward model or any
scorer, and take the best; weighted best-of-N sums the scores of the samples that share an
answer. Self-consistency (Wang et al. 2022): the answer most samples give. With
``stop_when_settled`` a majority vote stops drawing once no remaining sample could change it.
"""

from __future__ import annotations

from collections import Counter

from ttc.errors import BudgetExceeded, GenerationError, ProviderError
from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.scoring.base import Scorer, Selector, Verifier
from ttc.scoring.extract import extract_answer, normalize_answer
from ttc.scoring.selectors import Argmax, MajorityVote
from ttc.scoring.verifiers import as_scorer
from ttc.strategies.base import (
    Draw,
    Extractor,
    OnBudget,
    Source,
    Strategy,
    check_n,
    check_source,
    draw,
    draw_until,
)
from ttc.types import Candidate, Message, Result, SamplingParams


class BestOfN(Strategy):
    """Draw ``n`` candidates, score them, select one.

    Args:
        source: a ``Model``, or a ``Strategy`` (then ``n`` runs of it, each giving its best
            candidate: e.g. four beam searches under one best-of-N).
        n: candidates to draw.
        scorer: a ``Scorer`` or ``Verifier`` (or a callable ``text -> float``); its score goes
            to ``Candidate.score`` and ``Candidate.scores[scorer.name]``.
        selector: default ``Argmax()`` with a scorer, ``MajorityVote()`` without; use
            ``WeightedMajority()`` for weighted best-of-N.
        stop_when_settled: with a majority vote and no scorer, stop drawing (cancelling the
            requests in flight) once the leading answer can no longer be overtaken.
        params: sampling parameters (default: the model's).
        extract: how to read the answer out of a sample's text.
    """

    def __init__(
        self,
        source: Source,
        n: int = 16,
        *,
        scorer: object | None = None,
        selector: Selector | None = None,
        stop_when_settled: bool = False,
        params: SamplingParams | None = None,
        extract: Extractor = extract_answer,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        super().__init__(budget=budget, on_budget=on_budget, trace=trace)
        self.source = check_source(source)
        self.n = check_n(n)
        self.scorer: Scorer | None = as_scorer(scorer) if scorer is not None else None
        self.selector = selector or (Argmax() if self.scorer is not None else MajorityVote())
        self.stop_when_settled = stop_when_settled
        self.params = params
        self.extract = extract

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source!r}, n={self.n})"

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        got = Draw()
        settled = False
        if self.stop_when_settled and self.scorer is None:
            votes: Counter[str] = Counter()

            async def decided(batch: list[Candidate]) -> bool:
                for c in batch:
                    if c.answer is not None:
                        votes[normalize_answer(c.answer)] += 1
                return _decided(votes, self.n - len(got.candidates))

            settled = await draw_until(
                self.source,
                prompt,
                self.n,
                params=self.params,
                extract=self.extract,
                done=decided,
                into=got,
            )
        else:
            await draw(
                self.source, prompt, self.n, params=self.params, extract=self.extract, into=got
            )
        candidates = got.candidates
        stopped_by = "settled" if settled else got.stopped_by
        errors = list(got.errors)
        if self.scorer is not None and candidates:
            try:
                scores = await self.scorer.score(prompt, candidates)
            except BudgetExceeded as exc:
                stopped_by, scores = "budget", []
                errors.append(f"scoring stopped: {exc}")
                ctx.budget_error = ctx.budget_error or exc
            except (ProviderError, GenerationError) as exc:  # the judge's provider, for good
                stopped_by, scores = stopped_by or "error", []
                errors.append(f"scoring failed: {exc}")
            judged = isinstance(self.scorer, Verifier)
            for candidate, value in zip(candidates, scores):
                candidate.score = value
                candidate.scores[self.scorer.name] = value
                if judged:
                    candidate.verified = value >= 1.0
        selector = self.selector
        if self.scorer is not None and not any(c.score is not None for c in candidates):
            selector = MajorityVote()  # the scorer could not score: the samples still vote
        selection = selector.select(candidates)
        return Result(
            answer=selection.answer,
            best=selection.best,
            candidates=candidates,
            votes=selection.votes,
            tied=selection.tied,
            stopped_by=stopped_by,
            errors=errors,
        )


def _decided(votes: Counter[str], remaining: int) -> bool:
    """True when the leader's margin exceeds what the remaining samples could close (and some
    remain: with none left, nothing is saved by stopping)."""
    if not votes or remaining <= 0:
        return False
    top = votes.most_common(2)
    second = top[1][1] if len(top) > 1 else 0
    return top[0][1] - second > remaining


class SelfConsistency(BestOfN):
    """Majority vote over ``n`` samples' extracted answers (Wang et al. 2022)."""

    def __init__(
        self,
        source: Source,
        n: int = 16,
        *,
        stop_when_settled: bool = False,
        params: SamplingParams | None = None,
        extract: Extractor = extract_answer,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        super().__init__(
            source,
            n,
            selector=MajorityVote(),
            stop_when_settled=stop_when_settled,
            params=params,
            extract=extract,
            budget=budget,
            on_budget=on_budget,
            trace=trace,
        )
