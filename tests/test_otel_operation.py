"""Request spans name the operation a request really was, per the OpenTelemetry GenAI
conventions: ``chat`` for chat requests (messages, or text a chat endpoint sends as one user
message), ``text_completion`` for raw text continued as it is; the result's trace says the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ttc import BestOfN, Message, SamplingParams
from ttc.adapters import Groq, OpenAICompatible
from ttc.runtime import tracing
from ttc.runtime.model import Model
from ttc.testing import FakeProvider

pytestmark = pytest.mark.anyio

PARAMS = SamplingParams(max_tokens=16)


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


async def request_spans(
    exporter: InMemorySpanExporter, model: Model, prompt: str | list[Message], operation: str
) -> set[tuple[str, object]]:
    """The (name, gen_ai.operation.name) of every request span of a best-of-2 run, which must
    be of ``operation`` as the result's trace says."""
    result = await BestOfN(model, n=2, params=PARAMS).run(prompt)
    await model.aclose()
    assert result.trace and {event.operation for event in result.trace} == {operation}
    spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert len(spans) == result.usage.requests
    return {(s.name, (s.attributes or {})["gen_ai.operation.name"]) for s in spans}


async def test_text_on_a_chat_endpoint_is_a_chat_span(exporter: InMemorySpanExporter) -> None:
    async with FakeProvider("groq", api_key="k") as fake:
        model = Groq("llama-3.1-8b-instant", base_url=fake.base_url, api_key="k")
        spans = await request_spans(exporter, model, "What is 6 * 7?", "chat")
    assert spans == {("chat llama-3.1-8b-instant", "chat")}


async def test_raw_text_on_a_completions_endpoint_is_a_text_completion_span(
    exporter: InMemorySpanExporter,
) -> None:
    async with FakeProvider("openai", api_key="k") as fake:
        model = OpenAICompatible("m", base_url=fake.base_url, api_key="k", endpoint="completions")
        spans = await request_spans(
            exporter, model, "Question: what is 6 * 7?\nAnswer:", "text_completion"
        )
    assert spans == {("text_completion m", "text_completion")}


async def test_messages_are_a_chat_span(exporter: InMemorySpanExporter) -> None:
    async with FakeProvider("openai", api_key="k") as fake:
        model = OpenAICompatible("m", base_url=fake.base_url, api_key="k")
        prompt = [Message(role="system", content="Be brief."), Message(role="user", content="6*7?")]
        spans = await request_spans(exporter, model, prompt, "chat")
    assert spans == {("chat m", "chat")}


def test_the_operation_follows_the_endpoint_and_the_prompt() -> None:
    from ttc.types import GenerateRequest

    text = GenerateRequest(prompt="2 + 2 =")
    chat = GenerateRequest(prompt=(Message(role="user", content="2 + 2?"),))
    url = "http://127.0.0.1:9/v1"
    completions = OpenAICompatible("m", base_url=url, endpoint="completions")
    chat_endpoint = OpenAICompatible("m", base_url=url)  # text becomes one user message
    assert tracing.request_operation(completions, text) == "text_completion"
    assert tracing.request_operation(chat_endpoint, text) == "chat"
    assert tracing.request_operation(chat_endpoint, chat) == "chat"
