"""What OpenTelemetry tracing costs the client (``python benchmarks/overhead.py --tracing``).

Best-of-16 on 50 prompts with fan-out (the Groq preset, 800 requests, 256 in flight) against
the fake provider in its own process, in turns: tracing off (``ttc.instrument()`` never
called), and on with the SDK's ``TracerProvider`` exporting every span through a
``BatchSpanProcessor`` to an exporter that drops them (what an application pays to build and
queue spans; the export itself runs on the SDK's worker thread, which ``process_time`` counts).
A run is one span, each request one more: 50 + 800 spans a repeat.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from overhead import LATENCY, PROMPTS, Row, fake_server, measure_alternating, ttc_best_of_n

from ttc.adapters import Groq
from ttc.runtime import tracing


def _switch(
    work: Callable[[], Awaitable[None]], on: Callable[[], None]
) -> Callable[[], Awaitable[None]]:
    async def switched() -> None:
        on()
        try:
            await work()
        finally:
            tracing.uninstrument()

    return switched


async def section_tracing(repeats: int) -> list[Row]:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Drop()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536))
    with fake_server("groq") as url:
        model = Groq("llama-3.1-8b-instant", base_url=url, api_key="k", max_concurrency=256)
        work = ttc_best_of_n(model, PROMPTS, 16)
        rows = await measure_alternating(
            [
                ("ttc BestOfN, Groq fan-out, tracing off", _switch(work, tracing.uninstrument)),
                (
                    "ttc BestOfN, Groq fan-out, tracing on",
                    _switch(work, lambda: tracing.instrument(tracer_provider=provider)),
                ),
            ],
            800,
            LATENCY * -(-800 // 256),
            repeats,
        )
        await model.aclose()
    provider.shutdown()
    assert exporter.spans >= (repeats + 1) * 850, exporter.spans
    return rows
