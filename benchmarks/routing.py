"""Best-of-64 over two providers with a ``Router``: wall time against what the weights predict.

Two loopback fake providers (Groq flavor: one request a sample), a fast one (0.1 s a request)
and a slow one (0.3 s), each model allowed 8 requests in flight. One provider alone needs
64 / 8 = 8 waves of its latency; a router that deals ``k`` samples to a provider needs
``ceil(k / 8)`` of that provider's waves, and the call ends with the slower share. Weights
proportional to throughput (8 / 0.1 : 8 / 0.3 = 3 : 1) make both shares end together.

    python benchmarks/routing.py
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time

from ttc import BestOfN, SamplingParams
from ttc.adapters import Groq
from ttc.runtime.fallback import Router
from ttc.runtime.model import Model
from ttc.testing import FakeProvider

N = 64
IN_FLIGHT = 8
FAST, SLOW = 0.1, 0.3
PARAMS = SamplingParams(max_tokens=16)


def predicted(shares: list[int], latencies: list[float]) -> float:
    return max(math.ceil(k / IN_FLIGHT) * lat for k, lat in zip(shares, latencies) if k)


async def timed(source: Model, repeats: int = 3) -> float:
    strategy = BestOfN(source, n=N, params=PARAMS, trace=False)
    walls = []
    for i in range(repeats):
        t0 = time.perf_counter()
        result = await strategy.run(f"What is {i} * 7?")
        walls.append(time.perf_counter() - t0)
        assert len(result.candidates) == N
    return statistics.median(walls)


async def main() -> None:
    async with (
        FakeProvider("groq", latency=FAST) as fast,
        FakeProvider("groq", latency=SLOW) as slow,
    ):

        def model(server: FakeProvider) -> Groq:
            return Groq("m", base_url=server.base_url, api_key="k", max_concurrency=IN_FLIGHT)

        rows: list[tuple[str, float, float]] = []
        a, b = model(fast), model(slow)
        rows.append(("fast provider alone", predicted([N, 0], [FAST, SLOW]), await timed(a)))
        rows.append(("slow provider alone", predicted([0, N], [FAST, SLOW]), await timed(b)))
        for weights in ((1, 1), (3, 1)):
            router = Router([model(fast), model(slow)], weights=weights)
            wall = await timed(router)
            shares = [d // 3 for d in router.dealt]  # per run (3 repeats)
            rows.append(
                (
                    f"Router weights {weights[0]}:{weights[1]} -> {shares[0]}/{shares[1]}",
                    predicted(shares, [FAST, SLOW]),
                    wall,
                )
            )
            await router.aclose()
        await a.aclose()
        await b.aclose()
    print(f"best-of-{N}, {IN_FLIGHT} in flight per provider, latencies {FAST} s and {SLOW} s")
    print("| source | predicted s | measured s (median of 3) |")
    print("|---|---:|---:|")
    for name, want, got in rows:
        print(f"| {name} | {want:.2f} | {got:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
