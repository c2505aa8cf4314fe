"""Client overhead of ttc against bare aiohttp (its-hub: ``overhead_others.py``).

The workload of the issue: best-of-16 on 50 prompts against an OpenAI-compatible server that
answers every request in 50 ms, so about 0.05 s of wall time is ideal when every request can
be in flight at once. The fake provider runs in its own process, so the client's CPU time
(``time.process_time``) is the client's alone.

    python benchmarks/overhead.py            # the default sections (all but ``layers``)
    python benchmarks/overhead.py --quick    # fewer repeats
    python benchmarks/overhead.py --layers   # where ttc's CPU goes: adapter, runtime, strategy
    python benchmarks/overhead.py --rows native256 10k --repeats 3   # only these sections
    python benchmarks/overhead.py --rows 10k --gc freeze   # the collector tuned (both rows)
    python benchmarks/overhead.py --rows response   # one n = 256 response's work, in process

Rows:
- best-of-16 x 50 prompts, native n (one request a prompt): bare aiohttp, ttc ``OpenAI`` preset;
- the same with fan-out (16 requests a prompt, 800 in all): bare aiohttp, ttc ``Groq`` preset;
- client CPU per request with 256 requests in flight (2,000 requests, n = 1): bare aiohttp,
  ttc, and ttc's ``LiteLLM`` adapter (litellm's own client) where litellm is installed;
- large n (issue 20), 50 prompts each: native n = 64 and n = 256 (one request a prompt, the
  ``vllm`` flavor, which has no cap on n) and fan-out at n = 64 and 256 (3,200 and 12,800
  single-sample requests, 256 in flight);
- 10,000 single-sample requests with 512 in flight.

Every row prints client CPU per request and per sample, and ttc's rows their ratio to the bare
floor measured in turns with them; ``gc`` is the collections a run triggered and the time they
took in CPU (``gc.callbacks``), which ``--gc`` changes for every row alike. The fake
provider's replies repeat (four distinct texts a prompt); ``native256d`` runs native n = 256
against a server whose every choice is a distinct text.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

import aiohttp
import overhead_others  # ttc-free, so it also runs beside its-hub

from ttc import BestOfN, SamplingParams
from ttc.adapters import Groq, LiteLLM, OpenAI, OpenAICompatible
from ttc.runtime.model import Capabilities, Model
from ttc.scoring.extract import extract_answer
from ttc.scoring.selectors import MajorityVote
from ttc.testing.fake_provider import default_reply
from ttc.types import GenerateRequest, Result

LATENCY = overhead_others.LATENCY  # the fake provider answers after this
PROMPTS = [f"Question {i}: what is {i} * {i + 7}?" for i in range(50)]
PARAMS = SamplingParams(max_tokens=32, temperature=0.8)


def fake_server(flavor: str) -> contextlib.AbstractContextManager[str]:
    """The fake provider in its own process, run by this interpreter; yields its base URL."""
    return overhead_others.fake_server(sys.executable, flavor)


_DISTINCT_SERVER = """
import asyncio, sys
from ttc.testing.fake_provider import FakeProvider, default_reply

def reply(prompt, index, rng):  # every choice its own text: nothing for the client to share
    return f"Sample {index}. " + default_reply(prompt, index, rng)

async def main():
    async with FakeProvider("vllm", reply=reply, latency=float(sys.argv[1])) as server:
        print("listening on", server.base_url, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.contextmanager
def distinct_server() -> Iterator[str]:
    """A ``vllm``-flavored fake provider whose choices are all distinct texts, in its own
    process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _DISTINCT_SERVER, str(LATENCY)],
        cwd=overhead_others.REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"fake provider did not start: {line!r}")
        yield line.split("listening on", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


_SESSIONS: list[Callable[[], aiohttp.ClientSession | None]] = []


async def close_sessions() -> None:
    for get in _SESSIONS:
        session = get()
        if session is not None:
            await session.close()
    _SESSIONS.clear()


class GcMeter:
    """Collections the cyclic garbage collector ran, and the CPU time they took
    (``gc.callbacks``; CPU rather than wall time, which a busy machine inflates)."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.collections += 1
            self.seconds += time.process_time() - self._start

    def __enter__(self) -> GcMeter:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


@dataclass
class Row:
    name: str
    requests: int
    wall_s: float
    cpu_us_per_request: float
    ideal_s: float
    samples: int = 0
    gc_collections: float = 0.0
    gc_ms: float = 0.0
    floor: Row | None = None  # the bare aiohttp row measured in turns with this one

    def show(self) -> str:
        samples = self.samples or self.requests
        per_sample = self.cpu_us_per_request * self.requests / samples
        vs = ""
        if self.floor is not None:
            vs = (
                f"{self.cpu_us_per_request / self.floor.cpu_us_per_request:.2f}x / "
                f"{self.wall_s / self.floor.wall_s:.2f}x"
            )
        return (
            f"| {self.name:<50} | {self.requests:>6} | {samples:>6} | {self.wall_s:>7.3f} | "
            f"{self.ideal_s:>6.3f} | {self.cpu_us_per_request:>8.0f} | {per_sample:>7.1f} | "
            f"{self.gc_collections:>5.0f} | {self.gc_ms:>6.1f} | {vs:>13} |"
        )


HEADER = (
    f"| {'workload':<50} | reqs   | samples| wall s  | ideal  | µs/req   | µs/smpl | gc n  "
    f"| gc ms  | CPU/wall vs floor |\n"
    f"|{'-' * 52}|-------:|-------:|--------:|-------:|---------:|--------:|------:|-------:"
    f"|--------------:|"
)


async def timed(work: Callable[[], Awaitable[None]]) -> tuple[float, float, int, float]:
    """One run of ``work``: wall s, client CPU s, collections, collector s."""
    gc.collect()
    with GcMeter() as meter:
        c0, t0 = time.process_time(), time.perf_counter()
        await work()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, meter.collections, meter.seconds


async def measure(
    name: str, requests: int, ideal: float, work: Callable[[], Awaitable[None]], repeats: int
) -> Row:
    await work()  # warm up: connections, imports, caches
    runs = [await timed(work) for _ in range(repeats)]
    return Row(
        name,
        requests,
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs) / requests * 1e6,
        ideal,
        gc_collections=statistics.median(r[2] for r in runs),
        gc_ms=statistics.median(r[3] for r in runs) * 1e3,
    )


async def measure_alternating(
    works: list[tuple[str, Callable[[], Awaitable[None]]]],
    requests: int,
    ideal: float,
    repeats: int,
    samples: int = 0,
) -> list[Row]:
    """Like ``measure`` for several workloads, run in turns (A B A B ...), so that a slow
    stretch of a shared machine falls on all of them rather than on whichever ran then. The
    first workload is the floor the others are compared with."""
    for _, work in works:
        await work()
    if GC_MODE == "freeze":  # after setup and warm-up: what stays is long-lived
        gc.collect()
        gc.freeze()
    runs: list[list[tuple[float, float, int, float]]] = [[] for _ in works]
    for _ in range(repeats):
        for i, (_, work) in enumerate(works):
            runs[i].append(await timed(work))
    if GC_MODE == "freeze":
        gc.unfreeze()
    rows = [
        Row(
            name,
            requests,
            statistics.median(r[0] for r in rs),
            statistics.median(r[1] for r in rs) / requests * 1e6,
            ideal,
            samples,
            statistics.median(r[2] for r in rs),
            statistics.median(r[3] for r in rs) * 1e3,
        )
        for (name, _), rs in zip(works, runs)
    ]
    for row in rows[1:]:
        row.floor = rows[0]
    return rows


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


async def section_native(n: int, repeats: int, distinct: bool = False) -> list[Row]:
    """Best-of-n on 50 prompts with native n: one request of n samples a prompt. The ``vllm``
    flavor has no cap on n (OpenAI's is 128), and the model may ask for all n at once, as the
    floor does. ``distinct``: every choice a different text."""
    kind = ", distinct texts" if distinct else ""
    with distinct_server() if distinct else fake_server("vllm") as url:
        model = OpenAICompatible(
            "m",
            base_url=url,
            api_key="k",
            max_concurrency=256,
            capabilities=Capabilities(native_n=True, max_n=n),
        )
        rows = await measure_alternating(
            [
                (f"bare aiohttp, native n={n}{kind}", bare_aiohttp(url, PROMPTS, n, False, 256)),
                (f"ttc BestOfN, native n={n}{kind}", ttc_best_of_n(model, PROMPTS, n)),
            ],
            len(PROMPTS),
            LATENCY,
            repeats,
            samples=len(PROMPTS) * n,
        )
        await model.aclose()
    return rows


async def section_fan_out(n: int, repeats: int) -> list[Row]:
    """Best-of-n on 50 prompts by fan-out: n single-sample requests a prompt, 256 in flight."""
    requests = len(PROMPTS) * n
    with fake_server("groq") as url:
        model = Groq("llama-3.1-8b-instant", base_url=url, api_key="k", max_concurrency=256)
        rows = await measure_alternating(
            [
                (
                    f"bare aiohttp, fan-out {n} (256 in flight)",
                    bare_aiohttp(url, PROMPTS, n, True, 256),
                ),
                (f"ttc BestOfN, Groq preset, fan-out {n}", ttc_best_of_n(model, PROMPTS, n)),
            ],
            requests,
            LATENCY * -(-requests // 256),
            repeats,
        )
        await model.aclose()
    return rows


async def section_10k(repeats: int) -> list[Row]:
    """10,000 single-sample requests (625 prompts, best-of-16 by fan-out) with 512 in flight."""
    prompts = [f"Question {i}: what is {i} + {i}?" for i in range(625)]
    with fake_server("groq") as url:
        model = Groq("llama-3.1-8b-instant", base_url=url, api_key="k", max_concurrency=512)
        rows = await measure_alternating(
            [
                (
                    "bare aiohttp, 10,000 requests, 512 in flight",
                    bare_aiohttp(url, prompts, 16, True, 512),
                ),
                ("ttc, 10,000 requests, 512 in flight", ttc_best_of_n(model, prompts, 16)),
            ],
            10_000,
            LATENCY * -(-10_000 // 512),
            repeats,
        )
        await model.aclose()
    return rows


def _response_body(n: int, distinct: bool) -> bytes:
    """A chat-completions response of ``n`` choices, as the fake provider writes them."""
    rng = random.Random(0)
    prompt = PROMPTS[3]
    texts = [
        (f"Sample {i}. " if distinct else "") + default_reply(prompt, i, rng) for i in range(n)
    ]
    choices = [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
        for i, t in enumerate(texts)
    ]
    usage = {"prompt_tokens": 12, "completion_tokens": 20 * n, "total_tokens": 12 + 20 * n}
    return json.dumps({"model": "m", "choices": choices, "usage": usage}).encode()


async def section_response(repeats: int) -> list[Row]:
    """What one native n = 256 response costs the client once it has arrived, in process: the
    floor decodes the JSON and lists the texts; ttc also parses the choices, builds the
    candidates (extracting answers), votes and makes the ``Result``. No network and no other
    process: the minimum of many short runs is steady even on a shared machine (and leaves
    the collector out: a run without a collection is the fastest). ``repeats`` x 100 runs."""
    n = 256
    caps = Capabilities(native_n=True, max_n=n)
    model = OpenAICompatible("m", base_url="http://127.0.0.1:9/v1", api_key="k", capabilities=caps)
    request = GenerateRequest(prompt=PROMPTS[3], params=PARAMS, n=n)
    selector = MajorityVote()

    def floor(raw: bytes) -> None:
        data = json.loads(raw)
        [c["message"]["content"] for c in data["choices"]]

    def ttc(raw: bytes) -> None:
        got = model._parse(json.loads(raw), request, None)
        model._completion_tokens(request, got)
        made = got.samples.candidates(extract_answer)  # as the sampling strategies do
        chosen = selector.select(made)
        Result(answer=chosen.answer, best=chosen.best, candidates=made, votes=chosen.votes)

    def fastest(work: Callable[[bytes], None], raw: bytes) -> float:
        best = math.inf
        for _ in range(repeats * 100):
            c0 = time.process_time()
            work(raw)
            best = min(best, time.process_time() - c0)
        return best * 1e6

    rows = []
    for distinct in (False, True):
        kind = ", distinct texts" if distinct else ""
        raw = _response_body(n, distinct)
        ttc(raw)  # warm: the extraction caches, as after the first of many responses
        bare, ours = fastest(floor, raw), fastest(ttc, raw)
        pair = [
            Row(f"bare, one n={n} response in process{kind}", 1, bare / 1e6, bare, 0, n),
            Row(f"ttc, one n={n} response in process{kind}", 1, ours / 1e6, ours, 0, n),
        ]
        pair[1].floor = pair[0]
        rows += pair
    return rows


SECTIONS: dict[str, Callable[[int], Awaitable[list[Row]]]] = {
    "bo16": section_best_of_16,
    "2k": section_cpu_per_request,
    "native64": lambda r: section_native(64, r),
    "native256": lambda r: section_native(256, r),
    "native256d": lambda r: section_native(256, r, distinct=True),
    "fanout64": lambda r: section_fan_out(64, r),
    "fanout256": lambda r: section_fan_out(256, r),
    "10k": section_10k,
    "layers": section_layers,
    "tracing": lambda r: _section_tracing(r),
    "response": section_response,
}
DEFAULT = ["bo16", "2k", "native64", "native256", "native256d", "fanout64", "fanout256", "10k"]
GC_MODE = "default"


async def _section_tracing(repeats: int) -> list[Row]:
    """ttc.instrument() off and on (benchmarks/overhead_tracing.py)."""
    from overhead_tracing import section_tracing

    return await section_tracing(repeats)


async def main(repeats: int, sections: list[str]) -> None:
    rows: list[Row] = []
    for name in sections:
        rows += await SECTIONS[name](repeats)
    await close_sessions()
    print(
        f"server latency {LATENCY * 1000:.0f} ms; fake provider in its own process; "
        f"median of {repeats} runs, the rows of a section in turns; collector: {GC_MODE}; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(HEADER)
    for row in rows:
        print(row.show())
    for note in others():
        print(note)


def tune_gc(mode: str) -> None:
    """``--gc``: ``default``; ``freeze`` (``gc.freeze()`` after each section's setup and warm-up);
    ``threshold`` (the youngest generation collected every 50,000 allocations instead of
    2,000, or 700 before Python 3.13); ``off`` (``gc.disable()``, for comparison only)."""
    global GC_MODE
    GC_MODE = mode
    if mode == "threshold":
        _, g1, g2 = gc.get_threshold()
        gc.set_threshold(50_000, g1, g2)
    elif mode == "off":
        gc.disable()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--repeats", type=int, help="repeats a row (default 7; 3 with --quick)")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument(
        "--layers", action="store_true", help="only where the CPU goes: adapter, runtime, strategy"
    )
    parser.add_argument("--tracing", action="store_true", help="only OpenTelemetry off and on")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=list(SECTIONS),
        metavar="SECTION",
        help=f"only these sections, in this order ({', '.join(SECTIONS)}); default: "
        f"{' '.join(DEFAULT)}",
    )
    parser.add_argument(
        "--gc",
        choices=["default", "freeze", "threshold", "off"],
        default="default",
        help="how the garbage collector runs during the rows (see tune_gc)",
    )
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    chosen = args.rows or (["tracing"] if args.tracing else ["layers"] if args.layers else DEFAULT)
    tune_gc(args.gc)
    if args.uvloop:
        import uvloop

        print("client event loop: uvloop")
        uvloop.run(main(repeats, chosen))
    else:
        asyncio.run(main(repeats, chosen))
