"""Adaptive-Consistency (Aggarwal et al. 2023): self-consistency that stops sampling once the
vote is statistically settled.

Samples arrive in small batches. After each batch the vote counts ``v`` of the answers seen so
far give a posterior over the answer distribution ``p`` (a uniform Dirichlet prior, so
``p | v ~ Dirichlet(v + 1)``), and sampling stops once the posterior probability that the current
leader is the distribution's true majority passes ``threshold`` (the paper's ``C_thresh``, 0.95
by default), or at ``max_n`` samples (40 in the paper).

Two stopping rules from the paper:

- ``"beta"`` (the paper's default): only the two leading answers, ``p1 | v1, v2 ~
  Beta(v1 + 1, v2 + 1)``, and the probability is ``P(p1 > 1/2)``, exact in closed form:
  for integer parameters, ``P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) < a)``.
- ``"dirichlet"``: the (up to five) most voted answers, ``P(p_leader > max_other p | v)``,
  estimated by Monte Carlo over ``Dirichlet(v + 1)`` with a fixed seed (so a run is
  reproducible); with fewer than three answers seen it is the beta rule, as in the paper.

Unlike ``SelfConsistency(stop_when_settled=True)``, which stops only when the remaining samples
could not change the vote whatever they say, this stops on the evidence so far: a few agreeing
samples settle an easy question (four in a row pass 0.95 with the beta rule), a split vote keeps
sampling.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from ttc.errors import ConfigError
from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.scoring.extract import extract_answer, normalize_answer
from ttc.scoring.selectors import MajorityVote
from ttc.strategies.base import (
    Draw,
    Extractor,
    OnBudget,
    Source,
    Strategy,
    check_source,
    draw_until,
)
from ttc.types import Candidate, Message, Result, SamplingParams
from ttc.validation import check_float, check_int

StoppingRule = Literal["beta", "dirichlet"]

#: Monte Carlo draws for the Dirichlet rule: its estimate's standard error is below 0.005.
DIRICHLET_DRAWS = 10_000


def beta_majority_probability(counts: Sequence[int]) -> float:
    """The beta rule: ``P(p1 > 1/2)`` for ``p1 ~ Beta(v1 + 1, v2 + 1)``, where ``v1 >= v2`` are
    the two largest of ``counts`` (``v2 = 0`` with a single answer). ``0.0`` with no votes."""
    top = sorted((c for c in counts if c > 0), reverse=True)
    if not top:
        return 0.0
    a = top[0] + 1
    b = (top[1] if len(top) > 1 else 0) + 1
    trials = a + b - 1
    below: int = sum(math.comb(trials, j) for j in range(a))
    return below / (1 << trials)


def dirichlet_majority_probability(
    counts: Sequence[int], *, draws: int = DIRICHLET_DRAWS, seed: int = 0, top: int = 5
) -> float:
    """The Dirichlet rule: ``P(p_leader > p_j for every other answer j)`` for
    ``p ~ Dirichlet(v + 1)`` over the ``top`` most voted answers (5, as in the paper's code), by
    Monte Carlo with a fixed ``seed``. With fewer than three answers seen it is the beta rule,
    as in the paper (and with a single answer there is nothing else to compare against)."""
    votes = sorted((c for c in counts if c > 0), reverse=True)[:top]
    if len(votes) < 3:
        return beta_majority_probability(votes)
    rng = random.Random(seed)
    wins = 0
    for _ in range(draws):
        # A Dirichlet draw is a vector of Gamma draws; normalizing does not change the argmax.
        leader = rng.gammavariate(votes[0] + 1, 1.0)
        if all(rng.gammavariate(v + 1, 1.0) < leader for v in votes[1:]):
            wins += 1
    return wins / draws


_RULES = {"beta": beta_majority_probability, "dirichlet": dirichlet_majority_probability}


class AdaptiveConsistency(Strategy):
    """Majority vote that samples until the vote is settled with probability ``threshold``.

    Args:
        source: a ``Model`` or a ``Strategy`` to draw samples from.
        max_n: the most samples to draw (the paper's default is 40).
        threshold: stop once the posterior probability that the leading answer is the true
            majority reaches this (the paper's ``C_thresh``; default 0.95).
        rule: ``"beta"`` (the two leading answers; the paper's default) or ``"dirichlet"``
            (the five leading answers; Monte Carlo).
        batch: samples requested at a time (one request on a native-``n`` provider). The rule is
            checked as each sample arrives; samples of a batch still in flight when it passes
            are cancelled. ``1`` follows the paper exactly; larger batches trade a few samples
            for fewer round trips.
        min_n: samples to draw before the rule may stop the run.
        params: sampling parameters (default: the model's).
        extract: how to read the answer out of a sample's text.

    The result's ``stopped_by`` is ``"settled"`` when the rule stopped sampling before
    ``max_n``, and ``confidence`` holds the rule's probability at the end, whether or not it
    passed the threshold.
    """

    def __init__(
        self,
        source: Source,
        max_n: int = 40,
        *,
        threshold: float = 0.95,
        rule: StoppingRule = "beta",
        batch: int = 1,
        min_n: int = 1,
        params: SamplingParams | None = None,
        extract: Extractor = extract_answer,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        super().__init__(budget=budget, on_budget=on_budget, trace=trace)
        self.source = check_source(source)
        self.max_n = positive_int("max_n", max_n)
        self.threshold = check_threshold(threshold)
        self.rule = check_rule(rule)
        self.batch = positive_int("batch", batch)
        self.min_n = positive_int("min_n", min_n)
        if self.min_n > self.max_n:
            raise ConfigError(f"min_n ({min_n}) must not exceed max_n ({max_n})")
        self.params = params
        self.extract = extract

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.source!r}, max_n={self.max_n}, "
            f"threshold={self.threshold}, rule={self.rule!r})"
        )

    def probability(self, counts: Sequence[int]) -> float:
        """The stopping rule's probability that the leader of ``counts`` is the majority."""
        return _RULES[self.rule](counts)

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        return await self.continue_from(prompt, [])

    async def continue_from(
        self, prompt: str | tuple[Message, ...], prior: list[Candidate]
    ) -> Result:
        """Go on from samples already drawn for ``prompt`` (they vote and count towards
        ``max_n``), inside the caller's run; ``ComputeOptimal`` continues its probe so."""
        got = Draw(candidates=list(prior))
        votes: Counter[str] = Counter()

        def count(batch: list[Candidate]) -> float:
            for c in batch:
                key = normalize_answer(c.answer) if c.answer is not None else ""
                if key:
                    votes[key] += 1
            return self.probability(list(votes.values()))

        confidence = count(got.candidates)
        stopped = len(got.candidates) >= self.min_n and confidence >= self.threshold

        async def settled(batch: list[Candidate]) -> bool:
            nonlocal confidence
            confidence = count(batch)
            return len(got.candidates) >= self.min_n and confidence >= self.threshold

        while not stopped and len(got.candidates) < self.max_n and got.stopped_by is None:
            before = len(got.candidates)
            size = min(self.batch, self.max_n - before)
            stopped = await draw_until(
                self.source,
                prompt,
                size,
                params=self.params,
                extract=self.extract,
                done=settled,
                into=got,
            )
            if len(got.candidates) == before:
                break  # nothing came back (an error or a budget stop says why)
        selection = MajorityVote().select(got.candidates)
        # "settled" only when the rule saved something: passing at the last sample saves nothing.
        saved = stopped and len(got.candidates) < self.max_n
        stopped_by = got.stopped_by or ("settled" if saved else None)
        return Result(
            answer=selection.answer,
            best=selection.best,
            candidates=got.candidates,
            votes=selection.votes,
            stopped_by=stopped_by,
            errors=list(got.errors),
            confidence=confidence,
        )


def positive_int(name: str, value: int) -> int:
    """``value`` if it is a positive integer, else a ``ConfigError`` naming ``name``."""
    checked: int = check_int(name, value, ge=1)
    return checked


def check_threshold(value: float) -> float:
    """A stopping threshold: a probability in [0.5, 1) (below 1/2 a leader is not a majority)."""
    checked: float = check_float("threshold", value, ge=0.5, lt=1.0)
    return checked


def check_rule(value: str) -> StoppingRule:
    if value not in _RULES:
        raise ConfigError(f"rule must be one of {sorted(_RULES)}, got {value!r}")
    return value  # type: ignore[return-value]
