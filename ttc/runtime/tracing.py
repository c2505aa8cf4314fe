"""OpenTelemetry spans for what a run did and cost (the ``otel`` extra).

Off until ``ttc.instrument()`` is called (or ``TTC_OTEL=1`` is set): then a run is a span
(strategy, n, budget, why it stopped, the answer's score, tokens and cost), each request it makes
is a child span named by the OpenTelemetry GenAI semantic conventions (``gen_ai.*``: operation,
provider, model, tokens; ``ttc.*``: attempt, cost, rate-limit wait), each scorer or PRM call is a
span around the requests it makes, and each round of a step-wise search is an event on the run's
span. Prompts, answers and step texts are exported only with ``include_content=True`` (or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``).

Off, it costs one ``None`` check where a run starts and where a request is recorded, and nothing
imports OpenTelemetry. The hooks: ``Strategy.run`` (run spans), ``RunContext.record`` (every
request, metered or generating, as the runtime settled it: spans get the request's real start
and end), ``Scorer``/``ProcessRewardModel`` methods (scorer spans), ``round_record`` (rounds) and
``RateLimiter.acquire`` (the time a request waited for the rate limit).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from ttc.runtime.budget import Budget
    from ttc.types import GenerateRequest, Result, TraceEvent

logger = logging.getLogger("ttc.tracing")

ENABLE_ENV = "TTC_OTEL"
"""Set to ``1`` to instrument at import, with the global tracer provider."""
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI instrumentations' switch for exporting prompt and completion text."""

_TRUE = ("1", "true", "yes", "on")

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])

#: Seconds the current task's next request waited for its rate limit (``RateLimiter``).
_rate_wait: ContextVar[float] = ContextVar("ttc_rate_wait", default=0.0)
#: The scorer whose span is current in this task (a verifier's ``score`` calls its ``verify``:
#: one span, not two).
_scoring: ContextVar[object | None] = ContextVar("ttc_scoring", default=None)


class Instrumentation:
    """What ``instrument`` turned on: the tracer and whether text is exported."""

    def __init__(self, tracer: Tracer, include_content: bool) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.tracer = tracer
        self.include_content = include_content
        self._context = context
        self._trace = trace
        self._client = SpanKind.CLIENT
        self._error = Status(StatusCode.ERROR)
        self._status = Status
        self._error_code = StatusCode.ERROR

    # ------------------------------------------------------------------ runs

    async def run(
        self,
        strategy: Any,
        prompt: Any,
        budget: Budget | None,
        inner: Callable[[Any, Budget | None], Awaitable[Result]],
    ) -> Result:
        """``inner(prompt, budget)`` (the strategy's run) inside the run's span."""
        name = type(strategy).__name__
        span = self.tracer.start_span(f"ttc.run {name}", attributes=_run_attributes(strategy))
        used = budget if budget is not None else getattr(strategy, "budget", None)
        if used is not None:
            for limit in ("tokens", "completion_tokens", "usd", "requests", "seconds"):
                value = getattr(used, limit, None)
                if value is not None:
                    span.set_attribute(f"ttc.budget.{limit}", value)
        if self.include_content:
            span.set_attribute("ttc.prompt", _text(prompt))
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            result = await inner(prompt, budget)
        except BaseException as exc:
            partial = getattr(exc, "result", None)  # on_budget="raise" carries the result
            if partial is not None:
                self._end_run(span, partial)
            span.record_exception(exc)
            span.set_status(self._status(self._error_code, f"{type(exc).__name__}: {exc}"))
            raise
        else:
            self._end_run(span, result)
            return result
        finally:
            self._context.detach(token)
            span.end()

    def _end_run(self, span: Span, result: Result) -> None:
        usage = result.usage
        attributes: dict[str, Any] = {
            "ttc.candidates": len(result.candidates),
            "ttc.usage.requests": usage.requests,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "ttc.cost_usd": usage.cost_usd,
            "ttc.answered": result.answer is not None,
        }
        if usage.undelivered_requests:
            attributes["ttc.usage.undelivered_requests"] = usage.undelivered_requests
        if usage.unpriced_models:
            attributes["ttc.unpriced_models"] = sorted(usage.unpriced_models)
        if result.stopped_by is not None:
            attributes["ttc.stopped_by"] = result.stopped_by
        if result.budget_stop is not None:
            attributes["ttc.budget_stop.scope"] = result.budget_stop.scope
            attributes["ttc.budget_stop.limit"] = result.budget_stop.limit
        best = result.best
        if best is not None and best.score is not None:
            attributes["ttc.answer.score"] = best.score
        if result.errors:
            attributes["ttc.errors"] = len(result.errors)
        if self.include_content:
            if result.answer is not None:
                attributes["ttc.answer"] = result.answer
            if best is not None:
                attributes["ttc.answer.text"] = best.text
        span.set_attributes(attributes)
        if result.stopped_by == "error":
            span.set_status(self._error)

    # ------------------------------------------------------------------ requests

    def request(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
        seconds: float,
        event: TraceEvent | None,
        undelivered: int | bool,
    ) -> None:
        """One request as the runtime settled it (``RunContext.record``): a span that ended
        now and began ``seconds`` ago, under the current span."""
        end = time.time_ns()
        provider, _, name = model.partition("/")
        operation = "generate_content"
        if event is not None and event.operation:
            operation = event.operation  # chat, text_completion, or a metered request's kind
        elif event is not None and event.model != model and event.model.endswith(")"):
            operation = event.model[len(model) + 2 : -1]  # "name (score)": a metered request
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": name or model,
            "gen_ai.usage.input_tokens": prompt_tokens,
            "gen_ai.usage.output_tokens": completion_tokens,
        }
        if cost_usd is not None:
            attributes["ttc.cost_usd"] = cost_usd
        if undelivered:
            attributes["ttc.undelivered"] = True
        wait = _rate_wait.get()
        if wait:
            attributes["ttc.rate_limit.wait_s"] = wait
            _rate_wait.set(0.0)
        error = None
        if event is not None:
            attributes["gen_ai.request.choice.count"] = event.n
            attributes["ttc.request.attempt"] = event.attempt
            attributes["ttc.request.retries"] = event.attempt - 1
            attributes["ttc.response.choices"] = event.choices
            error = event.error
        span = self.tracer.start_span(
            f"{operation} {name or model}",
            kind=self._client,
            start_time=end - int(seconds * 1e9),
            attributes=attributes,
        )
        if error is not None:
            kind, _, message = error.partition(": ")
            span.set_attribute("error.type", kind)
            span.set_status(self._status(self._error_code, message or kind))
        span.end(end_time=end)

    # ------------------------------------------------------------------ scorers and rounds

    async def score(
        self,
        method: Callable[..., Awaitable[Any]],
        what: str,
        obj: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """``method(obj, *args, **kwargs)`` inside a span for one scorer or PRM call."""
        name = type(obj).__name__
        attributes: dict[str, Any] = {"ttc.scorer": name, "ttc.scorer.method": what}
        items = args[1] if len(args) > 1 else kwargs.get("candidates", kwargs.get("solutions"))
        if items is not None and hasattr(items, "__len__"):
            attributes["ttc.scorer.items"] = len(items)
        before = _prm_counts(obj)
        token = _scoring.set(obj)
        try:
            with self.tracer.start_as_current_span(
                f"ttc.{what} {name}", attributes=attributes
            ) as span:
                result = await method(obj, *args, **kwargs)
                after = _prm_counts(obj)
                if before is not None and after is not None:
                    span.set_attribute("ttc.prm.steps_scored", after[0] - before[0])
                    span.set_attribute("ttc.prm.cache_hits", after[1] - before[1])
                return result
        finally:
            _scoring.reset(token)

    def round(self, record: Mapping[str, Any]) -> None:
        """One round of a step-wise search, as an event on the current (the run's) span."""
        span = self._trace.get_current_span()
        beams = record.get("beams", [])
        statuses: dict[str, int] = {}
        for beam in beams:
            statuses[beam.get("status", "")] = statuses.get(beam.get("status", ""), 0) + 1
        values = [b["value"] for b in beams if b.get("status") != "duplicate" and b.get("value")]
        attributes: dict[str, Any] = {
            "ttc.round": record.get("round", 0),
            "ttc.round.to_end": bool(record.get("to_end")),
            "ttc.round.beams": len(beams),
            **{f"ttc.round.{status}": count for status, count in statuses.items() if status},
        }
        if values:
            attributes["ttc.round.best_value"] = max(values)
        for key in ("stopped_by", "path"):
            if isinstance(record.get(key), str):
                attributes[f"ttc.round.{key}"] = record[key]
        if self.include_content:
            attributes["ttc.round.steps"] = [str(b.get("step", "")) for b in beams]
        span.add_event("ttc.search.round", attributes)


def request_operation(model: Any, request: GenerateRequest) -> str:
    """The GenAI operation name of a generating request to ``model``: ``chat`` for messages,
    and for text the model sends as one user message (a chat endpoint); ``text_completion``
    for text continued as it is (a completions endpoint, a local engine)."""
    if not isinstance(request.prompt, str):
        return "chat"
    endpoint = getattr(model, "endpoint", None)
    if endpoint == "chat" or (endpoint is None and not model.capabilities.completions):
        return "chat"
    return "text_completion"


def _run_attributes(strategy: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"ttc.strategy": type(strategy).__name__}
    # A step search keeps its settings in ``options``; other strategies as attributes.
    for holder in (getattr(strategy, "options", None), strategy):
        for name in ("n", "beam_width", "max_rounds"):
            value = getattr(holder, name, None)
            if isinstance(value, int) and not isinstance(value, bool):
                attributes.setdefault(f"ttc.{name}", value)
    for name in ("source", "model"):
        source = getattr(strategy, name, None)
        label = getattr(source, "name", None)
        if isinstance(label, str):
            attributes["ttc.source"] = label
            break
    return attributes


def _prm_counts(obj: Any) -> tuple[int, int] | None:
    scored, hits = getattr(obj, "steps_scored", None), getattr(obj, "cache_hits", None)
    if isinstance(scored, int) and isinstance(hits, int):
        return scored, hits
    return None


def _text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    try:
        return json.dumps([{"role": m.role, "content": m.content} for m in prompt])
    except (AttributeError, TypeError):
        return str(prompt)


# ---------------------------------------------------------------------- the switch

active: Instrumentation | None = None
"""The instrumentation in force, or ``None`` (off): what every hook checks."""


def instrument(
    tracer_provider: TracerProvider | None = None, *, include_content: bool | None = None
) -> None:
    """Export spans for every run from now on, to ``tracer_provider`` (default: the global
    one, ``opentelemetry.trace.set_tracer_provider``). ``include_content`` exports prompts,
    answers and step texts (default: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``,
    else off). Needs ``pip install 'ttc-sdk[otel]'``."""
    global active
    try:
        from opentelemetry import trace
    except ImportError:
        from ttc.errors import MissingDependencyError

        raise MissingDependencyError(
            "opentelemetry-api", "otel", "ttc.instrument() (OpenTelemetry traces)"
        ) from None
    from ttc import __version__

    if include_content is None:
        include_content = os.environ.get(CONTENT_ENV, "").strip().lower() in _TRUE
    tracer = trace.get_tracer("ttc", __version__, tracer_provider=tracer_provider)
    active = Instrumentation(tracer, bool(include_content))


def uninstrument() -> None:
    """Stop exporting spans (runs already started finish their spans)."""
    global active
    active = None


def note_rate_limit_wait(seconds: float) -> None:
    """Add ``seconds`` waited for a rate limit to the current task's next request span."""
    _rate_wait.set(_rate_wait.get() + seconds)


def traced(method: _F, what: str) -> _F:
    """``method`` (a scorer's ``score``/``verify``, a PRM's ``score_steps``) with a span around
    each call while instrumentation is on; one frame more and a ``None`` check while off."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if active is None or _scoring.get() is self:
            return await method(self, *args, **kwargs)
        return await active.score(method, what, self, args, kwargs)

    wrapper.__ttc_traced__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def trace_methods(cls: type, names: tuple[str, ...]) -> None:
    """Wrap the coroutine methods ``names`` that ``cls`` itself defines with ``traced``
    (called from ``__init_subclass__`` of the scorer base classes; a synchronous override is
    left alone)."""
    for name in names:
        method = cls.__dict__.get(name)
        if (
            not inspect.iscoroutinefunction(method)
            or getattr(method, "__isabstractmethod__", False)
            or getattr(method, "__ttc_traced__", False)
        ):
            continue
        setattr(cls, name, traced(method, name))


if os.environ.get(ENABLE_ENV, "").strip().lower() in _TRUE:
    try:
        instrument()
    except ImportError as exc:  # MissingDependencyError: say so, but do not break the import
        warnings.warn(f"{ENABLE_ENV} is set but {exc}", stacklevel=1)
