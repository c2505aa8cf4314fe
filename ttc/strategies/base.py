"""What every strategy shares: the run scope, budgets, the sync entry point, drawing samples.

A strategy's ``run`` opens a run scope (its budget, usage and trace), calls the strategy's
``_run`` and fills in the accounting. Samples come from a *source*: a ``Model`` (n samples in
as few requests as the provider allows) or another ``Strategy`` (n runs of it, each giving its
best candidate), so strategies compose.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio

from ttc.errors import BudgetExceeded, ConfigError, GenerationError, TTCError
from ttc.runtime import tracing
from ttc.runtime.budget import Budget
from ttc.runtime.context import RunContext, current_run, run_scope
from ttc.runtime.model import Model
from ttc.runtime.sync import run_sync
from ttc.types import (
    BudgetStop,
    Candidate,
    Message,
    Prompt,
    Result,
    Samples,
    SamplingParams,
    StopReason,
)
from ttc.validation import check_instance, check_int

Extractor = Callable[[str], str | None]
OnCandidates = Callable[[list[Candidate]], Awaitable[None]]
OnBudget = Literal["return", "raise"]


class Strategy(ABC):
    """A way of spending inference on one question. ``await strategy.run(prompt)``.

    Args:
        budget: hard limits for each run (tokens, USD, requests, seconds); every call made
            during the run counts, the scorer's and judge's included.
        on_budget: ``"return"`` (default) returns the best result so far, with
            ``stopped_by="budget"``; ``"raise"`` raises ``BudgetExceeded`` instead.
        trace: keep a trace of every request on the result.
    """

    def __init__(
        self, *, budget: Budget | None = None, on_budget: OnBudget = "return", trace: bool = True
    ) -> None:
        if on_budget not in ("return", "raise"):
            raise ConfigError(f"on_budget must be 'return' or 'raise', got {on_budget!r}")
        check_instance("budget", budget, Budget, "Budget(usd=0.10)", optional=True)
        self.budget = budget
        self.on_budget: OnBudget = on_budget
        self.trace = trace

    async def run(self, prompt: Prompt, *, budget: Budget | None = None) -> Result:
        """Answer ``prompt`` (text or chat messages). ``budget`` overrides the strategy's."""
        if tracing.active is not None:  # ttc.instrument(): the run is a span
            return await tracing.active.run(self, prompt, budget, self._run_scoped)
        return await self._run_scoped(prompt, budget)

    async def _run_scoped(self, prompt: Prompt, budget: Budget | None) -> Result:
        start = time.perf_counter()
        with run_scope(budget if budget is not None else self.budget, trace=self.trace) as ctx:
            result = await self._run(_normalize(prompt), ctx)
        result.usage = ctx.usage.snapshot()
        result.elapsed_s = time.perf_counter() - start
        result.trace = ctx.trace or []
        if result.stopped_by == "budget" and ctx.budget_error is not None:
            result.budget_stop = _budget_stop(ctx.budget_error)
        if result.stopped_by == "budget" and self.on_budget == "raise":
            error = ctx.budget_error or BudgetExceeded("run", 0, 0, 0, "run")
            error.result = result
            raise error
        return result

    def run_sync(self, prompt: Prompt, *, budget: Budget | None = None) -> Result:
        """``run`` for synchronous code; works inside a running event loop (notebooks) too."""
        return run_sync(lambda: self.run(prompt, budget=budget))

    @abstractmethod
    async def _run(self, prompt: str | tuple[Message, ...], ctx: RunContext) -> Result:
        """The algorithm. Runs inside the run scope ``ctx``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


Source = Model | Strategy


def _normalize(prompt: Prompt) -> str | tuple[Message, ...]:
    from ttc.types import as_request_prompt

    return as_request_prompt(prompt)


def check_source(source: object) -> Source:
    if not isinstance(source, (Model, Strategy)):
        raise ConfigError(
            f"source must be a ttc Model (e.g. ttc.adapters.OpenAI) or a Strategy, "
            f"got {type(source).__name__}"
        )
    return source


def check_n(n: int) -> int:
    checked: int = check_int("n", n, ge=1)
    return checked


def _budget_stop(exc: BudgetExceeded) -> BudgetStop | None:
    """The structured form of the budget error that stopped a run."""
    if exc.limit not in ("tokens", "completion_tokens", "usd", "requests", "seconds"):
        return None
    return BudgetStop(
        scope=exc.scope,
        limit=exc.limit,
        limit_value=exc.limit_value,
        spent=exc.spent,
        needed=exc.needed,
    )


def _note_budget_error(exc: BudgetExceeded) -> None:
    run = current_run()
    if run is not None and run.budget_error is None:
        run.budget_error = exc


@dataclass
class Draw:
    """The candidates a source produced, and why it stopped short if it did."""

    candidates: list[Candidate] = field(default_factory=list)
    stopped_by: StopReason | None = None
    errors: list[str] = field(default_factory=list)


async def draw(
    source: Source,
    prompt: str | tuple[Message, ...],
    n: int,
    *,
    params: SamplingParams | None,
    extract: Extractor,
    on_candidates: OnCandidates | None = None,
    into: Draw | None = None,
) -> Draw:
    """Draw ``n`` candidates from ``source``; a provider failure or an exhausted budget ends
    the draw with the candidates already paid for. If nothing at all came back from a
    provider failure, its error is raised: there is nothing to return.

    Pass ``into`` to keep the candidates when the caller cancels the draw part-way.
    """
    out = into if into is not None else Draw()

    def take(fresh: list[Candidate]) -> Awaitable[None] | None:
        # Synchronous unless someone watches the candidates: no coroutine per response.
        out.candidates.extend(fresh)
        return on_candidates(fresh) if on_candidates is not None else None

    if isinstance(source, Model):
        answers: dict[str, str | None] = {}  # each distinct text of the draw read once

        def on_samples(samples: Samples) -> Awaitable[None] | None:
            return take(samples.candidates(extract, answers))

        try:
            await source.generate_samples(prompt, params, n, on_samples=on_samples)
        except BudgetExceeded as exc:
            out.stopped_by, out.errors = "budget", [str(exc)]
            _note_budget_error(exc)
        except GenerationError as exc:
            out.stopped_by, out.errors = "error", [str(exc)]
        return out

    async def one_run() -> None:
        try:
            result = await source.run(prompt)
        except BudgetExceeded as exc:
            out.stopped_by = "budget"
            out.errors.append(str(exc))
            _note_budget_error(exc)
            return
        except TTCError as exc:
            out.errors.append(str(exc))
            out.stopped_by = out.stopped_by or "error"
            return
        if result.stopped_by == "budget":
            out.stopped_by = "budget"
            stop = result.budget_stop
            if stop is not None:  # the inner run's budget stops this one too
                _note_budget_error(
                    BudgetExceeded(
                        stop.limit, stop.limit_value, stop.spent, stop.needed, stop.scope
                    )
                )
        out.errors.extend(result.errors)
        if result.best is not None:
            watched = take([result.best])
            if watched is not None:
                await watched

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one_run)
    if not out.candidates and out.stopped_by == "error":
        raise GenerationError(TTCError("; ".join(out.errors[-3:])), [], n)
    return out


async def draw_until(
    source: Source,
    prompt: str | tuple[Message, ...],
    n: int,
    *,
    params: SamplingParams | None,
    extract: Extractor,
    done: Callable[[list[Candidate]], Awaitable[bool]],
    into: Draw,
) -> bool:
    """``draw``, showing each batch of candidates to ``done`` as it arrives; once ``done``
    returns True, stop drawing and cancel the requests still in flight (what was paid for stays
    in ``into``). Returns whether ``done`` stopped the draw."""
    stopped = False
    with anyio.CancelScope() as scope:

        async def watch(batch: list[Candidate]) -> None:
            nonlocal stopped
            if await done(batch):
                stopped = True
                scope.cancel()

        await draw(
            source, prompt, n, params=params, extract=extract, on_candidates=watch, into=into
        )
    return stopped
