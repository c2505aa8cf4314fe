"""The run a request belongs to, carried in a context variable.

A strategy opens a run scope; every model call made inside it (samples, scorer and judge calls,
nested strategies) finds the scope through the context variable, charges the run's ledgers and
adds to the run's usage and trace. Tasks inherit the variable, so this holds under any fan-out,
and one model shared by many concurrent runs keeps their accounts apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ttc.errors import BudgetExceeded
from ttc.runtime import tracing
from ttc.runtime.budget import Budget, Ledger
from ttc.types import TraceEvent, Usage


class UsageCounter:
    """A mutable running total of usage, cheap to update on the hot path, with one total per
    model (``Usage.by_model``) unless ``per_model`` is off (the per-model totals themselves)."""

    __slots__ = (
        "completion_tokens",
        "cost_usd",
        "models",
        "prompt_tokens",
        "requests",
        "seconds",
        "undelivered",
        "unpriced",
    )

    def __init__(self, per_model: bool = True) -> None:
        self.models: dict[str, UsageCounter] | None = {} if per_model else None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.requests = 0
        self.cost_usd = 0.0
        self.seconds = 0.0
        self.undelivered = 0
        self.unpriced: set[str] = set()

    def add(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        requests: int,
        cost_usd: float | None,
        seconds: float,
        model: str,
        undelivered: int = 0,
    ) -> None:
        self.prompt_tokens += prompt_tokens
        self.undelivered += undelivered
        self.completion_tokens += completion_tokens
        self.requests += requests
        self.seconds += seconds
        if cost_usd is None:
            if prompt_tokens or completion_tokens:
                self.unpriced.add(model)
        else:
            self.cost_usd += cost_usd
        models = self.models
        if models is not None:
            own = models.get(model)
            if own is None:
                own = models[model] = UsageCounter(per_model=False)
            # The same sums, inlined: one call less on every request.
            own.prompt_tokens += prompt_tokens
            own.undelivered += undelivered
            own.completion_tokens += completion_tokens
            own.requests += requests
            own.seconds += seconds
            if cost_usd is None:
                if prompt_tokens or completion_tokens:
                    own.unpriced.add(model)
            else:
                own.cost_usd += cost_usd

    def snapshot(self) -> Usage:
        models = self.models
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            requests=self.requests,
            cost_usd=self.cost_usd,
            seconds=self.seconds,
            undelivered_requests=self.undelivered,
            unpriced_models=frozenset(self.unpriced),
            by_model={name: own.snapshot() for name, own in models.items()} if models else {},
        )


class RunContext:
    """One strategy run: its ledgers (with those of enclosing runs), usage and trace."""

    __slots__ = (
        "budget_error",
        "ledger",
        "ledgers",
        "out_of_spec",
        "parent",
        "trace",
        "traced",
        "usage",
    )

    def __init__(
        self, budget: Budget | Ledger | None, parent: RunContext | None, trace: bool
    ) -> None:
        self.parent = parent
        if isinstance(budget, Ledger):
            self.ledger: Ledger | None = budget
        else:
            self.ledger = Ledger(budget, "run") if budget is not None else None
        if self.ledger is not None:
            self.ledger.start_clock()
        outer = parent.ledgers if parent is not None else ()
        self.ledgers: tuple[Ledger, ...] = outer + ((self.ledger,) if self.ledger else ())
        self.usage = UsageCounter()
        self.trace: list[TraceEvent] | None = [] if trace else None
        #: Whether this run or an enclosing one keeps a trace (else no event is built).
        self.traced: bool = trace or (parent is not None and parent.traced) or bool(tracing.active)
        #: The budget error that stopped this run early, if one did.
        self.budget_error: BudgetExceeded | None = None
        #: Models that answered out of spec in this run (more choices than asked, tokens past
        #: max_tokens), each with what it did: no more requests go to them in this run.
        self.out_of_spec: dict[str, str] = {}

    def record(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
        seconds: float,
        event: TraceEvent | None,
        undelivered: int = 0,
    ) -> None:
        """Add one request's usage to this run and every enclosing run, and its trace event
        to those that trace (callers build ``event`` only where ``traced`` says one will be
        kept), and to OpenTelemetry when ``ttc.instrument()`` is on."""
        if tracing.active is not None:
            tracing.active.request(
                model, prompt_tokens, completion_tokens, cost_usd, seconds, event, undelivered
            )
        ctx: RunContext | None = self
        while ctx is not None:
            ctx.usage.add(
                prompt_tokens, completion_tokens, 1, cost_usd, seconds, model, undelivered
            )
            if ctx.trace is not None and event is not None:
                ctx.trace.append(event)
            ctx = ctx.parent

    def mark_out_of_spec(self, model: str, what: str) -> None:
        """Stop sending to ``model`` in this run and the runs around it."""
        ctx: RunContext | None = self
        while ctx is not None:
            ctx.out_of_spec.setdefault(model, what)
            ctx = ctx.parent


_current: ContextVar[RunContext | None] = ContextVar("ttc_run", default=None)


def current_run() -> RunContext | None:
    """The innermost run scope of the calling task, if any."""
    return _current.get()


@contextmanager
def run_scope(budget: Budget | Ledger | None = None, *, trace: bool = True) -> Iterator[RunContext]:
    """Open a run: calls inside are charged to ``budget`` and to every enclosing run's.

    A ``Ledger`` instead of a ``Budget`` is used as is, so that several scopes (the questions
    of an evaluation, say, or workers in other processes) can charge one ledger.
    """
    ctx = RunContext(budget, _current.get(), trace)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
