"""Collecting step labels over a dataset: resumable through the evaluation store, with progress.

Each labelled question is written to the results folder the moment it finishes, in the same
SQLite store ``ttc eval`` uses: the labels in a ``labels`` table of their own, and an ordinary
question row (its solutions as candidates with their verdicts) that marks the question done,
so a rerun of the same collection skips it, and ``ttc report`` shows the sampled solutions'
pass@k. The labels row is written first: a process killed between the two writes leaves a
question that is simply labelled again.

A budget covers the whole collection, stored questions included (as in ``ttc eval``). A
question the budget stops is not stored; the collection ends, and a rerun with a larger budget
continues.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import anyio

from ttc.errors import BudgetExceeded, ConfigError, TTCError
from ttc.eval.datasets import Dataset, Example
from ttc.eval.solver import EvalLedger, fails_every_question
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.labels.estimate import LabelledQuestion, StepLabeller
from ttc.runtime.budget import Budget
from ttc.runtime.context import run_scope
from ttc.types import Candidate, Result, Usage

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["CollectSummary", "LabelStore", "collect_labels"]

_LABELS_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    run TEXT NOT NULL,
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (run, id)
);
"""


class LabelStore(ResultsStore):
    """The results store with a ``labels`` table: one row a labelled question of a run."""

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(path, **options)
        if not self.readonly:
            self._rows(_LABELS_SCHEMA)

    def __enter__(self) -> LabelStore:
        return self

    def open_run(self, name: str, config: Mapping[str, Any], *, resume: bool = True) -> int:
        stored = super().open_run(name, config, resume=resume)
        if stored == 0 and not self.readonly:  # labels of questions never marked done go too
            self._rows("DELETE FROM labels WHERE run = ?", (name,))
        return stored

    def put_labels(self, run: str, labelled: LabelledQuestion) -> None:
        """Store a labelled question: its labels, then the question row that marks it done."""
        self._rows(
            "INSERT OR REPLACE INTO labels (run, id, position, record) VALUES (?, ?, ?, ?)",
            (run, labelled.id, labelled.position, labelled.model_dump_json()),
        )
        candidates = [
            Candidate(
                text=s.text,
                answer=s.answer,
                verified=s.correct,
                steps=[step.text for step in s.steps],
            )
            for s in labelled.solutions
        ]
        best = candidates[0] if candidates else None
        result = Result(
            answer=best.answer if best is not None else None,
            best=best,
            candidates=candidates,
            usage=labelled.usage,
        )
        self.put(
            run,
            QuestionRecord(
                id=labelled.id,
                position=labelled.position,
                question=labelled.question,
                reference=labelled.reference,
                level=labelled.level,
                fingerprint=labelled.fingerprint,
                correct=bool(best is not None and best.verified),
                result=result,
            ),
        )

    def labels(self, run: str) -> list[LabelledQuestion]:
        """Every labelled question of ``run`` that is marked done, in dataset order."""
        rows = self._rows(
            "SELECT l.record FROM labels l JOIN results r ON r.run = l.run AND r.id = l.id"
            " WHERE l.run = ? ORDER BY l.position, l.id",
            (run,),
        )
        return [LabelledQuestion.model_validate_json(r[0]) for r in rows]

    def label_runs(self) -> list[str]:
        """The runs of the folder that hold labels."""
        return [str(r[0]) for r in self._rows("SELECT DISTINCT run FROM labels ORDER BY run")]


@dataclass
class CollectSummary:
    """What a ``collect_labels`` call did: questions of the dataset (``total``), stored now
    (``stored``: this call's ``new`` and the ``skipped`` ones found stored), failed ones with
    their errors, and ``stopped_by`` (``"budget"``, or ``"error"`` for an error that fails
    every question). ``usage`` is this call's."""

    run: str
    path: Path
    total: int
    stored: int = 0
    new: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    stopped_by: Literal["budget", "error"] | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    elapsed_s: float = 0.0


async def collect_labels(
    dataset: Dataset,
    labeller: StepLabeller,
    out: str | Path,
    *,
    run: str | None = None,
    config: Mapping[str, Any] | None = None,
    concurrency: int = 2,
    budget: Budget | None = None,
    resume: bool = True,
    progress: bool | Console | None = None,
) -> CollectSummary:
    """Label every question of ``dataset`` with ``labeller`` into the store at ``out``.

    Args:
        dataset: from ``load_dataset`` (its template and verifier are used).
        labeller: the model, solutions, rollouts and method.
        out: the results folder (``out/results.sqlite``).
        run: the run's name (default ``<dataset>-labels-<method>-s<solutions>-k<rollouts>``).
        config: more settings that identify the run (model, temperature...); a resumed run
            must have the same.
        concurrency: questions in flight at once (each sends many requests; the model's own
            concurrency limit bounds those).
        budget: hard limits for the whole collection, stored questions included.
        resume: skip questions already stored under this run (default).
        progress: a rich ``Console`` (or ``True`` for stderr) for a line per question.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    settings = {
        "dataset": dataset.name,
        "format": dataset.spec.name,
        "task": "labels",
        "method": labeller.method,
        "solutions": labeller.solutions,
        "rollouts": labeller.rollouts,
        "delimiter": labeller.format.delimiter,
        **dict(config or {}),
    }
    name = run or (
        f"{dataset.name}-labels-{labeller.method}-s{labeller.solutions}-k{labeller.rollouts}"
    )
    started = time.perf_counter()
    stream = _stream(progress)
    with LabelStore(out, check=True) as store:
        store.open_run(name, settings, resume=resume)
        done = store.fingerprints(name)
        for example in dataset.examples:
            if example.id in done and done[example.id] != example.fingerprint:
                raise ConfigError(
                    f"run {name!r} in {store.folder} stored question {example.id!r} for a "
                    f"different question than line {example.line} of {dataset.path} has now: "
                    "use another --out or --name, or start over with --no-resume"
                )
        todo = [(i, ex) for i, ex in enumerate(dataset.examples) if ex.id not in done]
        summary = CollectSummary(name, store.path, len(dataset))
        summary.skipped = summary.stored = len(dataset) - len(todo)
        ledger = EvalLedger(budget, store.usage(name)) if budget is not None else None
        store.set_progress(name, len(dataset))
        _say(
            stream, f"{name}: {len(dataset)} questions, {summary.stored} stored, {len(todo)} to do"
        )
        pending = iter(todo)
        stop = False

        async def worker() -> None:
            nonlocal stop
            while not stop:
                item = next(pending, None)
                if item is None:
                    return
                position, example = item
                with run_scope(ledger, trace=False) as scope:
                    try:
                        labelled = await _label(labeller, dataset, example, position)
                    except BudgetExceeded as exc:
                        summary.stopped_by, summary.error = "budget", str(exc)
                        stop = True
                        return
                    except (TTCError, ValueError) as exc:
                        error = f"line {example.line}: {type(exc).__name__}: {exc}"
                        store.put_failure(name, example.id, error)
                        summary.failed[example.id] = error
                        _say(stream, f"[{summary.stored}/{summary.total}] {example.id}: {error}")
                        if fails_every_question(exc):
                            summary.stopped_by, summary.error = "error", error
                            stop = True
                        continue
                    finally:
                        summary.usage = summary.usage + scope.usage.snapshot()
                    labelled.usage = scope.usage.snapshot()
                store.put_labels(name, labelled)
                summary.stored += 1
                summary.new += 1
                _say(stream, _progress_line(summary, labelled, started))

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(concurrency, len(todo))):
                    tg.start_soon(worker)
        finally:
            summary.elapsed_s = time.perf_counter() - started
            store.set_progress(name, len(dataset), summary.stopped_by, summary.error)
    return summary


async def _label(
    labeller: StepLabeller, dataset: Dataset, example: Example, position: int
) -> LabelledQuestion:
    prompt = dataset.prompt(example)
    solutions = await labeller.label(prompt, dataset.verifier(example), dataset.spec.extractor())
    return LabelledQuestion(
        id=example.id,
        position=position,
        question=example.question,
        prompt=prompt,
        reference=example.reference,
        level=example.level,
        fingerprint=example.fingerprint,
        method=labeller.method,
        rollouts_per_step=labeller.rollouts,
        solutions=solutions,
    )


def _stream(progress: object) -> IO[str] | None:
    if progress is None or progress is False:
        return None
    if progress is True:
        import sys

        return sys.stderr
    return getattr(progress, "file", None)


def _say(stream: IO[str] | None, line: str) -> None:
    if stream is not None:
        stream.write(line + "\n")
        stream.flush()


def _progress_line(summary: CollectSummary, labelled: LabelledQuestion, started: float) -> str:
    steps = [s for sol in labelled.solutions for s in sol.steps if s.hard is not None]
    good = sum(1 for s in steps if s.hard)
    rollouts = sum(sol.rollouts for sol in labelled.solutions)
    correct = sum(sol.correct for sol in labelled.solutions)
    elapsed = time.perf_counter() - started
    left = summary.total - summary.stored
    eta = f"{elapsed / summary.new * left:.0f}s" if summary.new else "?"
    return (
        f"[{summary.stored}/{summary.total}] {labelled.id}: {len(labelled.solutions)} solutions "
        f"({correct} correct), {len(steps)} labelled steps ({good} good), {rollouts} rollouts, "
        f"{summary.usage.total_tokens:,} tokens · {elapsed:.0f}s elapsed · ETA {eta}"
    )
