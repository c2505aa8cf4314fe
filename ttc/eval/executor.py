"""Where an evaluation's questions are answered: the ``Executor`` protocol that
``ttc.eval.runner.evaluate`` drives, and the local executor (this process, one model).

``ttc.eval.ray_runner.RayExecutor`` is the other one (Ray worker actors). Both answer a question
with ``ttc.eval.solver.solve_question``, so stored results are identical in form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import anyio

from ttc.eval.datasets import DatasetSpec, Example
from ttc.eval.solver import EvalLedger, Outcome, Solver, solve_question

if TYPE_CHECKING:
    from types import TracebackType

    from ttc.runtime.model import Model

__all__ = ["Executor", "LocalExecutor"]


class Executor(Protocol):
    """Answers the questions of one run; entered (``async with``) around the whole run.

    ``in_process``: whether the questions' requests are made in this process (then the runner
    counts their tokens live; else when each question's ``Outcome`` arrives).
    """

    @property
    def in_process(self) -> bool: ...

    async def __aenter__(self) -> Executor: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def solve(self, position: int, example: Example) -> Outcome:
        """Answer and judge the question at ``position`` of the dataset."""
        ...

    def exhausted(self) -> bool:
        """Whether the run's budget is spent (no further question can be paid for)."""
        ...


class LocalExecutor:
    """Questions answered in this process, on one model (built on entry when the solver
    builds it, and then closed on exit)."""

    in_process = True

    def __init__(self, solver: Solver, spec: DatasetSpec, ledger: EvalLedger | None) -> None:
        self.solver = solver
        self.spec = spec
        self.ledger = ledger
        self.model: Model | None = None
        self.owned = False

    async def __aenter__(self) -> LocalExecutor:
        self.model, self.owned = self.solver.build_model()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.model is not None and self.owned:
            with anyio.CancelScope(shield=True):
                await self.model.aclose()

    async def solve(self, position: int, example: Example) -> Outcome:
        assert self.model is not None
        return await solve_question(
            self.model, self.solver, self.spec, example, position, self.ledger
        )

    def exhausted(self) -> bool:
        return self.ledger is not None and self.ledger.exhausted is not None
