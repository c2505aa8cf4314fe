"""Client overhead of its-hub's best-of-N, on the workload of ``benchmarks/overhead.py``.

Best-of-16 on 50 prompts (max 32 tokens, temperature 0.8) against the fake OpenAI-compatible
provider answering every request in 50 ms, measured the way ``overhead.py`` measures ttc: wall
time (median of the repeats) against the ideal for the concurrency allowed, and the client's CPU
time (``time.process_time``, all threads of this process) per HTTP request. A bare aiohttp row is
rerun here as the floor, so the rows of one run compare with each other.

its-hub (``its_hub[lm]``) has no native ``n``: ``BestOfN`` sends one chat request per sample
(fan-out, 16 a prompt, 800 in all). Its ``LMOrchestrator`` bounds the requests in flight (default
32); the scorer is a constant outcome reward model, so scoring costs nothing and sends nothing.

This script does not import ttc, so it runs in an environment with its-hub but without ttc::

    python -m venv /tmp/others_venv && /tmp/others_venv/bin/pip install "its_hub[lm]" aiohttp
    /tmp/others_venv/bin/python benchmarks/overhead_others.py --quick

The fake provider (``python -m ttc.testing.fake_provider``) is started with the first
``python3``/``python`` on PATH that is not this interpreter (``--server-python`` to choose one),
with the repository root as its working directory; ``--base-url`` uses a running server instead.

optillm is not benchmarked: it is a Flask proxy server (``optillm`` with ``--approach bon``), not
a client library. Its ``bon`` sends one native-``n`` request and then one LLM-judge rating request
per sample, one after another, through the synchronous OpenAI SDK, with the number of samples fixed
at server start and the temperature fixed at 1; there is no way to plug in a free scorer, and the
client's cost would be split between the caller and the proxy process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiohttp

LATENCY = 0.05
PROMPTS = [f"Question {i}: what is {i} * {i + 7}?" for i in range(50)]
N = 16
MAX_TOKENS = 32
TEMPERATURE = 0.8
IN_FLIGHT = 256
REPO = Path(__file__).resolve().parent.parent

Work = Callable[[], Awaitable[int]]
"""One run of a workload; returns the number of HTTP requests the client says it sent."""


def server_python() -> str:
    """The first python on PATH other than this interpreter (which lacks ttc's dependencies)."""
    for name in ("python3", "python"):
        found = shutil.which(name)
        if found and Path(found).resolve() != Path(sys.executable).resolve():
            return found
    raise RuntimeError("no python with ttc on PATH: pass --server-python or --base-url")


@contextlib.contextmanager
def fake_server(python: str, flavor: str = "openai") -> Iterator[str]:
    """Start ``ttc.testing.fake_provider`` in its own process; yield its base URL."""
    proc = subprocess.Popen(
        [
            python,
            "-m",
            "ttc.testing.fake_provider",
            "--flavor",
            flavor,
            "--port",
            "0",
            "--latency",
            str(LATENCY),
        ],
        cwd=REPO,
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


def server_stats(base_url: str, reset: bool = False) -> dict[str, Any] | None:
    """The fake provider's counters (``None`` from a server that is not the fake provider)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    path, method = ("/_fake/reset", "POST") if reset else ("/_fake/stats", "GET")
    try:
        with urllib.request.urlopen(
            urllib.request.Request(root + path, method=method), timeout=5
        ) as r:
            return json.loads(r.read() or b"{}")
    except (urllib.error.URLError, ValueError):
        return None


@dataclass
class Row:
    name: str
    requests: int
    wall_s: float
    cpu_us_per_request: float
    ideal_s: float
    max_in_flight: int | None = None

    def show(self) -> str:
        return (
            f"| {self.name:<44} | {self.requests:>8} | {self.wall_s:>7.3f} | "
            f"{self.ideal_s:>6.3f} | {self.wall_s / self.ideal_s:>5.2f}x | "
            f"{self.cpu_us_per_request:>8.0f} |"
        )


async def measure(
    name: str, requests: int, ideal: float, work: Work, repeats: int, base_url: str
) -> Row:
    """Warm up once, then time ``repeats`` runs; check the request count on both ends."""
    server_stats(base_url, reset=True)
    sent = [await work()]  # warm up: connections, imports, thread pools
    walls, cpus = [], []
    for _ in range(repeats):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        sent.append(await work())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if any(s != requests for s in sent):
        raise AssertionError(f"{name}: expected {requests} requests a run, client sent {sent}")
    stats = server_stats(base_url)
    if stats is not None and stats["requests"] != requests * (repeats + 1):
        raise AssertionError(f"{name}: the server saw {stats['requests']} requests")
    return Row(
        name,
        requests,
        statistics.median(walls),
        statistics.median(cpus) / requests * 1e6,
        ideal,
        None if stats is None else stats["max_in_flight"],
    )


class BareAiohttp:
    """The floor, as in ``overhead.py``: one session, raw JSON, fan-out, a semaphore."""

    def __init__(self, base_url: str, limit: int) -> None:
        self.base_url = base_url
        self.limit = limit
        self.session: aiohttp.ClientSession | None = None

    def best_of_n(self, prompts: list[str], n: int) -> Work:
        async def work() -> int:
            if self.session is None:
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self.limit + 8),
                    headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
                )
            sem = asyncio.Semaphore(self.limit)

            async def one(prompt: str) -> str:
                body = {
                    "model": "m",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": MAX_TOKENS,
                    "temperature": TEMPERATURE,
                }
                async with sem:
                    assert self.session is not None
                    async with self.session.post(
                        f"{self.base_url}/chat/completions", data=json.dumps(body)
                    ) as r:
                        data = json.loads(await r.text())
                return data["choices"][0]["message"]["content"]

            jobs = [one(p) for p in prompts for _ in range(n)]
            await asyncio.gather(*jobs)
            return len(jobs)

        return work

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()


def its_hub_best_of_n(lm: Any, max_concurrency: int | None, prompts: list[str], n: int) -> Work:
    """``BestOfN(orm=...).ainfer(lm, prompt, budget=n)`` for every prompt at once, sharing one
    orchestrator (``None``: its-hub's default ``LMOrchestrator()``)."""
    from its_hub import AbstractOutcomeRewardModel, BestOfN, LMOrchestrator

    class ConstantScore(AbstractOutcomeRewardModel):
        """A reward model that costs nothing: every candidate scores 0."""

        def score(self, messages: Any, **kwargs: Any) -> list[float]:
            return [0.0] * len(messages)

        async def ascore(
            self, messages: Any, orchestrator: Any = None, **kwargs: Any
        ) -> list[float]:
            return [0.0] * len(messages)

    orchestrator = None if max_concurrency is None else LMOrchestrator(max_concurrency)
    algorithm = BestOfN(orm=ConstantScore(), orchestrator=orchestrator)

    async def work() -> int:
        results = await asyncio.gather(
            *(algorithm.ainfer(lm, p, budget=n, return_response_only=False) for p in prompts)
        )
        assert all(len(r.responses) == n for r in results)
        return sum(r.usage.num_calls for r in results)

    return work


async def main(repeats: int, base_url: str | None, python: str | None) -> None:
    with contextlib.ExitStack() as stack:
        url = base_url or stack.enter_context(fake_server(python or server_python()))
        rows = await run_rows(url, repeats)
    print(
        f"server latency {LATENCY * 1000:.0f} ms; fake provider in its own process; "
        f"median of {repeats} runs; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"| {'workload':<44} | requests | wall s  | ideal  | ratio | CPU µs/req |")
    print(f"|{'-' * 46}|---------:|--------:|-------:|------:|-----------:|")
    for row in rows:
        print(row.show())
    for row in rows:
        if row.max_in_flight is not None:
            print(f"{row.name}: at most {row.max_in_flight} requests in flight at the server")
    for note in notes():
        print(note)


async def run_rows(url: str, repeats: int) -> list[Row]:
    fan_out_ideal = LATENCY * -(-len(PROMPTS) * N // IN_FLIGHT)
    cpu_prompts = [f"Question {i}: what is {i} + {i}?" for i in range(125)]
    cpu_ideal = LATENCY * -(-2000 // IN_FLIGHT)
    rows = []
    bare = BareAiohttp(url, IN_FLIGHT)
    rows.append(
        await measure(
            "bare aiohttp, fan-out 16 (256 in flight)",
            800,
            fan_out_ideal,
            bare.best_of_n(PROMPTS, N),
            repeats,
            url,
        )
    )
    try:
        from its_hub import OpenAICompatibleLanguageModel
    except ImportError:
        print('its-hub not installed (pip install "its_hub[lm]"): its-hub rows skipped')
        await bare.aclose()
        return rows
    lm = OpenAICompatibleLanguageModel(
        endpoint=url,
        api_key="k",
        model_name="m",
        max_completion_tokens=MAX_TOKENS,
        temperature=TEMPERATURE,
    )
    for name, limit, ideal in (
        ("its-hub BestOfN, fan-out 16 (256 in flight)", IN_FLIGHT, fan_out_ideal),
        ("its-hub BestOfN, fan-out 16, unbounded (-1)", -1, LATENCY),
        ("its-hub BestOfN, defaults (32 in flight)", None, LATENCY * -(-800 // 32)),
    ):
        rows.append(
            await measure(name, 800, ideal, its_hub_best_of_n(lm, limit, PROMPTS, N), repeats, url)
        )
    rows.append(
        await measure(
            "bare aiohttp, 2,000 requests, 256 in flight",
            2000,
            cpu_ideal,
            bare.best_of_n(cpu_prompts, N),
            repeats,
            url,
        )
    )
    rows.append(
        await measure(
            "its-hub, 2,000 requests, 256 in flight",
            2000,
            cpu_ideal,
            its_hub_best_of_n(lm, IN_FLIGHT, cpu_prompts, N),
            repeats,
            url,
        )
    )
    await lm.close()
    await bare.aclose()
    return rows


def notes() -> list[str]:
    try:
        its_hub = f"its-hub {version('its_hub')}"
    except PackageNotFoundError:
        its_hub = "its-hub (not installed)"
    return [
        f"{its_hub}: async (aiohttp); BestOfN fans out, one request a sample (no native n); "
        "LMOrchestrator(max_concurrency) bounds requests in flight with a threading.Semaphore "
        "acquired in the default thread pool; its aiohttp session keeps the default "
        "connection limit of 100, which no option changes.",
        "optillm: not benchmarked - a Flask proxy whose bon sends n=N then N sequential "
        "LLM-judge requests through the sync OpenAI SDK (see the module docstring).",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--base-url", help="use this running server instead of starting one")
    parser.add_argument("--server-python", help="python that runs ttc.testing.fake_provider")
    args = parser.parse_args()
    asyncio.run(main(3 if args.quick else 7, args.base_url, args.server_python))
