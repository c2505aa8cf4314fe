"""Send ttc's spans over OTLP/HTTP to a receiver on this machine and print what arrived.

The manual check of docs/observability.md: a tiny OTLP/HTTP receiver (aiohttp, decoding the
protobuf ``ExportTraceServiceRequest`` a collector receives on ``POST /v1/traces``), the SDK's
real ``OTLPSpanExporter`` behind a ``BatchSpanProcessor``, and a BestOfN and a BeamPRM run on
the loopback fake provider. Point ``--endpoint`` at a real collector (Jaeger, Tempo, an
OpenTelemetry Collector: ``http://HOST:4318/v1/traces``) to send the same spans there instead.

    pip install 'ttc-sdk[otel]' opentelemetry-exporter-otlp-proto-http
    python examples/otlp_check.py [--endpoint URL] [--content]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import ttc
from ttc import BeamPRM, BestOfN, SamplingParams
from ttc.adapters import Groq, OpenAICompatible
from ttc.scoring import ArithmeticPRM
from ttc.scoring.prm import PRMScorer
from ttc.testing import FakeProvider

received: list[Any] = []  # the decoded spans, with their resource


async def traces(request: web.Request) -> web.Response:
    """``POST /v1/traces`` as a collector answers it (binary protobuf in and out)."""
    if request.content_type != "application/x-protobuf":
        return web.Response(status=415, text="protobuf only")
    export = ExportTraceServiceRequest()
    export.ParseFromString(await request.read())
    for resource_spans in export.resource_spans:
        service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append((service.get("service.name"), scope_spans.scope.name, span))
    body = ExportTraceServiceResponse().SerializeToString()
    return web.Response(body=body, content_type="application/x-protobuf")


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def show() -> None:
    spans = {s.span_id: s for _, _, s in received}
    depth: dict[bytes, int] = {}

    def level(span: Any) -> int:
        if span.span_id not in depth:
            parent = spans.get(span.parent_span_id)
            depth[span.span_id] = 0 if parent is None else level(parent) + 1
        return depth[span.span_id]

    service, scope = received[0][0], received[0][1]
    print(f"{len(received)} spans received (service.name={service}, scope={scope})")
    for _, _, span in sorted(received, key=lambda r: (r[2].trace_id, r[2].start_time_unix_nano)):
        attributes = {a.key: value(a.value) for a in span.attributes}
        ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        short = {k: v for k, v in attributes.items() if not k.startswith("gen_ai.system")}
        print(f"{'  ' * level(span)}{span.name}  {ms:.1f} ms  {short}")
        for event in span.events:
            print(
                f"{'  ' * level(span)}  event {event.name} "
                f"{ {a.key: value(a.value) for a in event.attributes} }"
            )


def steps(prompt: str, index: int, rng: random.Random) -> str:
    depth = prompt.count("\n\n") - 1
    if depth >= 2:
        return "So the answer is 7."
    return f"Step {depth}: {index} + 1 = {index + 1 + index % 2}\n\nmore"


async def main(endpoint: str | None, content: bool) -> None:
    runner = None
    if endpoint is None:
        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        endpoint = f"http://127.0.0.1:{port}/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": "ttc-otlp-check"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    ttc.instrument(tracer_provider=provider, include_content=content)

    async with FakeProvider("groq", api_key="k") as groq_fake:
        model = Groq("llama-3.1-8b-instant", base_url=groq_fake.base_url, api_key="k")
        await BestOfN(model, n=4, scorer=PRMScorer(ArithmeticPRM())).run("What is 6 * 7?")
        await model.aclose()
    async with FakeProvider("openai", api_key="k", reply=steps) as fake:
        model = OpenAICompatible("m", base_url=fake.base_url, api_key="k", endpoint="completions")
        params = SamplingParams(max_tokens=32)
        await BeamPRM(model, ArithmeticPRM(), n=4, width=2, params=params).run("Q: 1 + 1?\n\n")
        await model.aclose()

    await asyncio.to_thread(provider.force_flush)  # the exporter posts from its own thread
    provider.shutdown()
    if runner is not None:
        show()
        await runner.cleanup()
    else:
        print(f"spans sent to {endpoint}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="a collector's OTLP/HTTP traces URL")
    parser.add_argument("--content", action="store_true", help="export prompts and answers")
    args = parser.parse_args()
    asyncio.run(main(args.endpoint, args.content))
