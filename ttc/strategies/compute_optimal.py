"""Compute-optimal test-time compute (Snell et al. 2024): estimate a question's difficulty from a
cheap probe, then spend what a policy assigns to that difficulty.

The probe draws a few samples. Their difficulty estimate is a number in [0, 1], higher meaning
easier:

- ``"agreement"``: the share of the probe's samples that give its majority answer (samples
  without an answer count against it);
- ``"score"``: the mean score a scorer gives the probe's samples; with a PRM scorer that
  aggregates the *last* step (``PRMScorer(prm)``) this is Snell et al.'s model-predicted
  difficulty, the mean final-step PRM score.

A ``Policy`` splits [0, 1] into contiguous bins and assigns each an action: answer from the
probe at once (``"stop"``), draw more samples up to ``n`` and vote (``"vote"``: majority, or
weighted by the scorer when there is one), sample adaptively (``"adaptive"``, continuing the
probe's vote), or run any strategy (a step-wise search, say), whose candidates then vote
together with the probe's. The probe's samples are never thrown away: they are in every bin's
vote and in ``result.candidates``.

Policies are data (``Policy.load`` reads TOML or JSON; ``Policy.model_validate`` takes a dict):
a gap or an overlap between bins, or an unknown action, fails with one error that names it.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ttc.errors import BudgetExceeded, ConfigError, GenerationError, ProviderError
from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext
from ttc.scoring.base import Scorer, Selector
from ttc.scoring.extract import extract_answer
from ttc.scoring.selectors import MajorityVote, WeightedMajority
from ttc.scoring.verifiers import as_scorer
from ttc.strategies.adaptive_consistency import AdaptiveConsistency, positive_int
from ttc.strategies.base import (
    Draw,
    Extractor,
    OnBudget,
    Source,
    Strategy,
    check_source,
    draw,
)
from ttc.types import Candidate, Message, Result, Routing, SamplingParams

Difficulty = Literal["agreement", "score"]

#: Actions a bin can name without a strategy factory.
BUILTIN_ACTIONS = ("stop", "vote", "adaptive")

#: Builds the strategy a bin names from the bin's parameters and the policy's source (e.g. the
#: evaluation's strategy registry).
StrategyFactory = Callable[[str, Mapping[str, Any], Source], Strategy]


class Bin(BaseModel):
    """A range of difficulty estimates, ``low <= d < high`` (the last bin includes 1.0), and
    the action taken for questions in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)
    action: str = Field(min_length=1, description="'stop', 'vote', 'adaptive' or a strategy name")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> Bin:
        if not self.low < self.high:
            raise ValueError(
                f"bin {self.name!r}: low ({self.low}) must be below high ({self.high})"
            )
        return self


class Policy(BaseModel):
    """Which action to take at which estimated difficulty.

    Attributes:
        probe_n: samples the probe draws.
        difficulty: ``"agreement"`` or ``"score"`` (needs a scorer on the strategy).
        bins: contiguous ranges covering [0, 1], in any order.
        fitted_on: where the policy came from (filled in by ``ttc fit-policy``), free-form.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    probe_n: int = Field(4, ge=1)
    difficulty: Difficulty = "agreement"
    bins: tuple[Bin, ...]
    fitted_on: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _covers_the_unit_interval(self) -> Policy:
        if not self.bins:
            raise ValueError("bins: a policy needs at least one bin")
        ordered = sorted(self.bins, key=lambda b: b.low)
        names = [b.name for b in ordered]
        if len(set(names)) != len(names):
            raise ValueError(f"bins: names must be unique, got {names}")
        if ordered[0].low != 0.0:
            raise ValueError(f"bins leave a gap: nothing covers [0, {ordered[0].low})")
        for before, after in itertools.pairwise(ordered):
            if after.low > before.high:
                raise ValueError(
                    f"bins leave a gap between {before.name!r} and {after.name!r}: nothing "
                    f"covers [{before.high}, {after.low})"
                )
            if after.low < before.high:
                raise ValueError(
                    f"bins {before.name!r} and {after.name!r} overlap on "
                    f"[{after.low}, {min(before.high, after.high)})"
                )
        if ordered[-1].high != 1.0:
            raise ValueError(f"bins leave a gap: nothing covers ({ordered[-1].high}, 1]")
        return self

    def bin_for(self, difficulty: float) -> Bin:
        """The bin whose range holds ``difficulty`` (the last bin holds 1.0)."""
        ordered = sorted(self.bins, key=lambda b: b.low)
        for b in ordered:
            if difficulty < b.high:
                return b
        return ordered[-1]

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a policy from a ``.toml`` or ``.json`` file; errors name the file and the key."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"policy file {path}: cannot read it ({exc.strerror})") from None
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                if sys.version_info >= (3, 11):
                    import tomllib
                else:  # pragma: no cover - Python 3.10
                    import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
                data = tomllib.loads(text)
        except ValueError as exc:
            kind = "JSON" if path.suffix == ".json" else "TOML"
            raise ConfigError(f"policy file {path}: not valid {kind}: {exc}") from None
        return cls.parse(data, source=str(path))

    @classmethod
    def parse(cls, data: object, *, source: str = "policy") -> Policy:
        """A policy from plain data, with a ``ConfigError`` naming the first problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "policy"
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{source}: {where}: {message}") from None


class ComputeOptimal(Strategy):
    """Probe the question, estimate its difficulty, and run what the policy assigns to it.

    Args:
        source: a ``Model`` (or a ``Strategy``) to probe and sample from.
        policy: a ``Policy``, or a path to a policy file.
        scorer: scores the probe's samples for ``difficulty="score"`` (e.g.
            ``PRMScorer(ArithmeticPRM())``), and weights the votes when present.
        strategies: strategies by name for bins whose action is not built in, either as
            objects or through ``factory``.
        factory: builds a strategy from a bin's action name and parameters (e.g. the
            evaluation's registry); used when ``strategies`` has no such name.
        params: sampling parameters for the probe and the built-in actions.
        extract: how to read the answer out of a sample's text.

    Built-in actions and their parameters: ``"stop"`` (none: the probe's vote),
    ``"vote"`` (``n``: samples in all, the probe's included), ``"adaptive"`` (``max_n``,
    ``threshold``, ``rule``, ``batch`` as for ``AdaptiveConsistency``, the probe's samples
    counted). The result's ``routing`` says the estimate, the bin and the action.
    """

    def __init__(
        self,
        source: Source,
        policy: Policy | str | Path,
        *,
        scorer: object | None = None,
        strategies: Mapping[str, Strategy] | None = None,
        factory: StrategyFactory | None = None,
        params: SamplingParams | None = None,
        extract: Extractor = extract_answer,
        budget: Budget | None = None,
        on_budget: OnBudget = "return",
        trace: bool = True,
    ) -> None:
        super().__init__(budget=budget, on_budget=on_budget, trace=trace)
        self.source = check_source(source)
        self.policy = policy if isinstance(policy, Policy) else Policy.load(policy)
        self.scorer: Scorer | None = as_scorer(scorer) if scorer is not None else None
        if self.policy.difficulty == "score" and self.scorer is None:
            raise ConfigError("scorer: the policy's difficulty is 'score', which needs a scorer")
        self.params = params
        self.extract = extract
        self._strategies: dict[str, Strategy] = {}
        for b in self.policy.bins:
            if b.action in BUILTIN_ACTIONS:
                self._check_builtin(b)
            elif strategies is not None and b.action in strategies:
                self._strategies[b.name] = strategies[b.action]
            elif factory is not None:
                try:
                    self._strategies[b.name] = factory(b.action, b.params, self.source)
                except ConfigError as exc:
                    raise ConfigError(f"bin {b.name!r}: {exc}") from None
            else:
                known = sorted({*BUILTIN_ACTIONS, *(strategies or {})})
                raise ConfigError(
                    f"bin {b.name!r}: unknown action {b.action!r}; known: {', '.join(known)}"
                )

    def __repr__(self) -> str:
        bins = ", ".join(f"{b.name}={b.action}" for b in self.policy.bins)
        return f"{type(self).__name__}({self.source!r}, {bins})"

    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        got = Draw()
        await draw(
            self.source,
            prompt,
            self.policy.probe_n,
            params=self.params,
            extract=self.extract,
            into=got,
        )
        errors = list(got.errors)
        stopped_by = got.stopped_by
        scored = await self._score(prompt, got.candidates, ctx, errors)
        if got.candidates and not scored and self.policy.difficulty == "score":
            stopped_by = stopped_by or "error"
        difficulty = self._difficulty(got.candidates, scored)
        chosen = self.policy.bin_for(difficulty)
        candidates = list(got.candidates)
        confidence: float | None = None
        if stopped_by is None and chosen.action != "stop":
            if chosen.action == "vote":
                more = Draw()
                missing = int(chosen.params.get("n", 0)) - len(candidates)
                if missing > 0:
                    await draw(
                        self.source,
                        prompt,
                        missing,
                        params=self.params,
                        extract=self.extract,
                        into=more,
                    )
                await self._score(prompt, more.candidates, ctx, errors)
                candidates += more.candidates
                stopped_by, errors = more.stopped_by, errors + more.errors
            elif chosen.action == "adaptive":
                adaptive = AdaptiveConsistency(
                    self.source, params=self.params, extract=self.extract, **chosen.params
                )
                result = await adaptive.continue_from(prompt, got.candidates)
                candidates = result.candidates
                confidence = result.confidence
                stopped_by, errors = result.stopped_by, errors + result.errors
                await self._score(prompt, candidates[len(got.candidates) :], ctx, errors)
            else:
                result = await self._strategies[chosen.name].run(prompt)
                candidates += result.candidates
                stopped_by, errors = result.stopped_by, errors + result.errors
                if self.scorer is not None:
                    fresh = [c for c in result.candidates if self.scorer.name not in c.scores]
                    await self._score(prompt, fresh, ctx, errors)
        selection = self._selector(candidates).select(candidates)
        return Result(
            answer=selection.answer,
            best=selection.best,
            candidates=candidates,
            votes=selection.votes,
            stopped_by=stopped_by,
            errors=errors,
            confidence=confidence,
            routing=Routing(
                difficulty=difficulty,
                measure=self.policy.difficulty,
                bin=chosen.name,
                action=chosen.action,
                probe_n=len(got.candidates),
            ),
        )

    async def _score(
        self,
        prompt: str | tuple[Message, ...],
        candidates: list[Candidate],
        ctx: RunContext,
        errors: list[str],
    ) -> bool:
        """Score ``candidates`` in place with the scorer, if any; False if it could not."""
        if self.scorer is None or not candidates:
            return self.scorer is not None
        try:
            scores = await self.scorer.score(prompt, candidates)
        except BudgetExceeded as exc:
            errors.append(f"scoring stopped: {exc}")
            ctx.budget_error = ctx.budget_error or exc
            return False
        except (ProviderError, GenerationError) as exc:
            errors.append(f"scoring failed: {exc}")
            return False
        for candidate, value in zip(candidates, scores):
            candidate.score = value
            candidate.scores[self.scorer.name] = value
        return True

    def _difficulty(self, probe: list[Candidate], scored: bool) -> float:
        if not probe:
            return 0.0
        if self.policy.difficulty == "score":
            if not scored or self.scorer is None:
                return 0.0
            values = [c.scores.get(self.scorer.name, 0.0) for c in probe]
            return min(1.0, max(0.0, sum(values) / len(values)))
        votes = MajorityVote().select(probe).votes
        return max(votes.values(), default=0.0) / len(probe)

    def _check_builtin(self, b: Bin) -> None:
        takes = {"stop": (), "vote": ("n",), "adaptive": ("max_n", "threshold", "rule", "batch")}
        allowed = takes[b.action]
        for name in b.params:
            if name not in allowed:
                also = f" (it takes {', '.join(allowed)})" if allowed else " (it takes none)"
                raise ConfigError(
                    f"bin {b.name!r}: action {b.action!r} has no parameter {name!r}{also}"
                )
        try:
            if b.action == "vote":
                positive_int("n", b.params.get("n", 1))
            elif b.action == "adaptive":
                AdaptiveConsistency(self.source, **b.params)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"bin {b.name!r}: {exc}") from None

    def _selector(self, candidates: list[Candidate]) -> Selector:
        if self.scorer is not None and any(self.scorer.name in c.scores for c in candidates):
            return WeightedMajority(score_key=self.scorer.name)
        return MajorityVote()
