"""The scoring interfaces: scorers give each candidate a number, verifiers a yes or no, selectors
pick the answer.

Scorers are async because many of them call something slow: a model (an LLM judge, a reward
model), a subprocess (unit tests) or a worker process (math equivalence). Scorers that call a
model go through a ttc ``Model``, so their calls count against the same budgets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from ttc.runtime import tracing
from ttc.types import Candidate, Prompt


class Scorer(ABC):
    """Gives every candidate a score; higher is better."""

    #: The key under which strategies store this scorer's score in ``Candidate.scores``.
    name: str = "score"

    def __init_subclass__(cls, **kwargs: object) -> None:
        # Every scorer's calls become spans under ttc.instrument(), without each strategy
        # wrapping its calls (see ttc.runtime.tracing).
        super().__init_subclass__(**kwargs)
        tracing.trace_methods(cls, ("score", "verify"))

    @abstractmethod
    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        """Return one score per candidate, in order."""


class Verifier(Scorer):
    """Decides whether each candidate is correct. Its score is 1.0 or 0.0."""

    name = "verified"

    @abstractmethod
    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        """Return one verdict per candidate, in order."""

    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        """1.0 for each candidate ``verify`` accepts, 0.0 for the others."""
        return [1.0 if ok else 0.0 for ok in await self.verify(prompt, candidates)]


class Selection(BaseModel):
    """A selector's choice: the winning candidate, its answer, and the tally behind it."""

    model_config = ConfigDict(extra="forbid")

    best: Candidate | None
    answer: str | None
    votes: dict[str, float] = Field(default_factory=dict)
    tied: list[str] = Field(
        default_factory=list,
        description="The answers that tied for the lead (the earliest won); empty without a tie.",
    )


class Selector(ABC):
    """Picks the final answer among scored candidates."""

    @abstractmethod
    def select(self, candidates: Sequence[Candidate]) -> Selection:
        """Choose among ``candidates`` (which may be empty: then ``best`` is ``None``)."""
