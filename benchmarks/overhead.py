"""Client overhead of ttc against bare aiohttp (its-hub: ``overhead_others.py``).

The workload of the issue: best-of-16 on 50 prompts against an OpenAI-compatible server that
answers every request in 50 ms, so about 0.05 s of wall time is ideal when every request can
be in flight at once. The fake provider runs in its own process, so the client's CPU time
(``time.process_time``) is the client's alone.

    python benchmarks/overhead.py            # all rows
    python benchmarks/overhead.py --quick    # fewer repeats
    python benchmarks/overhead.py --layers   # where ttc's CPU goes: adapter, runtime, strategy

Rows:
- best-of-16 x 50 prompts, native n (one request a prompt): bare aiohttp, ttc ``OpenAI`` preset;
- the same with fan-out (16 requests a prompt, 800 in all): bare aiohttp, ttc ``Groq`` preset;
- client CPU per request with 256 requests in flight (2,000 requests, n = 1): bare aiohttp,
  ttc, and ttc's ``LiteLLM`` adapter (litellm's own client) where litellm is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import aiohttp
import overhead_others  # ttc-free, so it also runs beside its-hub

from ttc import BestOfN, SamplingParams
from ttc.adapters import Groq, LiteLLM, OpenAI
from ttc.runtime.model import Model
from ttc.types import GenerateRequest

LATENCY = overhead_others.LATENCY  # the fake provider answers after this
PROMPTS = [f"Question {i}: what is {i} * {i + 7}?" for i in range(50)]
PARAMS = SamplingParams(max_tokens=32, temperature=0.8)


def fake_server(flavor: str) -> contextlib.AbstractContextManager[str]:
    """The fake provider in its own process, run by this interpreter; yields its base URL."""
    return overhead_others.fake_server(sys.executable, flavor)


_SESSIONS: list[Callable[[], aiohttp.ClientSession | None]] = []


async def close_sessions() -> None:
    for get in _SESSIONS:
        session = get()
        if session is not None:
            await session.close()
    _SESSIONS.clear()


@dataclass
class Row:
    name: str
    requests: int
    wall_s: float
    cpu_us_per_request: float
    ideal_s: float

    def show(self) -> str:
        return (
            f"| {self.name:<44} | {self.requests:>8} | {self.wall_s:>7.3f} | "
            f"{self.ideal_s:>6.3f} | {self.wall_s / self.ideal_s:>5.2f}x | "
            f"{self.cpu_us_per_request:>8.0f} |"
        )


async def measure(
    name: str, requests: int, ideal: float, work: Callable[[], Awaitable[None]], repeats: int
) -> Row:
    await work()  # warm up: connections, imports, caches
    walls, cpus = [], []
    for _ in range(repeats):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        await work()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return Row(
        name, requests, statistics.median(walls), statistics.median(cpus) / requests * 1e6, ideal
    )


async def measure_alternating(
    works: list[tuple[str, Callable[[], Awaitable[None]]]],
    requests: int,
    ideal: float,
    repeats: int,
) -> list[Row]:
    """Like ``measure`` for several workloads, run in turns (A B A B ...), so that a slow
    stretch of a shared machine falls on all of them rather than on whichever ran then."""
    for _, work in works:
        await work()
    walls: list[list[float]] = [[] for _ in works]
    cpus: list[list[float]] = [[] for _ in works]
    for _ in range(repeats):
        for i, (_, work) in enumerate(works):
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            await work()
            walls[i].append(time.perf_counter() - t0)
            cpus[i].append(time.process_time() - c0)
    return [
        Row(name, requests, statistics.median(w), statistics.median(c) / requests * 1e6, ideal)
        for (name, _), w, c in zip(works, walls, cpus)
    ]


def bare_aiohttp(
    base_url: str, prompts: list[str], n: int, fan_out: bool, limit: int
) -> Callable[[], Awaitable[None]]:
    """The floor: one session, raw JSON, no retries, no accounting."""
    session: aiohttp.ClientSession | None = None
    _SESSIONS.append(lambda: session)

    async def work() -> None:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=limit + 8),
                headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
            )
        sem = asyncio.Semaphore(limit)

        async def one(prompt: str, k: int) -> list[str]:
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 32,
                "temperature": 0.8,
            }
            if k > 1:
                body["n"] = k
            async with sem:
                assert session is not None
                async with session.post(f"{base_url}/chat/completions", data=json.dumps(body)) as r:
                    data = json.loads(await r.text())
            return [c["message"]["content"] for c in data["choices"]]

        jobs = (
            [one(p, 1) for p in prompts for _ in range(n)]
            if fan_out
            else [one(p, n) for p in prompts]
        )
        await asyncio.gather(*jobs)

    return work


def ttc_best_of_n(model: Model, prompts: list[str], n: int) -> Callable[[], Awaitable[None]]:
    strategy = BestOfN(model, n=n, params=PARAMS, trace=False)

    async def work() -> None:
        results = await asyncio.gather(*(strategy.run(p) for p in prompts))
        assert all(len(r.candidates) == n for r in results)

    return work


async def section_best_of_16(repeats: int) -> list[Row]:
    rows = []
    with fake_server("openai") as url:
        model = OpenAI("gpt-4o-mini", base_url=url, api_key="k", max_concurrency=256)
        rows += await measure_alternating(
            [
                ("bare aiohttp, native n=16", bare_aiohttp(url, PROMPTS, 16, False, 256)),
                ("ttc BestOfN, OpenAI preset (native n=16)", ttc_best_of_n(model, PROMPTS, 16)),
            ],
            50,
            LATENCY,
            repeats,
        )
        await model.aclose()
    with fake_server("groq") as url:
        ideal = LATENCY * -(-800 // 256)
        model = Groq("llama-3.1-8b-instant", base_url=url, api_key="k", max_concurrency=256)
        rows += await measure_alternating(
            [
                (
                    "bare aiohttp, fan-out 16 (256 in flight)",
                    bare_aiohttp(url, PROMPTS, 16, True, 256),
                ),
                (
                    "ttc BestOfN, Groq preset (fan-out, 256 in flight)",
                    ttc_best_of_n(model, PROMPTS, 16),
                ),
            ],
            800,
            ideal,
            repeats,
        )
        await model.aclose()
    return rows


async def section_cpu_per_request(repeats: int) -> list[Row]:
    """2,000 single requests with 256 in flight: the client CPU a request costs."""
    prompts = [f"Question {i}: what is {i} + {i}?" for i in range(125)]
    ideal = LATENCY * -(-2000 // 256)
    rows = []
    with fake_server("groq") as url:
        model = Groq("llama-3.1-8b-instant", base_url=url, api_key="k", max_concurrency=256)
        rows += await measure_alternating(
            [
                (
                    "bare aiohttp, 2,000 requests, 256 in flight",
                    bare_aiohttp(url, prompts, 16, True, 256),
                ),
                ("ttc, 2,000 requests, 256 in flight", ttc_best_of_n(model, prompts, 16)),
            ],
            2000,
            ideal,
            repeats,
        )
        await model.aclose()
        try:
            import litellm  # noqa: F401
        except ImportError:
            print("litellm not installed: skipping the LiteLLM row")
        else:
            lite = LiteLLM("openai/m", api_base=url, api_key="k", max_concurrency=256)
            rows.append(
                await measure(
                    "ttc LiteLLM adapter (litellm's client), 256 in flight",
                    2000,
                    ideal,
                    ttc_best_of_n(lite, prompts, 16),
                    1,
                )
            )
    return rows


def others() -> list[str]:
    """Where the other libraries' rows come from."""
    return [
        "its-hub: python benchmarks/overhead_others.py in an environment with its_hub[lm] "
        "(one request per sample, at most 100 in flight: its session keeps aiohttp's default "
        "pool)",
        "optillm: no row; it is a proxy server whose best-of-N rates each sample with a "
        "sequential LLM request (see benchmarks/overhead_others.py)",
    ]


async def section_layers(repeats: int) -> list[Row]:
    """Where ttc's CPU goes: the same 2,000 fanned-out requests through the adapter's ``_send``
    alone, through ``Model.generate`` (the runtime) and through ``BestOfN`` (the strategy)."""
    prompts = [f"Question {i}: what is {i} + {i}?" for i in range(125)]
    ideal = LATENCY * -(-2000 // 256)
    rows = []
    with fake_server("groq") as url:
        model = Groq("llama-3.1-8b-instant", base_url=url, api_key="k", max_concurrency=256)
        requests = [
            GenerateRequest(prompt=p, params=PARAMS, n=1) for p in prompts for _ in range(16)
        ]

        async def adapter_only() -> None:
            limit = asyncio.Semaphore(256)

            async def one(request: GenerateRequest) -> None:
                async with limit:
                    await model._send(request)

            await asyncio.gather(*(one(r) for r in requests))

        async def runtime() -> None:
            await asyncio.gather(*(model.generate(p, PARAMS, n=16) for p in prompts))

        rows += await measure_alternating(
            [
                ("layers: bare aiohttp", bare_aiohttp(url, prompts, 16, True, 256)),
                ("layers: + adapter (OpenAICompatible._send)", adapter_only),
                ("layers: + runtime (Model.generate, n=16)", runtime),
                ("layers: + strategy (BestOfN)", ttc_best_of_n(model, prompts, 16)),
            ],
            2000,
            ideal,
            repeats,
        )
        await model.aclose()
    return rows


async def main(repeats: int, layers: bool, tracing: bool = False) -> None:
    if tracing:  # ttc.instrument() off and on (benchmarks/overhead_tracing.py)
        from overhead_tracing import section_tracing

        rows, layers = await section_tracing(repeats), True
    elif layers:
        rows = await section_layers(repeats)
    else:
        rows = await section_best_of_16(repeats)
        rows += await section_cpu_per_request(repeats)
    await close_sessions()
    print(
        f"server latency {LATENCY * 1000:.0f} ms; fake provider in its own process; "
        f"median of {repeats} runs, the rows of a section in turns; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"| {'workload':<44} | requests | wall s  | ideal  | ratio | CPU µs/req |")
    print(f"|{'-' * 46}|---------:|--------:|-------:|------:|-----------:|")
    for row in rows:
        print(row.show())
    if not layers:
        bare, ttc = rows[4], rows[5]  # 2,000 requests, 256 in flight, measured in turns
        print(
            f"ttc over bare aiohttp, 2,000 requests, 256 in flight: "
            f"{ttc.cpu_us_per_request - bare.cpu_us_per_request:+.0f} µs a request "
            f"({ttc.cpu_us_per_request / bare.cpu_us_per_request:.2f}x). The target: 150 µs "
            "where bare aiohttp costs about 100 µs, i.e. at most +50 µs (1.5x)."
        )
    for note in others():
        print(note)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument(
        "--layers", action="store_true", help="only where the CPU goes: adapter, runtime, strategy"
    )
    parser.add_argument("--tracing", action="store_true", help="only OpenTelemetry off and on")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    if args.uvloop:
        import uvloop

        print("client event loop: uvloop")
        uvloop.run(main(repeats, args.layers, args.tracing))
    else:
        asyncio.run(main(repeats, args.layers, args.tracing))
