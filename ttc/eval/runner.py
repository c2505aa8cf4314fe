"""Run a strategy over a dataset: bounded concurrency, live progress, one budget for the whole
run, and resume.

Every finished question goes to the results store at once (``ttc.eval.store``); a rerun with
the same run name skips what is stored, so Ctrl-C, a crash or ``kill -9`` lose at most the
questions in flight. Each question runs in its own run scope on one shared ``EvalLedger``, so
every call of every question (samples, scorers, judges) charges the run's budget; the ledger
starts from what the stored questions already cost, so a budget holds across resumes too.

When the run's budget cannot pay for more, the questions it stopped are not stored (they would
be judged on fewer samples than asked): the run ends, and a rerun with a larger budget
continues. After each question the verifier judges every candidate the strategy left unjudged,
so that metrics (pass@k, votes at every k) need no model call later.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import anyio

from ttc.errors import ConfigError
from ttc.eval.allocation import AllocationExecutor, answers_together
from ttc.eval.datasets import Dataset, Example
from ttc.eval.executor import Executor, LocalExecutor
from ttc.eval.solver import EvalLedger, Outcome, Solver
from ttc.eval.store import ResultsStore
from ttc.runtime.budget import Budget
from ttc.runtime.context import run_scope
from ttc.strategies.registry import upgrade_config
from ttc.types import Usage

__all__ = ["EvalSummary", "Progress", "default_run_name", "evaluate"]


@dataclass
class EvalSummary:
    """What an ``evaluate`` call did.

    ``stored`` counts the run's questions now in the store, ``new`` those this call added,
    ``skipped`` those it found already stored; ``stopped_by`` is ``"budget"`` when the run's
    budget ended it early (``budget_error`` says which limit), ``"error"`` when an error that
    fails every question did (``fatal_error``: a wrong key, model or URL). ``usage`` is this
    call's.
    """

    run: str
    path: Path
    total: int
    stored: int
    new: int
    skipped: int
    failed: dict[str, str] = field(default_factory=dict)
    incomplete: int = 0
    stopped_by: Literal["budget", "error"] | None = None
    budget_error: str | None = None
    fatal_error: str | None = None
    correct: int = 0
    usage: Usage = field(default_factory=Usage)
    elapsed_s: float = 0.0

    @property
    def accuracy(self) -> float | None:
        """Fraction of the stored questions whose selected answer is correct."""
        return self.correct / self.stored if self.stored else None

    @property
    def finished(self) -> bool:
        """Whether every question of the dataset is stored."""
        return self.stored >= self.total


def default_run_name(dataset: Dataset, config: Mapping[str, Any]) -> str:
    """``<dataset>-<strategy>-n<n>-<model>`` from what the config has, as a safe slug."""
    parts = [dataset.name]
    if "strategy" in config:
        parts.append(str(config["strategy"]))
    if "n" in config:
        parts.append(f"n{config['n']}")
    if "model" in config:
        parts.append(str(config["model"]))
    if len(parts) == 1:
        parts.append("run")
    slug = re.sub(r"[^a-z0-9._-]+", "-", "-".join(parts).lower()).strip("-")
    return slug or "run"


@runtime_checkable
class Progress(Protocol):
    """What ``evaluate`` tells a progress display as the run goes (``ttc eval`` draws one:
    ``ttc.cli.progress.EvalProgress``)."""

    @property
    def animated(self) -> bool:
        """Whether the display redraws, so that live token counts are worth sending."""
        ...

    def start(self, summary: EvalSummary) -> None:
        """The run starts; ``summary`` is updated in place as questions finish."""
        ...

    def update(self, usage: Usage) -> None:
        """A question finished (or failed); ``usage`` is the run's so far."""
        ...

    def refresh(self, usage: Usage) -> None:
        """New token and USD counts between questions."""
        ...

    def note(self, text: str) -> None:
        """A line to show (an experiment's next cell)."""
        ...

    def stop(self) -> None:
        """The run ended (or failed)."""
        ...


class _Silent:
    """No display."""

    animated = False

    def start(self, summary: EvalSummary) -> None:
        pass

    def update(self, usage: Usage) -> None:
        pass

    def refresh(self, usage: Usage) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


async def evaluate(
    dataset: Dataset,
    solver: Solver,
    out: str | Path,
    *,
    run: str | None = None,
    concurrency: int = 4,
    budget: Budget | None = None,
    resume: bool = True,
    progress: Progress | None = None,
    ray: bool | str | None = None,
    workers: int | None = None,
) -> EvalSummary:
    """Run ``solver`` on every question of ``dataset`` and store each result in ``out``.

    Args:
        dataset: from ``load_dataset``.
        solver: the model and the strategy per question (``Solver``).
        out: the results folder (``out/results.sqlite``), created if missing.
        run: the run's name in the folder (default from the dataset and ``solver.config``).
        concurrency: questions in flight at once (each may send many requests; the model's
            own ``max_concurrency`` still bounds the requests).
        budget: hard limits for the whole run, across every question and every model call;
            what the run's stored questions cost counts against it. ``seconds`` counts this
            call's wall time. Required by ``adaptive-allocation`` (``named_strategy``), which
            spreads it over all the questions at once (``ttc.eval.allocation``; then
            ``concurrency`` does not apply).
        resume: skip questions already stored under this run's name (default). ``False``
            deletes the run's stored questions first.
        progress: a ``Progress`` display, e.g. ``ttc.cli.progress.EvalProgress()`` (a live bar
            on a terminal, a line per question otherwise); ``None`` for none.
        ray: run the questions on a Ray cluster: ``True`` (a local one started with
            ``ray.init()``, or the one already initialized) or a cluster address.
        workers: Ray workers (default: one a CPU of the cluster).

    Returns an ``EvalSummary``. A question that fails (a provider error, text that cannot be
    sent) is noted in the store with its line and tried again on a rerun; the run continues,
    unless the error will fail every question (``fails_every_question``: a wrong key, model or
    URL, a server that refuses connections), which stops it at once (``stopped_by="error"``).
    Cancelling (Ctrl-C) keeps every question finished so far.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    if progress is not None and not isinstance(progress, Progress):
        raise ConfigError(
            "progress: pass a display such as ttc.cli.progress.EvalProgress() (a live bar on a "
            f"terminal, a line per question otherwise), or None; got {progress!r}"
        )
    # adaptive-allocation: the questions share the budget, so they are answered together.
    together = answers_together(solver, budget, ray)
    config = {"dataset": dataset.name, "format": dataset.spec.name, **dict(solver.config)}
    name = run or default_run_name(dataset, config)
    started = time.perf_counter()
    with ResultsStore(out, check=True) as store:
        if resume:  # a run stored before the registry listed some parameter
            store.upgrade_run(name, config, upgrade_config)
        store.open_run(name, config, resume=resume)
        done = store.fingerprints(name)
        _check_same_questions(store, name, dataset, done)
        todo = [(i, ex) for i, ex in enumerate(dataset.examples) if ex.id not in done]
        # Counts are over this dataset's questions (a run may hold more, e.g. before --limit).
        verdicts = store.verdicts(name)
        here = [ex.id for ex in dataset.examples if ex.id in done]
        # The budget covers the whole run: everything stored counts.
        ledger = EvalLedger(budget, store.usage(name)) if budget is not None else None
        summary = EvalSummary(
            run=name,
            path=store.path,
            total=len(dataset),
            stored=len(here),
            new=0,
            skipped=len(here),
            correct=sum(1 for qid in here if verdicts[qid]),
        )
        display: Progress = progress if progress is not None else _Silent()
        executor: Executor
        if together:
            executor = AllocationExecutor(solver, dataset.spec, ledger)
        elif ray is not None and ray is not False:
            from ttc.eval.ray_runner import RayExecutor

            executor = RayExecutor(
                solver,
                dataset.spec,
                budget=budget,
                spent=store.usage(name),
                address=None if ray is True else str(ray),
                workers=workers,
                concurrency=concurrency,
            )
        else:
            executor = LocalExecutor(solver, dataset.spec, ledger)
        # Until the run ends, "stopped by nothing" with questions missing reads as interrupted.
        store.set_progress(name, len(dataset))
        display.start(summary)
        try:
            await _drive(executor, todo, concurrency, store, summary, display)
        finally:
            display.stop()
            summary.elapsed_s = time.perf_counter() - started
        note = summary.fatal_error if summary.stopped_by == "error" else summary.budget_error
        store.set_progress(name, len(dataset), summary.stopped_by, note)
    return summary


def _check_same_questions(
    store: ResultsStore, run: str, dataset: Dataset, done: Mapping[str, str]
) -> None:
    """A resumed run must be over the same questions: a stored id whose question changed
    would mix results of two datasets."""
    for example in dataset.examples:
        stored = done.get(example.id)
        if stored is not None and stored != example.fingerprint:
            raise ConfigError(
                f"run {run!r} in {store.folder} stored question {example.id!r} for a different "
                f"question or reference than line {example.line} of {dataset.path} has now: "
                "use another --out or --name, or start over with --no-resume"
            )


async def _drive(
    executor: Executor,
    todo: list[tuple[int, Example]],
    concurrency: int,
    store: ResultsStore,
    summary: EvalSummary,
    display: Progress,
) -> None:
    """Pull questions with ``concurrency`` workers; store each outcome as it comes."""
    if not todo:
        return
    pending: Iterator[tuple[int, Example]] = iter(todo)
    stop = False

    def handle(outcome: Outcome) -> None:
        nonlocal stop
        summary.usage = summary.usage + outcome.usage
        if outcome.status == "done":
            assert outcome.record is not None
            store.put(summary.run, outcome.record)
            summary.stored += 1
            summary.new += 1
            summary.correct += int(outcome.record.correct)
            summary.failed.pop(outcome.example_id, None)
        elif outcome.status == "failed":
            error = outcome.error or "failed"
            store.put_failure(summary.run, outcome.example_id, error)
            summary.failed[outcome.example_id] = error
            if outcome.fatal and summary.fatal_error is None:
                summary.stopped_by, summary.fatal_error = "error", error
                stop = True
        else:
            summary.incomplete += 1
            summary.stopped_by = summary.stopped_by or "budget"
            summary.budget_error = summary.budget_error or outcome.error
            stop = True
        display.update(usage())

    error: Exception | None = None

    async def worker(scope: anyio.CancelScope) -> None:
        nonlocal error
        while not stop and not executor.exhausted():
            item = next(pending, None)
            if item is None:
                return
            try:
                handle(await executor.solve(*item))
            except Exception as exc:  # a bug or a damaged store: end the run with it
                error = error or exc
                scope.cancel()
                return

    async def all_at_once(executor: AllocationExecutor, scope: anyio.CancelScope) -> None:
        nonlocal error
        try:
            await executor.solve_all(todo, handle, display.note)
        except Exception as exc:  # as in worker
            error = error or exc
            scope.cancel()

    async def tick() -> None:
        while True:
            await anyio.sleep(0.5)
            display.refresh(usage())

    # Requests made in this process are counted live; a Ray worker's count when its
    # question finishes.
    with run_scope(None, trace=False) as here:

        def usage() -> Usage:
            return here.usage.snapshot() if executor.in_process else summary.usage

        async with executor, anyio.create_task_group() as outer:
            if display.animated:
                outer.start_soon(tick)
            async with anyio.create_task_group() as tg:
                if isinstance(executor, AllocationExecutor):
                    tg.start_soon(all_at_once, executor, tg.cancel_scope)
                else:
                    for _ in range(min(concurrency, len(todo))):
                        tg.start_soon(worker, tg.cancel_scope)
            outer.cancel_scope.cancel()
    if error is not None:
        # Raised as is, not in an exception group; what was stored stays stored.
        raise error
    if executor.exhausted() and summary.stored < summary.total and summary.stopped_by is None:
        summary.stopped_by = "budget"
