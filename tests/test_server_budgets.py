"""Per-key budgets of ttc serve: limits hold under random concurrency (SQLite, and PostgreSQL
with two server processes), a restart keeps what was spent, 429 says why, keys from the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import openai
import pytest
from threaded_fake import threaded_fake
from typer.testing import CliRunner

from ttc.config import KeyLimits, TTCConfig, parse_config
from ttc.runtime.budget import Charge
from ttc.server.keys import KeyStore, SQLiteKeyStore, open_key_store
from ttc.server.testing import ServerThread
from ttc.testing import FakeProvider

T = TypeVar("T")

CONFIG = """\
[models.fake]
model = "openai-compatible/fake-model@{url}"
price = {{ input_per_million = 1.0, output_per_million = 2.0 }}
params = {{ max_tokens = 24 }}

[server]
request_tokens = 400
request_usd = 0.0004
keys_db = "{db}"
log_json = true
"""
MODELS = ("fake", "best-of-3/fake", "self-consistency-2/fake")


@pytest.fixture
def upstream() -> Iterator[FakeProvider]:
    with threaded_fake("openai", latency=0.01) as fake:
        yield fake


def config_for(fake: FakeProvider, db: str) -> TTCConfig:
    return parse_config(CONFIG.format(url=fake.base_url, db=db))


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def go() -> T:
        return await coro

    return anyio.run(go)


async def create_keys(store: KeyStore, rng: random.Random, count: int) -> dict[str, Any]:
    keys = {}
    for i in range(count):
        limits = KeyLimits(
            tokens=rng.randint(100, 700),
            requests=rng.randint(3, 30),
            usd=rng.choice([None, 0.002]),
            period=rng.choice(["day", "month", "total"]),
        )
        info, secret = await store.create(f"key{i}", limits)
        keys[secret] = info
    await store.close()
    return keys


async def hammer(
    urls: list[str], secrets: list[str], rng: random.Random, requests: int
) -> list[tuple[str, int, dict[str, Any]]]:
    """Send ``requests`` chat requests at once, each with a random key, server, model, n."""
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> tuple[str, int, dict[str, Any]]:
            secret = rng.choice(secrets)
            body = {
                "model": rng.choice(MODELS),
                "messages": [{"role": "user", "content": f"What is {i} * 3?"}],
                "n": rng.randint(1, 2),
            }
            async with session.post(
                rng.choice(urls) + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {secret}"},
            ) as response:
                return secret, response.status, await response.json()

        return await asyncio.gather(*[one(i) for i in range(requests)])


def check_ledger(
    store: KeyStore, keys: dict[str, Any], answers: list[tuple[str, int, dict[str, Any]]]
) -> tuple[int, int]:
    """Every key within its limits, and its ledger exactly what its answers say they cost."""
    assert {status for _, status, _ in answers} <= {200, 429}, answers
    refused = 0
    for _, status, body in answers:
        if status == 429:
            refused += 1
            assert body["error"]["type"] == "insufficient_quota"
            assert "budget" in body["error"]["message"]

    async def totals() -> dict[str, Any]:
        out = {}
        for secret, info in keys.items():
            out[secret] = await store.spent(info)
        await store.close()
        return out

    spent = run(totals())
    ledger_tokens = 0
    used: list[float] = []
    for secret, info in keys.items():
        # A request refused after some calls (the budget ran out before any answer) says
        # in its error body what those calls cost: the key paid for them too.
        paid = [b for s, _, b in answers if s == secret and "ttc" in b]
        tokens = sum(
            b["usage"]["total_tokens"] if "usage" in b else b["ttc"]["usage"]["total_tokens"]
            for b in paid
        )
        usd = sum(b["ttc"]["cost_usd"] for b in paid)
        charge = spent[secret]
        assert charge.tokens == tokens, (info.name, charge, tokens)
        assert charge.requests == len(paid)
        assert charge.usd == pytest.approx(usd, abs=1e-12)
        assert charge.tokens <= info.limits.tokens
        assert charge.requests <= info.limits.requests
        if info.limits.usd is not None:
            assert charge.usd <= info.limits.usd + 1e-12
        ledger_tokens += charge.tokens
        used.append(max(charge.tokens / info.limits.tokens, charge.requests / info.limits.requests))
    # Requests held back only by others' reservations waited for them rather than being
    # refused: some key got to use most of a limit.
    assert max(used) >= 0.5, used
    return ledger_tokens, refused


@pytest.mark.parametrize("seed", [0, 1])
def test_random_concurrent_clients_never_pass_a_keys_limit_sqlite(
    upstream: FakeProvider, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    db = tmp_path / "keys.sqlite"
    keys = run(create_keys(SQLiteKeyStore(db), rng, 4))
    with ServerThread(config_for(upstream, str(db)), store_path=db) as server:
        answers = asyncio.run(hammer([server.url], list(keys), rng, 80))
    ledger_tokens, refused = check_ledger(SQLiteKeyStore(db), keys, answers)
    assert refused > 0 and refused < len(answers)  # the limits were reached, not trivially
    # What the provider billed is exactly what the keys were charged: nothing unaccounted.
    assert upstream.stats.billed_tokens == ledger_tokens


def test_a_restart_keeps_what_was_spent(upstream: FakeProvider, tmp_path: Path) -> None:
    db = tmp_path / "keys.sqlite"

    async def make() -> str:
        store = SQLiteKeyStore(db)
        _, secret = await store.create("carol", KeyLimits(requests=3, period="month"))
        await store.close()
        return secret

    secret = run(make())
    messages = [{"role": "user", "content": "What is 2 * 2?"}]
    with ServerThread(config_for(upstream, str(db)), store_path=db) as server:
        c = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
        for _ in range(3):
            c.chat.completions.create(model="fake", messages=messages)  # type: ignore[arg-type]
    with ServerThread(config_for(upstream, str(db)), store_path=db) as server:
        c = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            c.chat.completions.create(model="fake", messages=messages)  # type: ignore[arg-type]
    assert info.value.status_code == 429
    assert "API key 'carol' is over its requests budget this month: 3 of 3" in str(info.value)
    store = SQLiteKeyStore(db)
    key = run(store.get("carol"))
    assert key is not None
    assert run(store.spent(key)).requests == 3


def test_a_streamed_request_over_budget_gets_429_before_any_event(
    upstream: FakeProvider, tmp_path: Path
) -> None:
    db = tmp_path / "keys.sqlite"

    async def make() -> str:
        store = SQLiteKeyStore(db)
        _, secret = await store.create("dave", KeyLimits(tokens=0))
        await store.close()
        return secret

    secret = run(make())
    with ServerThread(config_for(upstream, str(db)), store_path=db) as server:
        c = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
        with pytest.raises(openai.RateLimitError, match="over its tokens budget today"):
            c.chat.completions.create(
                model="best-of-3/fake",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
            )
    assert upstream.stats.requests == 0


def test_a_reservation_too_small_for_one_call_is_429_and_costs_nothing(
    upstream: FakeProvider, tmp_path: Path
) -> None:
    db = tmp_path / "keys.sqlite"

    async def make() -> str:
        store = SQLiteKeyStore(db)
        _, secret = await store.create("erin", KeyLimits(tokens=10, requests=5))
        await store.close()
        return secret

    secret = run(make())
    with ServerThread(config_for(upstream, str(db)), store_path=db) as server:
        c = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
        with pytest.raises(openai.RateLimitError, match="budget ran out before any answer"):
            c.chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])
    store = SQLiteKeyStore(db)
    key = run(store.get("erin"))
    assert key is not None
    assert run(store.spent(key)) == Charge(0, 0.0, 0)
    assert upstream.stats.requests == 0


def test_keys_are_created_listed_and_revoked_from_the_command_line(tmp_path: Path) -> None:
    from ttc.cli import app

    db = str(tmp_path / "keys.sqlite")
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "frank", "--tokens", "500", "--db", db])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[0]
    assert secret.startswith("ttc-")
    store = SQLiteKeyStore(db)
    info = run(store.lookup(secret))
    assert info is not None and info.name == "frank" and info.limits.tokens == 500
    raw = (tmp_path / "keys.sqlite").read_bytes()
    assert secret.encode() not in raw  # stored hashed
    listed = runner.invoke(app, ["keys", "list", "--json", "--db", db])
    assert json.loads(listed.stdout)["remaining"] == {"tokens": 500.0}
    assert runner.invoke(app, ["keys", "revoke", "frank", "--db", db]).exit_code == 0
    store = SQLiteKeyStore(db)
    assert run(store.lookup(secret)) is None
    again = runner.invoke(app, ["keys", "create", "frank", "--db", db])
    assert again.exit_code == 2 and "exists already" in again.output
    settings = tmp_path / "ttc.toml"
    settings.write_text(
        f'[server]\nkeys_db = "{db}"\ndefault_limits = {{ usd = 2.5, period = "month" }}\n'
    )
    made = runner.invoke(app, ["keys", "create", "gail", "--settings", str(settings)])
    assert made.exit_code == 0, made.output
    store = SQLiteKeyStore(db)
    info = run(store.get("gail"))
    assert info is not None and (info.limits.usd, info.limits.period) == (2.5, "month")


# --------------------------------------------------------------------------------------------
# PostgreSQL: a real server started from the machine's PostgreSQL installation


def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server on a free port; its DSN. Root cannot run postgres: as root, the
    cluster belongs to ``nobody``."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    base = tmp_path_factory.mktemp("pg")
    data = base / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        os.chmod(base, 0o777)
        for parent in base.parents:
            if str(parent) in ("/", "/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o711)
        # setpriv execs postgres itself (runuser would stay its parent and keep the signal).
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "ttc"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    log = open(base / "pg.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    process = subprocess.Popen(
        [
            *prefix,
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(base),
            "-c",
            "max_connections=100",
            "-c",
            "fsync=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    dsn = f"postgresql://ttc@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError((base / "pg.log").read_text()) from None
                time.sleep(0.1)
        yield dsn
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
        log.close()


def _serve(settings: Path, log: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    handle = open(log, "wb")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "ttc.cli", "serve", "--settings", str(settings), "--port", "0"],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("listening on "):
                return process, line.removeprefix("listening on ").strip()
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(log.read_text())


def test_two_server_processes_sharing_postgresql_never_pass_a_keys_limit(
    upstream: FakeProvider, postgres: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    keys = run(create_keys(open_key_store(postgres), rng, 3))
    settings = tmp_path / "ttc.toml"
    text = CONFIG.format(url=upstream.base_url, db="unused").replace(
        'keys_db = "unused"', 'keys_db_env = "TTC_TEST_PG_DSN"'
    )
    settings.write_text(text)
    env = {**os.environ, "TTC_TEST_PG_DSN": postgres, "PYTHONPATH": str(Path.cwd())}
    servers = [_serve(settings, tmp_path / f"serve{i}.log", env) for i in range(2)]
    try:
        urls = [url for _, url in servers]
        answers = asyncio.run(hammer(urls, list(keys), rng, 80))
    finally:
        for process, _ in servers:
            process.send_signal(signal.SIGTERM)
        for process, _ in servers:
            assert process.wait(30) == 0
    ledger_tokens, refused = check_ledger(open_key_store(postgres), keys, answers)
    assert 0 < refused < len(answers)
    assert upstream.stats.billed_tokens == ledger_tokens
    # Both processes served, and logged one JSON line a request with its id.
    for i in range(2):
        lines = [
            json.loads(x)
            for x in (tmp_path / f"serve{i}.log").read_text().splitlines()
            if x.startswith("{")
        ]
        served = [x for x in lines if x.get("message") == "request"]
        assert served and all(x["request_id"] and "key" in x for x in served)


def test_a_reservation_in_flight_makes_others_wait_not_fail(tmp_path: Path) -> None:
    from ttc.runtime.budget import Charge
    from ttc.server.keys import KeyBudgetExceeded

    async def go() -> None:
        store = SQLiteKeyStore(tmp_path / "keys.sqlite")
        info, _ = await store.create("hal", KeyLimits(tokens=100, requests=10))
        first = await store.reserve(info, Charge(tokens=1000, usd=1.0))
        assert first.reserved.tokens == 100  # all that is left, at most the cap
        with pytest.raises(KeyBudgetExceeded) as held:
            await store.reserve(info, Charge(tokens=1000, usd=1.0))
        assert held.value.pending  # in flight: worth waiting for
        settled = await store.settle(first, Charge(tokens=30, usd=0.0, requests=1))
        assert settled == Charge(30, 0.0, 1)
        second = await store.reserve(info, Charge(tokens=1000, usd=1.0))
        assert second.reserved.tokens == 70
        await store.settle(second, Charge(tokens=70, usd=0.0, requests=1))
        with pytest.raises(KeyBudgetExceeded) as spent:
            await store.reserve(info, Charge(tokens=1000, usd=1.0))
        assert not spent.value.pending  # spent for good: 429 at once
        await store.close()

    run(go())


def test_a_sqlite_ledger_locked_by_another_process_is_waited_for(tmp_path: Path) -> None:
    import sqlite3

    from ttc.runtime.budget import Charge

    db = tmp_path / "keys.sqlite"

    async def go() -> None:
        store = SQLiteKeyStore(db)
        info, _ = await store.create("ivy", KeyLimits(tokens=100))
        other = sqlite3.connect(db, isolation_level=None)  # another server's connection
        other.execute("BEGIN IMMEDIATE")  # it holds the write lock
        async with anyio.create_task_group() as tg:
            done: list[Any] = []

            async def reserve() -> None:
                done.append(await store.reserve(info, Charge(tokens=40, usd=1.0)))

            tg.start_soon(reserve)
            await anyio.sleep(0.3)
            assert not done  # waiting (off the event loop, which keeps running)
            other.execute("COMMIT")
        assert done[0].reserved.tokens == 40
        other.close()
        await store.close()

    run(go())
