"""The live progress displays of the commands: ``ttc run``'s (samples, tokens, time) and
``ttc eval``'s (questions, accuracy, tokens, USD, ETA; a line per question when not on a
terminal), which ``ttc.eval.runner.evaluate`` drives through its ``Progress`` protocol."""

from __future__ import annotations

import math
import time
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console

from ttc.eval.report import format_cost
from ttc.types import Usage

if TYPE_CHECKING:
    from ttc.eval.runner import EvalSummary
    from ttc.runtime.model import Model
    from ttc.strategies.base import Strategy
    from ttc.types import Result

__all__ = ["EvalProgress", "run_with_progress"]


async def run_with_progress(
    strategy: Strategy, question: str, model: Model, n: int, console: Console | None
) -> Result:
    """``strategy.run(question)`` with a live display on ``console`` (none when ``None``):
    samples done (requests settled, where each sample is its own request), tokens, time."""
    import anyio
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    if console is None:
        return await strategy.run(question)
    per_sample = not model.capabilities.native_n
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tokens]} tokens"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    start = model.usage
    task = progress.add_task(f"sampling {model.name}", total=n if per_sample else None, tokens=0)
    result: Result | None = None

    def refresh() -> None:
        now = model.usage
        done = now.requests - start.requests
        tokens = now.total_tokens - start.total_tokens
        progress.update(task, completed=min(done, n) if per_sample else 0, tokens=tokens)

    async def watch() -> None:
        while True:
            refresh()
            await anyio.sleep(0.1)

    with progress:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                result = await strategy.run(question)
            finally:
                tg.cancel_scope.cancel()
        refresh()
    assert result is not None
    return result


class EvalProgress:
    """``ttc eval``'s progress display (a ``ttc.eval.runner.Progress``): a rich bar
    (questions, accuracy, tokens, USD, ETA) on a terminal, a line per question otherwise (the
    log of a run in the background).

    Args:
        console: where to draw (default: stderr).
    """

    def __init__(self, console: Console | None = None) -> None:
        console = console or Console(stderr=True)
        self.console: Console | None = console if console.is_terminal else None
        self.stream: IO[str] | None = None if console.is_terminal else console.file
        self.summary: EvalSummary | None = None
        self.started = time.monotonic()
        self.first_done = 0
        self._progress: Any = None
        self._task: Any = None

    @property
    def animated(self) -> bool:
        """Whether the display redraws (a terminal), so live token counts are worth it."""
        return self.console is not None

    def note(self, text: str) -> None:
        """A line above the display (an experiment's next cell)."""
        if self.console is not None:
            self.console.print(text, soft_wrap=True, markup=False)
        elif self.stream is not None:
            self._line(text)

    def start(self, summary: EvalSummary) -> None:
        """A run starts: draw its bar, or write its first line."""
        self.summary = s = summary
        self.started = time.monotonic()
        self.first_done = summary.stored
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

    def stop(self) -> None:
        """The run ended: take the bar down."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _fields(self, usage: Usage) -> dict[str, str]:
        s = self.summary
        assert s is not None
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
        assert s is not None
        if self._progress is not None:
            self._progress.update(self._task, completed=s.stored, **self._fields(usage))
        elif self.stream is not None:
            elapsed = time.monotonic() - self.started
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
