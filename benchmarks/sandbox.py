"""What ``UnitTests``' sandbox costs per candidate: bubblewrap against the fallback.

    python benchmarks/sandbox.py                 # 30 candidates a row, one at a time
    python benchmarks/sandbox.py --runs 60 --python /usr/bin/python3

Each row verifies the same small passing candidate (three ``assert`` lines) ``--runs`` times
with ``concurrency=1`` and prints milliseconds per candidate (median and mean), the rows taken
in turns so a noisy machine weighs on all of them alike. The first row is the floor: the same
interpreter started with ``-c pass`` and waited for, no sandbox. As root, the fallback needs an
interpreter another uid can read (``--python``, default: this one); without one its row is left
out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import anyio

from ttc.errors import TTCError
from ttc.scoring import UnitTests
from ttc.types import Candidate

TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(0, 0) == 0\n"
GOOD = Candidate(text="```python\ndef add(a, b):\n    return a + b\n```")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    rows = {
        kind: UnitTests(TESTS, timeout=10, isolation=kind, python=args.python, concurrency=1)
        for kind in ("bwrap", "process")
    }
    for kind, verifier in list(rows.items()):  # the first run probes bwrap once: not counted
        try:
            assert await verifier.verify("q", [GOOD]) == [True], verifier.last_reports
        except TTCError as exc:
            print(f"{kind}: left out ({exc})")
            del rows[kind]

    async def bare() -> None:
        process = await anyio.open_process([args.python, "-s", "-B", "-c", "pass"])
        await process.wait()
        await process.aclose()

    times: dict[str, list[float]] = {"python only": [], **{kind: [] for kind in rows}}
    for _ in range(args.runs):
        start = time.perf_counter()
        await bare()
        times["python only"].append((time.perf_counter() - start) * 1000)
        for kind, verifier in rows.items():
            start = time.perf_counter()
            assert await verifier.verify("q", [GOOD]) == [True], verifier.last_reports
            times[kind].append((time.perf_counter() - start) * 1000)
    print(f"python: {args.python}, {args.runs} candidates a row")
    for kind, values in times.items():
        print(
            f"{kind:12s} median {statistics.median(values):6.1f} ms   "
            f"mean {statistics.fmean(values):6.1f} ms"
        )


if __name__ == "__main__":
    anyio.run(main)
