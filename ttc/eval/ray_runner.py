"""Evaluation on a Ray cluster: questions spread over worker actors, one ledger for the budget.

``evaluate(..., ray=True)`` (or ``ttc eval --ray [ADDRESS]``) uses ``RayExecutor`` in place of
the local one; everything else is the same: the driver stores each outcome in the same SQLite
store the moment it arrives (so resume and ``kill -9`` behave as in a local run), and a worker
answers a question with the same ``ttc.eval.solver.solve_question`` a local run uses, so stored
results are identical in form.

Budgets across workers: one ``LedgerActor`` holds the run's ``EvalLedger`` (started from what
the stored questions cost). Each worker's questions run in a run scope on a ``RemoteLedger``,
a remote ledger (``ttc.runtime.budget.Ledger.remote``): the runtime reserves a request's worst
case there (the actor waits while other workers' reservations block it, exactly as a local
ledger does) before sending, and settles to the real usage after (a message that does not
wait). So the spend never passes a limit across the cluster either. A model's own budget
(``Model(budget=...)``) is kept by each worker's own model, so on Ray it holds per worker:
give cluster-wide limits as the run's budget. Ray is imported only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import time
import uuid
from typing import Any

from ttc.errors import BudgetExceeded, MissingDependencyError, TTCError
from ttc.eval.datasets import DatasetSpec, Example
from ttc.eval.solver import EvalLedger, Outcome, Solver, solve_question
from ttc.runtime.budget import Budget, Charge, Reservation, reserve_when_affordable
from ttc.runtime.model import Model
from ttc.types import Usage

__all__ = ["LedgerActor", "RayExecutor", "RemoteLedger", "Worker"]

Refusal = tuple[str, float, float, float, str]


def _ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise MissingDependencyError("ray", "ray", "Evaluation on a Ray cluster") from None


class LedgerActor:
    """The run's one ledger, as a Ray actor (async: reservations that must wait for others to
    settle wait on its event loop without blocking other calls)."""

    def __init__(self, budget: Budget, spent: Usage) -> None:
        self.ledger = EvalLedger(budget, spent)
        self.ledger.start_clock()
        self.live: dict[str, Reservation] = {}
        self.abandoned: set[str] = set()

    async def elapsed(self) -> float:
        """Seconds since the run's clock started (workers align their deadlines to it)."""
        started = self.ledger.started_at
        return 0.0 if started is None else time.monotonic() - started

    async def reserve(self, rid: str, charge: Charge) -> Refusal | None:
        """Reserve ``charge`` under ``rid``; ``None`` on success, else the refusal."""
        if rid in self.abandoned:
            self.abandoned.discard(rid)
            return None
        try:
            reservation = await reserve_when_affordable([self.ledger], charge)
        except BudgetExceeded as exc:
            return (exc.limit, exc.limit_value, exc.spent, exc.needed, exc.scope)
        if rid in self.abandoned:  # the worker gave up while this waited
            self.abandoned.discard(rid)
            reservation.settle(Charge())
            return None
        self.live[rid] = reservation
        return None

    async def release(self, rid: str, actual: Charge) -> None:
        """Settle the reservation ``rid`` to what the request really cost."""
        reservation = self.live.pop(rid, None)
        if reservation is not None:
            reservation.settle(actual)

    async def abandon(self, rid: str) -> None:
        """The worker stopped waiting for ``rid``: undo it, now or when it completes."""
        reservation = self.live.pop(rid, None)
        if reservation is not None:
            reservation.settle(Charge())
        else:
            self.abandoned.add(rid)

    async def spent(self) -> tuple[int, float, int]:
        """Tokens, USD and requests settled so far (the stored questions' included)."""
        return self.ledger.spent_tokens, self.ledger.spent_usd, self.ledger.spent_requests


class RemoteLedger(EvalLedger):
    """A worker's view of the ``LedgerActor``: the runtime reserves and settles there.

    Its local state counts only this worker's requests; it enforces the ``seconds`` limit
    on the run's clock, so requests in flight at the deadline are cancelled here too.
    """

    remote = True

    def __init__(self, actor: Any, budget: Budget, elapsed: float) -> None:
        super().__init__(budget)
        self.actor = actor
        self.started_at = time.monotonic() - elapsed

    async def acquire(self, charge: Charge) -> object:
        rid = uuid.uuid4().hex
        try:
            refusal = await self.actor.reserve.remote(rid, charge)
        except BaseException:
            self.actor.abandon.remote(rid)
            raise
        if refusal is not None:
            exc = BudgetExceeded(*refusal)
            exc.ledger = self
            if self.exhausted is None:
                self.exhausted = exc
            raise exc
        return rid

    def release(self, handle: object, actual: Charge) -> None:
        self.actor.release.remote(handle, actual)


class Worker:
    """A Ray actor that answers questions with its own model (built once, in ``setup``)."""

    def __init__(
        self, solver: Solver, spec: DatasetSpec, ledger: Any | None, budget: Budget | None
    ) -> None:
        self.solver = solver
        self.spec = spec
        self.ledger_actor = ledger
        self.budget = budget
        self.model: Model | None = None
        self.owned = False
        self.ledger: RemoteLedger | None = None

    async def setup(self) -> None:
        """Build the model and join the run's ledger."""
        self.model, self.owned = self.solver.build_model()
        if self.ledger_actor is not None and self.budget is not None:
            elapsed = await self.ledger_actor.elapsed.remote()
            self.ledger = RemoteLedger(self.ledger_actor, self.budget, elapsed)

    async def solve(self, position: int, example: Example) -> Outcome:
        """``solve_question`` for one question, charging the run's ledger."""
        assert self.model is not None, "setup() first"
        return await solve_question(
            self.model, self.solver, self.spec, example, position, self.ledger
        )

    async def close(self) -> None:
        """Release the model's connections."""
        if self.model is not None and self.owned:
            await self.model.aclose()


class RayExecutor:
    """Answers questions on Ray worker actors: a ``ttc.eval.executor.Executor`` that
    ``ttc.eval.runner.evaluate`` uses with ``ray=``.

    Args:
        solver: must build its model from a function (each worker builds its own).
        spec: the dataset's spec (prompts and verifiers).
        budget: the run's budget, kept by one ``LedgerActor``; ``spent`` is what the stored
            questions already cost.
        address: a cluster's address; ``None`` starts a local instance (``ray.init()``),
            unless Ray is already initialized in this process.
        workers: worker actors (default: one a CPU of the cluster).
        concurrency: questions in flight over all workers.
    """

    in_process = False

    def __init__(
        self,
        solver: Solver,
        spec: DatasetSpec,
        *,
        budget: Budget | None,
        spent: Usage,
        address: str | None,
        workers: int | None,
        concurrency: int,
    ) -> None:
        if isinstance(solver.model, Model):
            raise TTCError(
                "Ray needs Solver(model=<a function that builds the model>), e.g. "
                "functools.partial(ttc.adapters.resolve_model, 'embedded'): each worker "
                "builds its own, and a model object cannot travel to another process"
            )
        self.solver = solver
        self.spec = spec
        self.budget = budget
        self.spent = spent
        self.address = address
        self.workers = workers
        self.concurrency = concurrency
        self.ray: Any = None
        self.started_ray = False
        self.ledger: Any = None
        self.actors: list[Any] = []
        self.load: dict[int, int] = {}

    def exhausted(self) -> bool:
        """The driver learns of a spent budget from incomplete outcomes."""
        return False

    async def __aenter__(self) -> RayExecutor:
        ray = self.ray = _ray()
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
            )
            self.started_ray = True
        try:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            count = self.workers or max(1, int(cpus))
            if self.budget is not None:
                ledger_cls = ray.remote(LedgerActor)
                self.ledger = ledger_cls.options(num_cpus=0).remote(self.budget, self.spent)
            worker_cls = ray.remote(Worker)
            per_worker = max(1, math.ceil(self.concurrency / count))
            options = {"num_cpus": min(1.0, cpus / count), "max_concurrency": per_worker}
            self.actors = [
                worker_cls.options(**options).remote(
                    self.solver, self.spec, self.ledger, self.budget
                )
                for _ in range(count)
            ]
            self.load = dict.fromkeys(range(count), 0)
            await asyncio.gather(*(actor.setup.remote() for actor in self.actors))
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        ray = self.ray
        if ray is None:
            return
        if self.actors:
            closing = [actor.close.remote() for actor in self.actors]
            # A dead worker has nothing to close; a stuck one is killed below anyway.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*closing), timeout=10)
        for actor in [*self.actors, self.ledger]:
            if actor is not None:
                ray.kill(actor)
        self.actors, self.ledger = [], None
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False

    async def solve(self, position: int, example: Example) -> Outcome:
        """Send the question to the least busy worker and wait for its outcome. A worker that
        dies fails its questions (a rerun tries them again) and gets no more."""
        if not self.load:
            raise TTCError("every Ray worker of this evaluation has died")
        index = min(self.load, key=lambda i: self.load[i])
        self.load[index] += 1
        ref = self.actors[index].solve.remote(position, example)
        try:
            outcome: Outcome = await ref
        except asyncio.CancelledError:
            self.ray.cancel(ref)
            raise
        except self.ray.exceptions.RayActorError as exc:
            self.load.pop(index, None)
            return Outcome(example.id, "failed", Usage(), error=f"Ray worker died: {exc}")
        finally:
            if index in self.load:
                self.load[index] -= 1
        return outcome
