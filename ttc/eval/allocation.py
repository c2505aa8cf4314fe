"""``ttc eval --strategy adaptive-allocation``: a run's questions answered together by
``AdaptiveAllocation``, under the run's one budget.

Other strategies answer each question on its own, so ``evaluate`` pulls questions with workers
(``LocalExecutor``). Here the questions share the budget: the allocation draws for all of them
in rounds, more for the least settled, and each question is judged with its verifier
(``judged_outcome``, as every executor's questions are) and stored in the round it leaves. So
``ttc report`` reads the run as any other, and a killed run keeps what earlier rounds finished.
The run's ``EvalLedger`` is the allocation's budget: it starts from what the stored questions
cost, so a resumed run spends only what is left.

A question the budget cut short is stored with the samples it got (``stopped_by="budget"``):
that is the allocation's answer to it. A question the budget left without any sample is not
stored: the run is then stopped by its budget, and a rerun with a larger budget answers it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from ttc.errors import ConfigError
from ttc.eval.datasets import DatasetSpec, Example
from ttc.eval.executor import LocalExecutor
from ttc.eval.solver import EvalLedger, Outcome, Question, Solver, SpecStrategy, judged_outcome
from ttc.runtime.context import run_scope
from ttc.strategies.allocation import AdaptiveAllocation

if TYPE_CHECKING:
    from ttc.runtime.budget import Budget
    from ttc.types import Result

__all__ = ["AllocationExecutor", "answers_together"]


def answers_together(solver: Solver, budget: Budget | None, ray: object = None) -> bool:
    """Whether ``solver``'s strategy answers all of a run's questions together under the run's
    budget (a ``SpecStrategy`` of ``adaptive-allocation``). Such a run needs a budget (the one
    it spreads) and runs in this process: a ``ConfigError`` says so otherwise."""
    plan = solver.strategy
    if not isinstance(plan, SpecStrategy) or not plan.spec.info.shared_budget:
        return False
    name = plan.spec.name
    if budget is None:
        raise ConfigError(
            f"budget: {name} spends one budget over all the questions, and none was given "
            "(ttc eval: --budget-tokens, --budget-usd, --budget-requests or --budget-seconds; "
            "an experiment file: budget_tokens; Python: evaluate(..., budget=Budget(...)))"
        )
    if ray is not None and ray is not False:
        raise ConfigError(
            f"{name} answers every question in one process under one budget: drop --ray"
        )
    return True


class AllocationExecutor(LocalExecutor):
    """The run's questions answered together in this process, on one model; ``evaluate``
    drives it with ``solve_all`` instead of a question at a time."""

    def __init__(self, solver: Solver, spec: DatasetSpec, ledger: EvalLedger | None) -> None:
        if not isinstance(solver.strategy, SpecStrategy):
            raise ConfigError("AllocationExecutor needs a solver built by spec_strategy")
        super().__init__(solver, spec, ledger)
        self.plan = solver.strategy

    async def solve(self, position: int, example: Example) -> Outcome:
        """One question alone: the whole budget may go to it."""
        outcomes: list[Outcome] = []
        await self.solve_all([(position, example)], outcomes.append)
        return outcomes[0]

    async def solve_all(
        self,
        todo: Sequence[tuple[int, Example]],
        handle: Callable[[Outcome], None],
        note: Callable[[str], None] | None = None,
    ) -> None:
        """Answer the questions ``todo`` (dataset position, example) together; ``handle``
        gets each one's outcome in the round it leaves, ``note`` a line after each round."""
        assert self.model is not None
        spec = self.plan.spec
        extract = self.spec.extractor()
        questions = [
            (position, Question(ex, self.spec.prompt(ex), self.spec.verifier(ex), extract))
            for position, ex in todo
        ]
        allocation = AdaptiveAllocation(
            self.model,
            budget=None,  # the run's ledger, entered below, is the budget
            batch=spec.param("batch"),
            max_n=spec.param("max_n"),
            threshold=spec.param("threshold"),
            rule=spec.param("rule"),
            params=self.plan.params,
            extract=extract,
        )
        rounds = left = 0

        async def leave(finished: Sequence[tuple[int, Result]]) -> None:
            nonlocal rounds, left
            outcomes: list[Outcome | None] = [None] * len(finished)

            async def one(k: int, result: Result) -> None:
                position, question = questions[finished[k][0]]
                outcomes[k] = await _outcome(question, position, result)

            async with anyio.create_task_group() as tg:
                for k, (_, result) in enumerate(finished):
                    tg.start_soon(one, k, result)
            for outcome in outcomes:
                assert outcome is not None
                handle(outcome)
            rounds, left = rounds + 1, left + len(finished)
            if note is not None:
                note(f"round {rounds}: {left} of {len(questions)} questions done")

        with run_scope(self.ledger, trace=False):
            await allocation.run([q.prompt for _, q in questions], on_round=leave)


async def _outcome(question: Question, position: int, result: Result) -> Outcome:
    """What to do with one question's final result: store it judged, or, with no sample at
    all, leave it for a rerun (the budget ran out: ``incomplete``; a provider: ``failed``)."""
    example = question.example
    if not result.candidates:
        error = "; ".join(result.errors) or str(result.stopped_by)
        if result.stopped_by == "budget":
            return Outcome(example.id, "incomplete", result.usage, error=error)
        return Outcome(example.id, "failed", result.usage, error=f"line {example.line}: {error}")
    with run_scope(None, trace=False) as grading:
        return await judged_outcome(
            question, position, result, lambda: result.usage + grading.usage.snapshot()
        )
