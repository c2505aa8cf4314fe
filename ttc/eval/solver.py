"""What answers an evaluation's questions: a model and a strategy built for each question.

A strategy takes its verifier at construction (``RepeatedSample(model, n, verifier=...)``), and
each question has its own reference answer, so an evaluation builds one strategy a question
from a ``MakeStrategy`` function. The model is built once per process: with Ray every worker
builds its own from ``Solver.model`` (a function), since a loaded engine cannot travel.
``named_strategy`` (and ``spec_strategy``, from a ``ttc.strategies.registry.StrategySpec``)
give the functions behind ``ttc eval --strategy``, for every strategy of the registry;
they pickle, so the same solver runs locally and on a Ray cluster. ``solve_question`` answers
and judges one question, charging the run's ``EvalLedger``: every executor (local, Ray) calls
it, so stored results are identical in form.

Step-wise search continues the prompt as raw text: for a dataset with a few-shot template the
question it searches from is the templated prompt, so ``StepFormat.template`` stays
``"{question}"`` and ``step_format`` brings the delimiter and end markers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ttc.errors import BudgetExceeded, ConfigError, GenerationError, ProviderError, TTCError
from ttc.eval.datasets import DatasetSpec, Example
from ttc.eval.store import QuestionRecord
from ttc.runtime.budget import Budget, Charge, Ledger
from ttc.runtime.context import run_scope
from ttc.runtime.model import Model
from ttc.scoring.base import Verifier
from ttc.strategies import registry
from ttc.strategies.base import Strategy
from ttc.strategies.steps import StepFormat
from ttc.types import Result, SamplingParams, Usage

__all__ = [
    "STRATEGIES",
    "EvalLedger",
    "MakeStrategy",
    "Outcome",
    "Question",
    "Solver",
    "SpecStrategy",
    "fails_every_question",
    "judged_outcome",
    "named_strategy",
    "solve_question",
    "spec_strategy",
]

Extractor = Callable[[str], str | None]


@dataclass(frozen=True)
class Question:
    """One question as a strategy factory sees it: the example, the prompt to send, the
    verifier built from its reference, and how to read an answer out of a sample."""

    example: Example
    prompt: str
    verifier: Verifier
    extract: Extractor


MakeStrategy = Callable[[Model, Question], Strategy]
"""Builds the strategy for one question, e.g.
``lambda model, q: RepeatedSample(model, 32, verifier=q.verifier, extract=q.extract)``."""


@dataclass(frozen=True)
class Solver:
    """A model and the strategy to run on every question.

    Args:
        model: a ``Model``, or a function that builds one. Ray needs the function (each
            worker builds its own model; it must pickle, e.g. a ``functools.partial`` of
            ``ttc.adapters.resolve_model``).
        strategy: builds the strategy for each question (see ``MakeStrategy``).
        config: what describes this solver in the results (strategy name, n, model,
            sampling parameters); a resumed run must have the same.
    """

    model: Model | Callable[[], Model]
    strategy: MakeStrategy
    config: Mapping[str, Any] = field(default_factory=dict)

    def build_model(self) -> tuple[Model, bool]:
        """The model, and whether it was built here (then the caller closes it)."""
        if isinstance(self.model, Model):
            return self.model, False
        model = self.model()
        if not isinstance(model, Model):
            raise ConfigError(f"Solver.model must build a ttc Model, got {type(model).__name__}")
        return model, True


STRATEGIES: tuple[str, ...] = tuple(registry.STRATEGIES)
"""The strategies ``named_strategy`` (and ``ttc eval --strategy``) knows: all of
``ttc.strategies.registry``."""


def named_strategy(
    name: str,
    n: int,
    *,
    params: SamplingParams | None = None,
    strategy_params: Mapping[str, object] | None = None,
    prm: str | None = None,
    prm_options: Mapping[str, object] | None = None,
    step_format: StepFormat | None = None,
) -> SpecStrategy:
    """The strategy ``name`` with ``n`` samples (or beams), as ``ttc run`` builds it (see
    ``ttc.strategies.registry``): repeated sampling judged by the question's verifier;
    best-of-N with that verifier as its scorer (an oracle: the Large Language Monkeys
    setting) or a PRM (``scorer="prm"``); self-consistency, which only votes (the evaluation
    judges its candidates afterwards); the PRM-guided searches (``beam-prm``, ``lookahead``,
    ``dvts``) with ``prm`` (default ``arithmetic``) and ``step_format``."""
    spec = registry.StrategySpec.of(
        name, n=n, params=strategy_params, prm=prm, prm_options=prm_options
    )
    return spec_strategy(spec, params=params, step_format=step_format)


def spec_strategy(
    spec: registry.StrategySpec,
    *,
    params: SamplingParams | None = None,
    step_format: StepFormat | None = None,
    budget: Budget | None = None,
) -> SpecStrategy:
    """The factory for a checked ``StrategySpec``; it pickles (Ray). ``budget`` is each
    question's own (the strategy's ``budget=``): a question it stops is stored with the
    best answer so far, marked ``stopped_by="budget"``."""
    return SpecStrategy(spec, params, step_format, budget)


@dataclass(frozen=True)
class SpecStrategy:
    """The ``MakeStrategy`` of a registry spec. It keeps the spec, so that ``evaluate`` can
    tell a strategy that answers all the questions together under the run's budget
    (``spec.info.shared_budget``: ``adaptive-allocation``) and hand it the whole run."""

    spec: registry.StrategySpec
    params: SamplingParams | None = None
    step_format: StepFormat | None = None
    budget: Budget | None = None

    def __call__(self, model: Model, question: Question) -> Strategy:
        context = registry.BuildContext(
            verifier=question.verifier,
            extract=question.extract,
            params=self.params,
            step_format=self.step_format,
            extra={"budget": self.budget} if self.budget is not None else {},
        )
        return registry.build_strategy(self.spec, model, context)


# --------------------------------------------------------------------------------------------
# Answering one question


class EvalLedger(Ledger):
    """The ledger of a whole evaluation, shared by every question's run scope.

    It starts from ``spent`` (what the run's stored questions cost, when resuming), and keeps
    the refusal that means the run is out of budget in ``exhausted``: one with no other
    request's reservation outstanding, which waiting cannot cure.
    """

    def __init__(self, budget: Budget, spent: Usage | None = None, scope: str = "eval") -> None:
        super().__init__(budget, scope)
        self.exhausted: BudgetExceeded | None = None
        if spent is not None:
            self.spent_tokens = spent.total_tokens
            self.spent_usd = spent.cost_usd
            self.spent_requests = spent.requests
            self.spent_completion_tokens = spent.completion_tokens

    def _check(self, charge: Charge) -> None:
        try:
            super()._check(charge)
        except BudgetExceeded as exc:
            if self.exhausted is None and (exc.limit == "seconds" or self.outstanding == 0):
                self.exhausted = exc
            raise


Status = Literal["done", "incomplete", "failed"]


@dataclass
class Outcome:
    """How one question ended: ``done`` (``record`` is to be stored), ``incomplete`` (the
    run's budget stopped it: not stored, the run should end) or ``failed`` (an error; tried
    again on a rerun). ``fatal``: the error will fail every question alike, so the run should
    stop. ``usage`` is what the question cost either way."""

    example_id: str
    status: Status
    usage: Usage
    record: QuestionRecord | None = None
    error: str | None = None
    fatal: bool = False


def fails_every_question(exc: BaseException) -> bool:
    """Whether ``exc`` will fail every question of a run alike (a wrong key, a model or URL
    that is not there, a server that cannot be reached once the retries are spent: the
    errors marked ``ProviderError.fatal``), so that the evaluation stops at once rather than
    fail each question in turn."""
    if isinstance(exc, GenerationError):
        exc = exc.cause
    return isinstance(exc, ProviderError) and exc.fatal


def _failure(example: Example, exc: BaseException, what: str = "") -> str:
    """A failed question's note: its line in the dataset and the error."""
    return f"line {example.line}: {what}{type(exc).__name__}: {exc}"


async def solve_question(
    model: Model,
    solver: Solver,
    spec: DatasetSpec,
    example: Example,
    position: int,
    ledger: EvalLedger | None,
) -> Outcome:
    """Answer one question with ``solver``'s strategy, charging ``ledger``, and judge every
    candidate with the question's verifier. Used by the local runner and by Ray workers."""
    question = Question(example, spec.prompt(example), spec.verifier(example), spec.extractor())
    strategy: Strategy | None = None
    with run_scope(ledger, trace=False) as scope:
        try:
            strategy = solver.strategy(model, question)
            result = await strategy.run(question.prompt)
        except BudgetExceeded as exc:  # a strategy with on_budget="raise"
            own = strategy is not None and strategy.budget is not None
            if exc.result is None or _run_budget_spent(ledger, own, exc.scope):
                return Outcome(example.id, "incomplete", scope.usage.snapshot(), error=str(exc))
            result = exc.result
        except (TTCError, ValueError) as exc:
            # This question's failure: a provider's error, or text it cannot take (a lone
            # surrogate is a UnicodeError, a ValueError). Other exceptions are bugs: they end
            # the run, with what was stored kept.
            fatal = fails_every_question(exc)
            error = _failure(example, exc)
            return Outcome(example.id, "failed", scope.usage.snapshot(), error=error, fatal=fatal)
        own = strategy is not None and strategy.budget is not None
        stop = result.budget_stop
        if result.stopped_by == "budget" and _run_budget_spent(
            ledger, own, stop.scope if stop is not None else None
        ):
            error = "; ".join(result.errors) or "budget"
            return Outcome(example.id, "incomplete", scope.usage.snapshot(), error=error)
        # The strategy's usage, and any calls its grading made.
        return await judged_outcome(question, position, result, scope.usage.snapshot)


async def judged_outcome(
    question: Question, position: int, result: Result, usage: Callable[[], Usage]
) -> Outcome:
    """Judge ``result``'s candidates with the question's verifier: the ``done`` outcome to
    store, or ``failed`` when grading fails. ``usage`` gives what the question cost, read
    after grading (whose model calls count)."""
    example = question.example
    try:
        correct = await _judge(result, question)
    except (TTCError, ValueError) as exc:
        return Outcome(
            example.id, "failed", usage(), error=_failure(example, exc, "grading failed: ")
        )
    record = QuestionRecord(
        id=example.id,
        position=position,
        question=example.question,
        reference=example.reference,
        level=example.level,
        subject=example.subject,
        fingerprint=example.fingerprint,
        correct=correct,
        result=result,
    )
    return Outcome(example.id, "done", usage(), record=record)


def _run_budget_spent(ledger: EvalLedger | None, strategy_budget: bool, scope: str | None) -> bool:
    """Whether a budget stop came from a budget of the whole run (the evaluation's, or a
    model's own) rather than from the strategy's per-question budget: only a stop by the
    question's own budget (scope ``"run"``, the strategy's run) is an answer to store."""
    if ledger is not None:
        left = ledger.remaining_seconds()
        if ledger.exhausted is not None or (left is not None and left <= 0):
            return True
    return not strategy_budget or (scope is not None and scope != "run")


async def _judge(result: Result, question: Question) -> bool:
    """Judge the candidates no strategy judged; whether the selected candidate is correct."""
    unjudged = [c for c in result.candidates if c.verified is None]
    best = result.best
    if best is not None and best.verified is None and all(best is not c for c in unjudged):
        unjudged.append(best)
    if unjudged:
        verdicts = await question.verifier.verify(question.prompt, unjudged)
        for candidate, ok in zip(unjudged, verdicts):
            candidate.verified = ok
    return bool(best is not None and best.verified)
