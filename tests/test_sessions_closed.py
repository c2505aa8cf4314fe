"""No "Unclosed client session" dumps: ttc closes the HTTP sessions it opened (issue 11, bug 7).

Each case runs a README-like script in a fresh interpreter against a ``FakeProvider`` (served
from a thread) and reads its stderr: after a plain ``asyncio.run`` that never calls
``aclose()``, after a failing run, after ``run_sync``, for a model dropped on a live loop or
after its loop was closed by hand, and for ``ttc run`` failing on a 401.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import asyncio, gc, sys, threading
from ttc import BestOfN, RetryPolicy
from ttc.adapters import OpenAICompatible
from ttc.testing import FakeProvider

ready = threading.Event()
box = {}

def serve():
    async def main():
        provider = FakeProvider("openai", api_key="sk-right")
        await provider.start()
        box["url"] = provider.base_url
        ready.set()
        await asyncio.Event().wait()
    asyncio.run(main())

threading.Thread(target=serve, daemon=True).start()
ready.wait()
case = sys.argv[1]
key = "sk-wrong" if case.endswith("fails") else "sk-right"
model = OpenAICompatible(
    "m", base_url=box["url"], api_key=key, retry=RetryPolicy(max_attempts=1)
)

async def main():
    return await BestOfN(model, n=4).run("What is 17 * 23?")

def report(run):
    try:
        print("answer", run().answer)
    except Exception as exc:
        print("error", type(exc).__name__)

if case.startswith("asyncio.run"):
    report(lambda: asyncio.run(main()))
elif case.startswith("run_sync"):
    report(lambda: BestOfN(model, n=4).run_sync("What is 17 * 23?"))
elif case == "dropped on a live loop":
    async def drop():
        global model
        print("answer", (await main()).answer)
        del model
        gc.collect()
        await asyncio.sleep(0.05)
    asyncio.run(drop())
elif case == "dropped after a loop closed by hand":
    loop = asyncio.new_event_loop()
    print("answer", loop.run_until_complete(main()).answer)
    loop.close()
    del model
    gc.collect()
elif case == "cli fails":
    from ttc.cli import app
    sys.argv = ["ttc", "run", "What is 17 * 23?", "--n", "2", "--model",
                "openai-compatible/m@" + box["url"]]
    try:
        app()
    except SystemExit as exc:
        print("exit", exc.code)
globals().pop("model", None)  # the README's script ends: its model goes away unclosed
gc.collect()
"""

CASES = [
    ("asyncio.run", "answer 39"),
    ("asyncio.run fails", "error AuthenticationError"),
    ("run_sync", "answer 39"),
    ("run_sync fails", "error AuthenticationError"),
    ("dropped on a live loop", "answer 39"),
    ("dropped after a loop closed by hand", "answer 39"),
    ("cli fails", "exit 1"),
]


@pytest.mark.parametrize(("case", "prints"), CASES, ids=[c[0] for c in CASES])
def test_no_unclosed_session_warning(tmp_path: Path, case: str, prints: str) -> None:
    script = tmp_path / "readme_like.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(script), case],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert prints in done.stdout, (done.stdout, done.stderr)
    assert "Unclosed" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
