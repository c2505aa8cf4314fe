"""Repeated sampling (Brown et al. 2024, *Large Language Monkeys*).

Draw n samples; a verifier (golden answer, unit tests, proof checker) judges each. Coverage,
the chance that at least one of k samples is right, grows roughly log-linearly with k; the
verifier turns coverage into accuracy. With ``stop_on_success`` the first verified sample ends
the run and the requests still in flight are cancelled.
"""

from __future__ import annotations

from ttc.errors import BudgetExceeded, ConfigError, GenerationError, ProviderError
from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.scoring.base import Selector, Verifier
from ttc.scoring.extract import extract_answer
from ttc.scoring.pass_k import pass_at_k_curve
from ttc.scoring.selectors import FirstVerified, MajorityVote
from ttc.scoring.verifiers import as_verifier
from ttc.strategies.base import (
    Draw,
    Extractor,
    OnBudget,
    Source,
    Strategy,
    check_n,
    check_source,
    draw_until,
)
from ttc.types import Candidate, Message, Result, SamplingParams, StopReason


class RepeatedSample(Strategy):
    """Draw ``n`` samples and verify each.

    Args:
        source: a ``Model`` or another ``Strategy`` (then ``n`` runs of it).
        n: samples to draw.
        verifier: a ``Verifier`` or a callable ``text -> bool``; without one, candidates are
            not judged and the answer is the majority vote.
        stop_on_success: stop at the first verified sample, cancelling requests in flight.
        params: sampling parameters (default: the model's).
        extract: how to read the answer out of a sample's text.
        selector: how to pick the answer (default: first verified, else majority vote).

    The result carries every candidate, ``pass_at_k`` for k = 1, 2, 4, ... n (the unbiased
    estimator; only when all n samples were drawn) and ``verified`` (coverage at n).
    """

    def __init__(
        self,
        source: Source,
        n: int = 16,
        *,
        verifier: object | None = None,
        stop_on_success: bool = False,
        params: SamplingParams | None = None,
        extract: Extractor = extract_answer,
        selector: Selector | None = None,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        super().__init__(budget=budget, on_budget=on_budget, trace=trace)
        self.source = check_source(source)
        self.n = check_n(n)
        self.verifier: Verifier | None = as_verifier(verifier) if verifier is not None else None
        if stop_on_success and self.verifier is None:
            raise ConfigError("stop_on_success needs a verifier")
        self.stop_on_success = stop_on_success
        self.params = params
        self.extract = extract
        self.selector = selector or FirstVerified(fallback=MajorityVote())

    def __repr__(self) -> str:
        return f"RepeatedSample({self.source!r}, n={self.n})"

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        verifier = self.verifier
        got = Draw()
        judge_stopped: StopReason | None = None  # the verifier failed for good
        judge_errors: list[str] = []

        async def judge(batch: list[Candidate]) -> bool:
            """Verify ``batch``; True when the draw should stop: at a success, or once the
            verifier has failed for good (more samples could not be judged)."""
            nonlocal judge_stopped
            if verifier is None or judge_stopped is not None:
                return False
            try:
                verdicts = await verifier.verify(prompt, batch)
            except BudgetExceeded as exc:
                judge_stopped = "budget"
                judge_errors.append(f"verifying stopped: {exc}")
                ctx.budget_error = ctx.budget_error or exc
                return True
            except (ProviderError, GenerationError) as exc:
                judge_stopped = "error"
                judge_errors.append(f"verifying failed: {exc}")
                return True
            for candidate, ok in zip(batch, verdicts):
                candidate.verified = ok
                candidate.score = 1.0 if ok else 0.0
            return self.stop_on_success and any(verdicts)

        stopped = await draw_until(
            self.source,
            prompt,
            self.n,
            params=self.params,
            extract=self.extract,
            done=judge,
            into=got,
        )
        success = stopped and judge_stopped is None
        candidates = got.candidates
        if verifier is not None and (not stopped or (success and len(candidates) >= self.n)):
            # Candidates that arrived while the draw was being cancelled were never judged;
            # after a success, they are judged only when all n arrived (then pass@k holds).
            unjudged = [c for c in candidates if c.verified is None]
            if unjudged:
                late = await judge(unjudged)
                success = success or (late and judge_stopped is None)
        selection = self.selector.select(candidates)
        judged = [c for c in candidates if c.verified is not None]
        curve: dict[int, float] = {}
        stopped_by = "success" if success else (got.stopped_by or judge_stopped)
        drawn_all = got.stopped_by is None and judge_stopped is None and len(judged) >= self.n
        if verifier is not None and judged and (stopped_by is None or drawn_all):
            # All n drawn and judged (even if the last of them was the success): unbiased.
            curve = pass_at_k_curve(len(judged), sum(1 for c in judged if c.verified))
        return Result(
            answer=selection.answer,
            best=selection.best,
            candidates=candidates,
            votes=selection.votes,
            tied=selection.tied,
            stopped_by=stopped_by,
            errors=got.errors + judge_errors,
            pass_at_k=curve,
        )
