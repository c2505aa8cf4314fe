"""What answers an evaluation's questions: a model and a strategy built for each question.

A strategy takes its verifier at construction (``RepeatedSample(model, n, verifier=...)``), and
each question has its own reference answer, so an evaluation builds one strategy a question
from a ``MakeStrategy`` function. The model is built once per process: with Ray every worker
builds its own from ``Solver.model`` (a function), since a loaded engine cannot travel.
``named_strategy`` (and ``spec_strategy``, from a ``ttc.strategies.registry.StrategySpec``)
give the functions behind ``ttc eval --strategy``, for every strategy of the registry;
they pickle, so the same solver runs locally and on a Ray cluster.

Step-wise search continues the prompt as raw text: for a dataset with a few-shot template the
question it searches from is the templated prompt, so ``StepFormat.template`` stays
``"{question}"`` and ``step_format`` brings the delimiter and end markers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ttc.errors import ConfigError
from ttc.eval.datasets import Example
from ttc.runtime.model import Model
from ttc.scoring.base import Verifier
from ttc.strategies import registry
from ttc.strategies.base import Strategy
from ttc.strategies.steps import StepFormat
from ttc.types import SamplingParams

__all__ = [
    "STRATEGIES",
    "MakeStrategy",
    "Question",
    "Solver",
    "named_strategy",
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
) -> MakeStrategy:
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
) -> MakeStrategy:
    """The factory for a checked ``StrategySpec``; it pickles (Ray)."""
    return functools.partial(_build_spec, spec=spec, params=params, step_format=step_format)


def _build_spec(
    model: Model,
    question: Question,
    *,
    spec: registry.StrategySpec,
    params: SamplingParams | None,
    step_format: StepFormat | None,
) -> Strategy:
    context = registry.BuildContext(
        verifier=question.verifier,
        extract=question.extract,
        params=params,
        step_format=step_format,
    )
    return registry.build_strategy(spec, model, context)
