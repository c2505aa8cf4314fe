"""OpenTelemetry spans (``ttc.instrument``), read back with the SDK's in-memory exporter: the
span tree and attributes of BestOfN and BeamPRM runs on the loopback fake provider, request
spans that add up to the run's usage, no text unless asked for, nothing while off."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ttc import BeamPRM, BestOfN, Budget, Price, SamplingParams, run_scope
from ttc.adapters import Groq, OpenAICompatible
from ttc.errors import BudgetExceeded, MissingDependencyError
from ttc.runtime import tracing
from ttc.runtime.retry import RetryPolicy
from ttc.scoring import ArithmeticPRM
from ttc.scoring.prm import PRMScorer
from ttc.testing import FakeProvider, Faults

pytestmark = pytest.mark.anyio

Q = "Question: what is 17 * 23?\n\n"
SECRET = "Zanzibar"  # a word only the prompts and completions hold


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.uninstrument()
        provider.shutdown()


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def every_value(spans: list[ReadableSpan]) -> str:
    """Every attribute and event value exported, as one string."""
    out = []
    for span in spans:
        out.append(span.name)
        out.extend(str(v) for v in (span.attributes or {}).values())
        for event in span.events:
            out.extend(str(v) for v in (event.attributes or {}).values())
        out.append(str(span.status.description or ""))
    return "\n".join(out)


def steps_reply(prompt: str, index: int, rng: random.Random) -> str:
    depth = prompt.count("\n\n") - 1
    if depth >= 2:
        return f"{SECRET} says the answer is 7."
    wrong = index % 2  # odd samples get their sum wrong: the PRM prunes them
    return f"{SECRET} {depth}: {index} + 1 = {index + 1 + wrong}\n\nmore"


async def test_a_best_of_n_run_is_a_span_with_a_child_per_request_and_per_scorer_call(
    exporter: InMemorySpanExporter,
) -> None:
    faults = Faults(server_error=0.3)
    async with FakeProvider("groq", api_key="k", faults=faults, seed=5, reply=steps_reply) as fake:
        model = Groq(
            "llama-3.1-8b-instant",
            base_url=fake.base_url,
            api_key="k",
            retry=RetryPolicy(max_attempts=10, initial_backoff=0.0, max_backoff=0.0),
            price=Price.per_million(0.05, 0.08),
        )
        model.rate_limiter.pause(0.2)  # as after a 429: the first requests wait for it
        strategy = BestOfN(
            model,
            n=6,
            scorer=PRMScorer(ArithmeticPRM()),
            params=SamplingParams(max_tokens=16),
            budget=Budget(usd=1.0, requests=50),
        )
        result = await strategy.run(f"{SECRET}: what is 2 + 2?")
        await model.aclose()
    spans = list(exporter.get_finished_spans())
    run = only(spans, "ttc.run BestOfN")
    assert run.parent is None and run.kind == SpanKind.INTERNAL
    a = attrs(run)
    assert a["ttc.strategy"] == "BestOfN" and a["ttc.n"] == 6
    assert a["ttc.source"] == "groq/llama-3.1-8b-instant"
    assert a["ttc.budget.usd"] == 1.0 and a["ttc.budget.requests"] == 50
    assert "ttc.budget.tokens" not in a and "ttc.stopped_by" not in a
    assert result.best is not None and a["ttc.answer.score"] == result.best.score
    assert a["ttc.cost_usd"] == pytest.approx(result.usage.cost_usd) and a["ttc.cost_usd"] > 0
    assert a["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert a["ttc.usage.requests"] == result.usage.requests == fake.stats.requests

    requests = [s for s in children(spans, run) if s.kind == SpanKind.CLIENT]
    assert len(requests) == fake.stats.requests  # every attempt, failed ones included
    for span in requests:
        r = attrs(span)
        assert span.name == "chat llama-3.1-8b-instant"  # text sent to a chat endpoint
        assert r["gen_ai.operation.name"] == "chat"
        assert r["gen_ai.provider.name"] == r["gen_ai.system"] == "groq"
        assert r["gen_ai.request.model"] == "llama-3.1-8b-instant"
        assert r["gen_ai.request.choice.count"] == 1  # Groq: one request a sample
        assert r["ttc.request.retries"] == r["ttc.request.attempt"] - 1
        assert span.start_time is not None and span.end_time is not None
        assert run.start_time is not None and run.end_time is not None
        assert run.start_time <= span.start_time <= span.end_time <= run.end_time
    failed = [s for s in requests if s.status.status_code == StatusCode.ERROR]
    assert len(failed) == fake.stats.faults["server_error"] > 0
    assert {attrs(s)["error.type"] for s in failed} == {"ServerError"}
    assert {attrs(s)["gen_ai.usage.output_tokens"] for s in failed} == {0}
    assert max(attrs(s)["ttc.request.attempt"] for s in requests) > 1
    # The request spans add up to the run's usage and to what the provider billed.
    assert sum(attrs(s)["gen_ai.usage.input_tokens"] for s in requests) == (
        fake.stats.billed_prompt_tokens
    )
    assert sum(attrs(s)["gen_ai.usage.output_tokens"] for s in requests) == (
        fake.stats.billed_completion_tokens
    )
    assert sum(attrs(s)["ttc.cost_usd"] for s in requests) == pytest.approx(a["ttc.cost_usd"])
    waited = [attrs(s).get("ttc.rate_limit.wait_s", 0.0) for s in requests]
    assert max(waited) > 0.1  # the pause shows on the requests that waited for it

    score = only(spans, "ttc.score PRMScorer")
    assert score.parent is not None and score.parent.span_id == run.context.span_id
    assert attrs(score)["ttc.scorer.items"] == len(result.candidates) == 6
    prm = only(spans, "ttc.score_steps ArithmeticPRM")
    assert prm.parent is not None and prm.parent.span_id == score.context.span_id
    assert attrs(prm)["ttc.prm.steps_scored"] > 0

    assert SECRET not in every_value(spans)  # no prompt or completion text by default


async def test_a_beam_prm_run_has_its_rounds_as_events_and_a_span_per_prm_call(
    exporter: InMemorySpanExporter,
) -> None:
    async with FakeProvider("openai", reply=steps_reply, api_key="k") as fake:
        model = OpenAICompatible("m", base_url=fake.base_url, api_key="k", endpoint="completions")
        async with model:
            result = await BeamPRM(
                model, ArithmeticPRM(), n=4, width=2, params=SamplingParams(max_tokens=32)
            ).run(Q + SECRET)
    assert result.tree is not None and result.stopped_by is None
    spans = list(exporter.get_finished_spans())
    run = only(spans, "ttc.run BeamPRM")
    a = attrs(run)
    assert (a["ttc.n"], a["ttc.beam_width"], a["ttc.max_rounds"]) == (4, 2, 40)
    assert a["ttc.usage.requests"] == result.usage.requests == fake.stats.requests

    rounds = [e for e in run.events if e.name == "ttc.search.round"]
    assert [dict(e.attributes or {})["ttc.round"] for e in rounds] == list(range(len(result.tree)))
    first = dict(rounds[0].attributes or {})
    assert first["ttc.round.beams"] == 4 and first["ttc.round.kept"] == 2
    assert first["ttc.round.pruned"] == 2 and first["ttc.round.best_value"] > 0
    assert first["ttc.round.path"] == "completion"
    # One PRM call a round, each a span under the run; the requests beside them.
    prm_calls = [s for s in children(spans, run) if s.name == "ttc.score_steps ArithmeticPRM"]
    assert len(prm_calls) == len(result.tree)
    assert all(attrs(s)["ttc.scorer.items"] > 0 for s in prm_calls)
    requests = [s for s in children(spans, run) if s.kind == SpanKind.CLIENT]
    assert len(requests) == result.usage.requests
    assert max(attrs(s)["gen_ai.request.choice.count"] for s in requests) == 4  # native n
    # Events come in time order, between the run's start and end.
    times = [e.timestamp for e in rounds]
    assert times == sorted(times)
    assert run.start_time is not None and run.end_time is not None
    assert run.start_time <= times[0] and times[-1] <= run.end_time
    assert SECRET not in every_value(spans)


async def test_text_is_exported_only_when_asked_for(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider()
    content = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(content))
    tracing.instrument(tracer_provider=provider, include_content=True)
    async with FakeProvider("openai", reply=steps_reply, api_key="k") as fake:
        model = OpenAICompatible("m", base_url=fake.base_url, api_key="k", endpoint="completions")
        async with model:
            result = await BeamPRM(
                model, ArithmeticPRM(), n=2, width=2, params=SamplingParams(max_tokens=32)
            ).run(Q + SECRET)
    spans = list(content.get_finished_spans())
    run = only(spans, "ttc.run BeamPRM")
    assert attrs(run)["ttc.prompt"] == Q + SECRET
    assert attrs(run)["ttc.answer"] == result.answer == "7"
    assert SECRET in attrs(run)["ttc.answer.text"]
    steps = dict(run.events[0].attributes or {})["ttc.round.steps"]
    assert all(SECRET in step for step in steps)
    assert exporter.get_finished_spans() == ()  # the other provider got nothing


async def test_a_run_stopped_by_its_budget_says_so_on_its_span(
    exporter: InMemorySpanExporter,
) -> None:
    async with FakeProvider("groq", api_key="k") as fake:
        model = Groq("llama-3.1-8b-instant", base_url=fake.base_url, api_key="k")
        strategy = BestOfN(model, n=8, budget=Budget(requests=3), on_budget="raise")
        with pytest.raises(BudgetExceeded):
            await strategy.run("What is 2 * 3?")
        await model.aclose()
    run = only(list(exporter.get_finished_spans()), "ttc.run BestOfN")
    assert run.status.status_code == StatusCode.ERROR
    a = attrs(run)
    assert a["ttc.stopped_by"] == "budget" and a["ttc.budget_stop.limit"] == "requests"
    assert a["ttc.usage.requests"] == 3 and a["ttc.candidates"] == 3
    assert any(e.name == "exception" for e in run.events)


async def test_nested_runs_and_metered_requests_nest_under_the_current_span(
    exporter: InMemorySpanExporter,
) -> None:
    async with FakeProvider("groq", api_key="k") as fake:
        model = Groq("llama-3.1-8b-instant", base_url=fake.base_url, api_key="k")
        outer = BestOfN(BestOfN(model, n=2), n=2)
        await outer.run("What is 4 * 5?")

        async def send() -> tuple[str, int]:
            return "scored", 7

        with run_scope():
            assert await model.metered(send, prompt_bound=10, kind="score") == "scored"
        await model.aclose()
    spans = list(exporter.get_finished_spans())
    top = [s for s in spans if s.name == "ttc.run BestOfN" and s.parent is None]
    assert len(top) == 1
    inner = [s for s in children(spans, top[0]) if s.name == "ttc.run BestOfN"]
    assert len(inner) == 2
    assert all(len(children(spans, s)) == 2 for s in inner)  # two requests each
    metered = only(spans, "score llama-3.1-8b-instant")
    assert attrs(metered)["gen_ai.operation.name"] == "score"
    assert attrs(metered)["gen_ai.usage.input_tokens"] == 7


async def test_nothing_is_exported_while_off() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(tracer_provider=provider)
    tracing.uninstrument()
    assert tracing.active is None
    async with FakeProvider("groq", api_key="k") as fake:
        model = Groq("llama-3.1-8b-instant", base_url=fake.base_url, api_key="k")
        strategy = BestOfN(model, n=2, scorer=PRMScorer(ArithmeticPRM()), trace=False)
        result = await strategy.run("What is 2 * 3?")
        await model.aclose()
    assert len(result.candidates) == 2 and result.trace == []
    assert exporter.get_finished_spans() == ()


def test_instrument_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(MissingDependencyError, match=r"ttc-sdk\[otel\]"):
        tracing.instrument()
    assert tracing.active is None


def test_ttc_otel_in_the_environment_instruments_at_import() -> None:
    code = (
        "import ttc.runtime.tracing as t; "
        "print(t.active is not None, t.active.include_content if t.active else None)"
    )
    env = {"TTC_OTEL": "1", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert out.stdout.split() == ["True", "True"], out.stderr
    # Without the extra: a warning that names it, and the import still works.
    missing = "import sys; sys.modules['opentelemetry'] = None; " + code
    out = subprocess.run(
        [sys.executable, "-c", missing], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert out.stdout.split() == ["False", "None"] and "ttc-sdk[otel]" in out.stderr


def test_a_synchronous_scorer_override_is_left_alone() -> None:
    from ttc.scoring.base import Scorer

    class Sync(Scorer):
        def score(self, prompt: Any, candidates: Any) -> list[float]:  # type: ignore[override]
            return [1.0 for _ in candidates]

    assert Sync().score("q", [1, 2]) == [1.0, 1.0]
