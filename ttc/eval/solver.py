"""What answers an evaluation's questions: a model and a strategy built for each question.

A strategy takes its verifier at construction (``RepeatedSample(model, n, verifier=...)``), and
each question has its own reference answer, so an evaluation builds one strategy a question
from a ``MakeStrategy`` function. The model is built once per process: with Ray every worker
builds its own from ``Solver.model`` (a function), since a loaded engine cannot travel.
``named_strategy`` gives the functions behind ``ttc eval --strategy``; they pickle, so the
same solver runs locally and on a Ray cluster.
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
from ttc.strategies.base import Strategy
from ttc.types import SamplingParams

__all__ = ["STRATEGIES", "MakeStrategy", "Question", "Solver", "named_strategy"]

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


STRATEGIES: tuple[str, ...] = ("repeated-sample", "best-of-n", "self-consistency")
"""The strategies ``named_strategy`` (and ``ttc eval --strategy``) knows."""


def named_strategy(name: str, n: int, *, params: SamplingParams | None = None) -> MakeStrategy:
    """The strategy ``name`` with ``n`` samples, as ``ttc run`` builds it: repeated sampling
    judged by the question's verifier; best-of-N with that verifier as its scorer (an
    oracle: the Large Language Monkeys setting); self-consistency, which only votes (the
    evaluation judges its candidates afterwards)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; the strategies are {', '.join(STRATEGIES)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    return functools.partial(_build_named, name=name, n=n, params=params)


def _build_named(
    model: Model, question: Question, *, name: str, n: int, params: SamplingParams | None
) -> Strategy:
    from ttc.strategies import BestOfN, RepeatedSample, SelfConsistency

    if name == "repeated-sample":
        return RepeatedSample(
            model, n, verifier=question.verifier, params=params, extract=question.extract
        )
    if name == "best-of-n":
        return BestOfN(model, n, scorer=question.verifier, params=params, extract=question.extract)
    return SelfConsistency(model, n, params=params, extract=question.extract)
