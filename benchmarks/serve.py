"""Load on ``ttc serve``: 1,000 concurrent chat requests, best-of-4 upstream.

The fake provider (50 ms a request) and ``ttc serve`` each run in their own process; this
process is the client (aiohttp, every request in flight at once). Rows:

- ``direct``: the same requests straight to the fake provider with ``n = 4`` (what a client
  doing best-of-4 itself would send): the floor the others are compared with;
- ``ttc serve, keys``: ``best-of-4/fake`` through the server with an API key and the SQLite
  ledger (reserve and settle on every request);
- ``ttc serve, no auth``: the same without keys (``server.auth = false``).

Reported: wall time and throughput; each request's latency at p50 and p99 and the latency the
server added (the request's latency minus its slowest upstream call, from the response's
``ttc.calls``); the server's CPU seconds (user + system, from /proc) per request.
optillm's proxy would be a row too where it is installed (it usually is not: then said so).

    python benchmarks/serve.py                   # 1,000 requests
    python benchmarks/serve.py --requests 200    # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = """\
[models.fake]
model = "openai-compatible/fake-model@{url}"
max_concurrency = 4096
price = {{ input_per_million = 1.0, output_per_million = 2.0 }}
params = {{ max_tokens = 32 }}

[server]
auth = {auth}
keys_db = "{db}"
max_body_bytes = 1048576
log_json = true
"""


def _start(args: list[str], log: Path, marker: str, env: dict[str, str]) -> tuple[Any, str]:
    handle = log.open("wb")
    process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith(marker):
                return process, line.removeprefix(marker).strip()
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(log.read_text())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(
    url: str, key: str | None, model: str, n: int, requests: int
) -> tuple[float, list[float], list[float]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    connector = aiohttp.TCPConnector(limit=0)
    latencies: list[float] = []
    added: list[float] = []
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(i: int) -> None:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"What is {i % 97} * 7?"}],
                "n": n,
            }
            started = time.perf_counter()
            async with session.post(url + "/chat/completions", json=body) as response:
                data = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {data}")
            took = time.perf_counter() - started
            latencies.append(took)
            calls = data.get("ttc", {}).get("calls", [])
            if calls:
                added.append(took - max(c["seconds"] for c in calls))

        started = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(requests)])
        return time.perf_counter() - started, latencies, added


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(
    name: str, wall: float, requests: int, lat: list[float], added: list[float], cpu: float | None
) -> str:
    extra = (
        f"{statistics.median(added) * 1000:7.1f} {_pct(added, 0.99) * 1000:7.1f}"
        if added
        else f"{'-':>7} {'-':>7}"
    )
    cpu_text = f"{cpu / requests * 1000:8.2f}" if cpu is not None else f"{'-':>8}"
    return (
        f"{name:<24} {wall:7.2f} {requests / wall:8.0f} {statistics.median(lat) * 1000:7.1f} "
        f"{_pct(lat, 0.99) * 1000:7.1f} {extra} {cpu_text}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    work = Path(tempfile.mkdtemp(prefix="ttc-serve-bench-"))
    fake, fake_url = _start(
        [
            sys.executable,
            "-m",
            "ttc.testing.fake_provider",
            "--port",
            "0",
            "--latency",
            str(args.latency),
        ],
        work / "fake.log",
        "listening on ",
        env,
    )
    processes = [fake]
    print(
        f"{args.requests} concurrent chat requests, best-of-4, "
        f"upstream latency {args.latency * 1000:.0f} ms"
    )
    print(
        f"{'row':<24} {'wall s':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'+p50 ms':>7} {'+p99 ms':>7} {'cpu ms/req':>8}"
    )
    try:
        wall, lat, added = asyncio.run(_load(fake_url, None, "fake-model", 4, args.requests))
        print(_row("direct (n=4)", wall, args.requests, lat, added, None))
        for auth in (False, True):
            db = work / f"keys-{auth}.sqlite"
            settings = work / f"ttc-{auth}.toml"
            settings.write_text(SETTINGS.format(url=fake_url, auth=str(auth).lower(), db=db))
            key = None
            if auth:
                made = subprocess.run(
                    [sys.executable, "-m", "ttc.cli", "keys", "create", "bench", "--db", str(db)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                key = made.stdout.strip()
            server, url = _start(
                [
                    sys.executable,
                    "-m",
                    "ttc.cli",
                    "serve",
                    "--settings",
                    str(settings),
                    "--port",
                    "0",
                ],
                work / f"serve-{auth}.log",
                "listening on ",
                env,
            )
            processes.append(server)
            asyncio.run(_load(url, key, "best-of-4/fake", 1, 20))  # warm up
            before = _cpu_seconds(server.pid)
            wall, lat, added = asyncio.run(_load(url, key, "best-of-4/fake", 1, args.requests))
            cpu = _cpu_seconds(server.pid) - before
            name = "ttc serve, keys" if auth else "ttc serve, no auth"
            print(_row(name, wall, args.requests, lat, added, cpu))
            server.terminate()
            server.wait(30)
        if importlib.util.find_spec("optillm") is None:
            print("optillm: not installed, so no side-by-side row (pip install optillm to add it)")
        else:
            print("optillm: installed, but its proxy row is not automated here yet")
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main()
