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

import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import anyio

from ttc.errors import (
    BudgetExceeded,
    ConfigError,
    GenerationError,
    ProviderError,
    TTCError,
)
from ttc.eval.datasets import Dataset, DatasetSpec, Example
from ttc.eval.report import format_cost
from ttc.eval.solver import Question, Solver
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.runtime.budget import Budget, Charge, Ledger
from ttc.runtime.context import run_scope
from ttc.runtime.model import Model
from ttc.strategies.base import Strategy
from ttc.types import Result, Usage

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "EvalLedger",
    "EvalSummary",
    "Outcome",
    "default_run_name",
    "evaluate",
    "fails_every_question",
    "solve_question",
]


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
            if exc.result is None or _run_budget_spent(ledger, strategy_budget=own):
                return Outcome(example.id, "incomplete", scope.usage.snapshot(), error=str(exc))
            result = exc.result
        except (TTCError, ValueError) as exc:
            # This question's failure: a provider's error, or text it cannot take (a lone
            # surrogate is a UnicodeError, a ValueError). Other exceptions are bugs: they end
            # the run, with what was stored kept.
            fatal = fails_every_question(exc)
            error = _failure(example, exc)
            return Outcome(example.id, "failed", scope.usage.snapshot(), error=error, fatal=fatal)
        if result.stopped_by == "budget" and _run_budget_spent(
            ledger, strategy_budget=strategy is not None and strategy.budget is not None
        ):
            error = "; ".join(result.errors) or "budget"
            return Outcome(example.id, "incomplete", scope.usage.snapshot(), error=error)
        try:
            correct = await _judge(result, question)
        except (TTCError, ValueError) as exc:
            error = _failure(example, exc, "grading failed: ")
            return Outcome(example.id, "failed", scope.usage.snapshot(), error=error)
        usage = scope.usage.snapshot()  # the strategy's, and any calls its grading made
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
    return Outcome(example.id, "done", usage, record=record)


def _run_budget_spent(ledger: EvalLedger | None, *, strategy_budget: bool) -> bool:
    """Whether a budget stop came from a budget of the whole run (the evaluation's, or a
    model's own) rather than from the strategy's per-question budget."""
    if ledger is not None:
        left = ledger.remaining_seconds()
        if ledger.exhausted is not None or (left is not None and left <= 0):
            return True
    return not strategy_budget


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


Solve = Callable[[int, Example], Awaitable[Outcome]]


class _LocalExecutor:
    """Questions answered in this process, on one model."""

    def __init__(self, solver: Solver, spec: DatasetSpec, ledger: EvalLedger | None) -> None:
        self.solver = solver
        self.spec = spec
        self.ledger = ledger
        self.model: Model | None = None
        self.owned = False

    async def __aenter__(self) -> _LocalExecutor:
        self.model, self.owned = self.solver.build_model()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.model is not None and self.owned:
            with anyio.CancelScope(shield=True):
                await self.model.aclose()

    in_process = True

    async def solve(self, position: int, example: Example) -> Outcome:
        assert self.model is not None
        return await solve_question(
            self.model, self.solver, self.spec, example, position, self.ledger
        )

    def exhausted(self) -> bool:
        return self.ledger is not None and self.ledger.exhausted is not None


async def evaluate(
    dataset: Dataset,
    solver: Solver,
    out: str | Path,
    *,
    run: str | None = None,
    concurrency: int = 4,
    budget: Budget | None = None,
    resume: bool = True,
    progress: bool | Console | None = None,
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
            call's wall time.
        resume: skip questions already stored under this run's name (default). ``False``
            deletes the run's stored questions first.
        progress: a rich ``Console`` for a live display; ``True`` for one on stderr (a line
            per question when stderr is not a terminal); ``None``/``False`` for none.
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
    config = {"dataset": dataset.name, "format": dataset.spec.name, **dict(solver.config)}
    name = run or default_run_name(dataset, config)
    started = time.perf_counter()
    with ResultsStore(out, check=True) as store:
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
        display = _Display.create(progress, summary)
        if ray is not None and ray is not False:
            from ttc.eval.ray_runner import RayExecutor

            executor: Any = RayExecutor(
                solver,
                dataset.spec,
                budget=budget,
                spent=store.usage(name),
                address=None if ray is True else str(ray),
                workers=workers,
                concurrency=concurrency,
            )
        else:
            executor = _LocalExecutor(solver, dataset.spec, ledger)
        # Until the run ends, "stopped by nothing" with questions missing reads as interrupted.
        store.set_progress(name, len(dataset))
        try:
            with display:
                await _drive(executor, todo, concurrency, store, summary, display)
        finally:
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
    executor: Any,
    todo: list[tuple[int, Example]],
    concurrency: int,
    store: ResultsStore,
    summary: EvalSummary,
    display: _Display,
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
                for _ in range(min(concurrency, len(todo))):
                    tg.start_soon(worker, tg.cancel_scope)
            outer.cancel_scope.cancel()
    if error is not None:
        # Raised as is, not in an exception group; what was stored stays stored.
        raise error
    if executor.exhausted() and summary.stored < summary.total and summary.stopped_by is None:
        summary.stopped_by = "budget"


class _Display:
    """The progress display: a rich bar (questions, accuracy, tokens, USD, ETA) on a
    terminal, a line per question otherwise (the log of a run in the background)."""

    def __init__(
        self, console: Console | None, stream: IO[str] | None, summary: EvalSummary
    ) -> None:
        self.console = console
        self.stream = stream
        self.summary = summary
        self.start = time.monotonic()
        self.first_done = summary.stored
        self._progress: Any = None
        self._task: Any = None

    @classmethod
    def create(cls, progress: object, summary: EvalSummary) -> _Display:
        if progress is None or progress is False:
            return cls(None, None, summary)
        from rich.console import Console

        console = progress if isinstance(progress, Console) else Console(stderr=True)
        if console.is_terminal:
            return cls(console, None, summary)
        return cls(None, console.file, summary)

    @property
    def animated(self) -> bool:
        """Whether the display redraws (a terminal), so live token counts are worth it."""
        return self.console is not None

    def __enter__(self) -> _Display:
        s = self.summary
        if self.console is not None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("acc {task.fields[accuracy]}"),
                TextColumn("{task.fields[tokens]} tok"),
                TextColumn("{task.fields[usd]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                s.run, total=s.total, completed=s.stored, **self._fields(Usage())
            )
        elif self.stream is not None:
            self._line(
                f"{s.run}: {s.total} questions, {s.stored} already stored, "
                f"{s.total - s.stored} to do"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _fields(self, usage: Usage) -> dict[str, str]:
        s = self.summary
        return {
            "accuracy": f"{s.correct / s.stored:.3f}" if s.stored else "-",
            "tokens": f"{usage.total_tokens:,}",
            "usd": format_cost(usage.cost_usd, usage.unpriced_models),
        }

    def refresh(self, usage: Usage) -> None:
        """New token and USD counts between questions."""
        if self._progress is not None:
            self._progress.update(self._task, **self._fields(usage))

    def update(self, usage: Usage) -> None:
        """A question finished (or failed)."""
        s = self.summary
        if self._progress is not None:
            self._progress.update(self._task, completed=s.stored, **self._fields(usage))
        elif self.stream is not None:
            elapsed = time.monotonic() - self.start
            new = s.stored - self.first_done
            eta = _duration(elapsed / new * (s.total - s.stored)) if new else "?"
            fields = self._fields(usage)
            failed = f" · {len(s.failed)} failed" if s.failed else ""
            self._line(
                f"[{s.stored}/{s.total}] acc {fields['accuracy']} · {fields['tokens']} tokens"
                f" · {fields['usd']} · {_duration(elapsed)} elapsed · ETA {eta}{failed}"
            )

    def _line(self, text: str) -> None:
        assert self.stream is not None
        self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
