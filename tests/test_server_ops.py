"""ttc serve in operation: graceful shutdown, cancelled requests settled, request timeouts,
JSON logs with request ids, the ``ttc run --settings`` profile."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
from threaded_fake import threaded_fake

from ttc.config import KeyLimits, TTCConfig, parse_config
from ttc.server.keys import SQLiteKeyStore
from ttc.server.runner import JSONFormatter
from ttc.server.testing import ServerThread
from ttc.testing import FakeProvider

CONFIG = """\
[models.slow]
model = "openai-compatible/fake-model@{url}"
price = {{ input_per_million = 1.0, output_per_million = 2.0 }}
params = {{ max_tokens = 16 }}
retry = {{ max_attempts = 1 }}

[server]
shutdown_timeout = {shutdown}
request_timeout = {timeout}
"""


@pytest.fixture
def slow() -> Iterator[FakeProvider]:
    with threaded_fake("openai", latency=0.6) as fake:
        yield fake


def setup(
    fake: FakeProvider, tmp_path: Path, shutdown: float = 30, timeout: float = 300
) -> tuple[TTCConfig, Path, str]:
    config = parse_config(CONFIG.format(url=fake.base_url, shutdown=shutdown, timeout=timeout))
    db = tmp_path / "keys.sqlite"

    async def make() -> str:
        store = SQLiteKeyStore(db)
        _, secret = await store.create("gina", KeyLimits(tokens=10_000))
        await store.close()
        return secret

    return config, db, anyio.run(make)


def spent(db: Path) -> Any:
    async def go() -> Any:
        store = SQLiteKeyStore(db)
        key = await store.get("gina")
        assert key is not None
        charge = await store.spent(key)
        await store.close()
        return charge

    return anyio.run(go)


def ask(url: str, secret: str, out: list[Any]) -> None:
    c = openai.OpenAI(base_url=url, api_key=secret, max_retries=0, timeout=30)
    try:
        out.append(
            c.chat.completions.create(
                model="best-of-2/slow", messages=[{"role": "user", "content": "What is 3 * 3?"}]
            )
        )
    except Exception as exc:
        out.append(exc)


def wait_for(condition: Any, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_shutdown_lets_requests_in_flight_finish(slow: FakeProvider, tmp_path: Path) -> None:
    config, db, secret = setup(slow, tmp_path)
    out: list[Any] = []
    server = ServerThread(config, store_path=db).start()
    client = threading.Thread(target=ask, args=(server.url, secret, out))
    client.start()
    wait_for(lambda: slow.in_flight > 0)
    server.stop()
    client.join(30)
    assert not isinstance(out[0], Exception), out[0]
    assert out[0].usage.total_tokens == spent(db).tokens > 0


def test_requests_cancelled_at_shutdown_are_settled_at_their_worst_case(
    slow: FakeProvider, tmp_path: Path
) -> None:
    config, db, secret = setup(slow, tmp_path, shutdown=0.05)
    out: list[Any] = []
    server = ServerThread(config, store_path=db).start()
    client = threading.Thread(target=ask, args=(server.url, secret, out))
    client.start()
    wait_for(lambda: slow.in_flight > 0)
    server.stop()
    client.join(30)
    assert isinstance(out[0], openai.APIError | openai.APIConnectionError)
    wait_for(lambda: slow.in_flight == 0)
    charge = spent(db)
    # The provider billed the cancelled calls; the key was charged at least that.
    assert charge.requests == 1
    assert charge.tokens >= slow.stats.billed_tokens > 0


def test_a_request_over_the_time_limit_is_504_and_charged(
    slow: FakeProvider, tmp_path: Path
) -> None:
    config, db, secret = setup(slow, tmp_path, timeout=0.2)
    with ServerThread(config, store_path=db) as server:
        c = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 504
    assert "longer than the server's limit of 0.2 s" in str(info.value)
    wait_for(lambda: slow.in_flight == 0)
    assert spent(db).tokens >= slow.stats.billed_tokens


def test_logs_are_json_with_the_request_id_and_never_the_key_or_prompt(
    slow: FakeProvider, tmp_path: Path
) -> None:
    config, db, secret = setup(slow, tmp_path)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(JSONFormatter().format(record))

    logger = logging.getLogger("ttc.server")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with ServerThread(config, store_path=db) as server:
            c = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
            c.chat.completions.create(
                model="slow",
                messages=[{"role": "user", "content": "secret prompt 7 * 7"}],
                extra_headers={"X-Request-Id": "req-42"},
            )
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(r) for r in records]
    line = next(x for x in lines if x.get("request_id") == "req-42")
    assert line["status"] == 200 and line["key"] == "gina" and line["model"] == "slow"
    assert line["tokens"] > 0 and line["cost_usd"] > 0
    assert all(secret not in r and "secret prompt" not in r for r in records)


def test_a_stream_sends_progress_comments_while_it_samples(
    slow: FakeProvider, tmp_path: Path
) -> None:
    import urllib.request

    config, db, secret = setup(slow, tmp_path)
    with ServerThread(config, store_path=db) as server:
        request = urllib.request.Request(
            server.url + "/chat/completions",
            data=json.dumps(
                {
                    "model": "best-of-2/slow",
                    "messages": [{"role": "user", "content": "What is 4 * 4?"}],
                    "stream": True,
                }
            ).encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            events = response.read().decode().split("\n\n")
    comments = [e for e in events if e.startswith(": progress ")]
    data = [e.removeprefix("data: ") for e in events if e.startswith("data: ")]
    assert comments and json.loads(comments[0].removeprefix(": progress "))["requests"] == 0
    assert data[-1] == "[DONE]"
    last = json.loads(data[-2])
    assert last["choices"] == [] and last["usage"]["total_tokens"] == spent(db).tokens
    # Progress comes first, then the answer: no content chunk before the last comment.
    assert events.index(comments[-1]) < min(
        i for i, e in enumerate(events) if e.startswith("data: ")
    )


def test_metrics_report_what_each_key_has_left(slow: FakeProvider, tmp_path: Path) -> None:
    import urllib.request

    config, db, secret = setup(slow, tmp_path)
    with ServerThread(config, store_path=db) as server:
        c = openai.OpenAI(base_url=server.url, api_key=secret, max_retries=0)
        reply = c.chat.completions.create(model="slow", messages=[{"role": "user", "content": "x"}])
        text = urllib.request.urlopen(server.url.removesuffix("/v1") + "/metrics").read().decode()
    assert reply.usage is not None
    left = 10_000 - reply.usage.total_tokens
    assert f'ttc_key_budget_remaining{{key="gina",limit="tokens"}} {left:.1f}' in text
    assert 'ttc_strategy_runs_total{strategy="none"} 1.0' in text


def test_ttc_serve_runs_as_a_command_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    settings = tmp_path / "ttc.toml"
    settings.write_text("[server]\nauth = false\nlog_json = true\n")
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "ttc.cli", "serve", "--settings", str(settings), "--port", "0"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: "listening on " in log.read_text() or process.poll() is not None, 60)
        url = next(
            line.removeprefix("listening on ")
            for line in log.read_text().splitlines()
            if line.startswith("listening on ")
        )
        root = url.removesuffix("/v1")
        assert json.loads(urllib.request.urlopen(root + "/ready").read())["status"] == "ready"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    messages = [json.loads(x)["message"] for x in log.read_text().splitlines() if x[:1] == "{"]
    assert messages[0] == "listening" and messages[-1] == "stopped"

    settings.write_text("[server]\nport = -1\n")
    bad = subprocess.run(
        [sys.executable, "-m", "ttc.cli", "serve", "--settings", str(settings)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert f"{settings}:2: server.port:" in bad.stderr
