"""UnitTests: candidate code against tests in a limited subprocess."""

from __future__ import annotations

import os
import re
import sys
import time

import anyio
import anyio.to_thread
import processes
import pytest

from ttc.errors import ConfigError, TTCError
from ttc.scoring.unit_tests import UnitTests, extract_code
from ttc.types import Candidate

pytestmark = pytest.mark.skipif(os.name != "posix", reason="UnitTests needs POSIX")

ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
GOOD = "```python\ndef add(a, b):\n    return a + b\n```"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def code(text: str) -> Candidate:
    return Candidate(text=text)


_alive, _gone = processes.alive, processes.gone


def test_extract_code() -> None:
    text = "Idea:\n```\nnot this\n```\nCode:\n```python\nx = 1\n```\nand\n```text\nnope\n```"
    assert extract_code(text) == "x = 1\n"
    assert extract_code("```\ny = 2\n```") == "y = 2\n"
    assert extract_code("```py\na\n```\n```python3\nb\n```") == "b\n"
    assert extract_code("z = 3") == "z = 3"


@pytest.mark.anyio
async def test_pass_and_fail() -> None:
    verifier = UnitTests(ADD_TESTS, timeout=5)
    candidates = [
        code(GOOD),
        code("def add(a, b):\n    return a - b"),  # wrong
        code("def add(a, b) return a"),  # syntax error
        code("print('no add here')"),  # NameError in the tests
    ]
    assert await verifier.verify("q", candidates) == [True, False, False, False]
    reports = verifier.last_reports
    assert len(reports) == 4
    assert reports[0].passed and reports[0].exit_code == 0
    assert "AssertionError" in reports[1].stderr and reports[1].exit_code == 1
    assert "SyntaxError" in reports[2].stderr
    assert "no add here" in reports[3].stdout and "NameError" in reports[3].stderr


@pytest.mark.anyio
async def test_exiting_early_with_zero_is_not_a_pass() -> None:
    """A candidate that exits 0 before the tests ran did not pass them."""
    verifier = UnitTests(ADD_TESTS, timeout=5)
    verdicts = await verifier.verify("q", [code("import sys\nsys.exit(0)")])
    assert verdicts == [False]
    assert verifier.last_reports[0].exit_code == 0


@pytest.mark.anyio
async def test_unittest_main() -> None:
    tests = (
        "import unittest\n\n"
        "class TestAdd(unittest.TestCase):\n"
        "    def test_add(self):\n"
        "        self.assertEqual(add(2, 2), 4)\n\n"
        "if __name__ == '__main__':\n"
        "    unittest.main()\n"
    )
    verifier = UnitTests(tests, timeout=5)
    candidates = [
        code(GOOD),
        code("def add(a, b):\n    return a * b + 1\n"),
        # Exits with 0 from inside the tests: unittest counts it as an error.
        code("import sys\ndef add(a, b):\n    sys.exit(0)\n"),
    ]
    assert await verifier.verify("q", candidates) == [True, False, False]
    assert "Ran 1 test" in verifier.last_reports[0].stderr


@pytest.mark.anyio
async def test_candidate_exiting_inside_the_tests_is_not_a_pass() -> None:
    exits = "import sys\ndef add(a, b):\n    sys.exit(0)\n"
    verifier = UnitTests(ADD_TESTS, timeout=5)
    assert await verifier.verify("q", [code(exits)]) == [False]
    # The tests themselves may end with sys.exit(0).
    ending = UnitTests(ADD_TESTS + "import sys\nsys.exit(0)\n", timeout=5)
    assert await ending.verify("q", [code(GOOD)]) == [True]


@pytest.mark.anyio
async def test_entry_point_and_check() -> None:
    tests = (
        "METADATA = {}\n\n"
        "def check(candidate):\n"
        "    assert candidate([1, 2, 3]) == 6\n"
        "    assert candidate([]) == 0\n"
    )
    verifier = UnitTests(tests, entry_point="total", timeout=5)
    candidates = [
        code("def total(xs):\n    return sum(xs)\n"),
        code("def total(xs):\n    return len(xs)\n"),  # check() fails
        code("def other(xs):\n    return sum(xs)\n"),  # no entry point
    ]
    assert await verifier.verify("q", candidates) == [True, False, False]
    # Without entry_point, check() is only defined, never called: the wrong one passes.
    assert await UnitTests(tests, timeout=5).verify("q", candidates[1:2]) == [True]


@pytest.mark.anyio
async def test_solution_main_block_does_not_run() -> None:
    solution = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    input()\n"
    assert await UnitTests(ADD_TESTS, timeout=5).verify("q", [code(solution)]) == [True]


@pytest.mark.anyio
async def test_timeout_kills_the_whole_process_group() -> None:
    candidate = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('child', child.pid, flush=True)\n"
        "while True:\n"
        "    pass\n"
    )
    verifier = UnitTests("", timeout=1.0)
    start = time.monotonic()
    assert await verifier.verify("q", [code(candidate)]) == [False]
    assert time.monotonic() - start < 5
    report = verifier.last_reports[0]
    # -9: killed by our SIGKILL; asyncio says 255 when another reaper in this process (a
    # library's) collected the status first, which happened about once in six full runs.
    assert report.timed_out and report.exit_code in (-9, 255)
    match = re.search(r"child (\d+)", report.stdout)
    assert match, report
    pid = int(match.group(1))
    if sys.platform.startswith("linux"):
        gone = await anyio.to_thread.run_sync(_gone, {pid}, 3.0)
        assert gone, "the candidate's child survived the timeout"


@pytest.mark.anyio
async def test_leftover_background_process_is_killed_after_a_pass() -> None:
    candidate = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print('child', child.pid, flush=True)\n"
        "def add(a, b):\n"
        "    return a + b\n"
    )
    verifier = UnitTests(ADD_TESTS, timeout=5)
    assert await verifier.verify("q", [code(candidate)]) == [True]
    match = re.search(r"child (\d+)", verifier.last_reports[0].stdout)
    assert match
    if sys.platform.startswith("linux"):
        pid = int(match.group(1))
        assert await anyio.to_thread.run_sync(_gone, {pid}, 3.0)


@pytest.mark.anyio
async def test_memory_limit() -> None:
    bomb = "data = bytearray(600 * 1024 * 1024)\ndef add(a, b):\n    return a + b\n"
    verifier = UnitTests(ADD_TESTS, timeout=5, memory_mb=256)
    assert await verifier.verify("q", [code(bomb)]) == [False]
    assert "MemoryError" in verifier.last_reports[0].stderr
    # The same code passes with room for it: the limit, not the code, failed it.
    roomy = UnitTests(ADD_TESTS, timeout=5, memory_mb=1536)
    assert await roomy.verify("q", [code(bomb)]) == [True]


@pytest.mark.anyio
async def test_environment_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    monkeypatch.setenv("PYTHONPATH", "/should/not/matter")
    tests = (
        "import os, sys\n"
        "print(sorted(os.environ))\n"
        "assert 'OPENAI_API_KEY' not in os.environ\n"
        "assert 'sk-should-not-leak' not in repr(dict(os.environ))\n"
        "assert set(os.environ) <= {'PATH', 'HOME', 'LANG', 'PYTHONHASHSEED',\n"
        "                           'PYTHONDONTWRITEBYTECODE'}\n"
        "assert os.environ['HOME'] == os.getcwd()\n"
        "assert hash('ttc') == hash('ttc')\n"
    )
    verifier = UnitTests(tests, timeout=5)
    assert await verifier.verify("q", [code("")]) == [True], verifier.last_reports[0]
    # And the check above can fail: the key is visible without the scrub.
    leaky = "import os\nassert 'OPENAI_API_KEY' in os.environ\n"
    assert await UnitTests(leaky, timeout=5).verify("q", [code("")]) == [False]


@pytest.mark.anyio
async def test_hash_seed_is_fixed() -> None:
    """PYTHONHASHSEED=0 holds, so set order (and so output) is the same on every run."""
    probe = "print(hash('ttc-seed'))\n"
    verifier = UnitTests(probe, timeout=5)
    await verifier.verify("q", [code(""), code("")])
    first, second = (r.stdout for r in verifier.last_reports)
    assert first == second and first.strip()


@pytest.mark.anyio
async def test_network_namespace_reported() -> None:
    probe = "import os\nprint(os.readlink('/proc/self/ns/net'))\n"
    verifier = UnitTests(probe, timeout=5)
    assert verifier.network_isolated is None
    assert await verifier.verify("q", [code("")]) == [True]
    assert verifier.network_isolated is not None
    report = verifier.last_reports[0]
    assert report.network_isolated == verifier.network_isolated
    if sys.platform.startswith("linux"):
        mine = os.readlink("/proc/self/ns/net")
        theirs = report.stdout.strip()
        assert (theirs != mine) == verifier.network_isolated


@pytest.mark.anyio
async def test_output_is_capped() -> None:
    verifier = UnitTests("print('x' * 100_000)\nprint('END')\n", timeout=5, max_output_bytes=1000)
    assert await verifier.verify("q", [code("")]) == [True]
    out = verifier.last_reports[0].stdout
    assert out.endswith("END\n") and "bytes dropped" in out and len(out) < 1100


@pytest.mark.anyio
async def test_runs_concurrently_but_bounded() -> None:
    stamp = "import time\nstart = time.time()\ntime.sleep(0.4)\nprint(start, time.time())\n"
    verifier = UnitTests(stamp, timeout=5, concurrency=2)
    assert await verifier.verify("q", [code("")] * 5) == [True] * 5
    spans = [tuple(map(float, r.stdout.split())) for r in verifier.last_reports]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2  # two at a time: never more, and not one after another


@pytest.mark.anyio
@pytest.mark.skipif(os.geteuid() == 0, reason="RLIMIT_NPROC does not apply to root")
async def test_process_limit() -> None:
    """Forking more processes than the limit allows fails. Bounded: at most 20 tries."""
    forker = (
        "import os, sys\n"
        "pids = []\n"
        "try:\n"
        "    for _ in range(20):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            import time; time.sleep(5); os._exit(0)\n"
        "        pids.append(pid)\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
    )
    # A limit at the user's current count leaves no room for 20 more.
    verifier = UnitTests(forker, timeout=5, max_processes=1)
    assert await verifier.verify("q", [code("")]) == [False]
    assert verifier.last_reports[0].exit_code in (1, 3)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="entry_point"):
        UnitTests("", entry_point="not valid")
    with pytest.raises(ConfigError, match="entry_point"):
        UnitTests("", entry_point="class")
    with pytest.raises(ConfigError, match="timeout"):
        UnitTests("", timeout=0)
    with pytest.raises(ConfigError, match="memory_mb"):
        UnitTests("", memory_mb=1)
    with pytest.raises(ConfigError, match="concurrency"):
        UnitTests("", concurrency=0)


@pytest.mark.anyio
async def test_sandbox_failure_is_an_error_not_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits that cannot be applied stop the run: no candidate runs without them."""
    verifier = UnitTests(ADD_TESTS, timeout=5)
    monkeypatch.setattr(verifier, "_limits", lambda: [("RLIMIT_NO_SUCH_LIMIT", 1)])
    with pytest.raises(TTCError, match="sandbox"):
        await verifier.verify("q", [code(GOOD)])


class _StatusLost:
    """An anyio process whose exit status asyncio could not collect: it then reports 255
    (``ThreadedChildWatcher``: "Unknown child process pid ..., will report returncode 255"),
    as it does when another reaper in the process took the status first."""

    def __init__(self, process: object) -> None:
        self._process = process

    def __getattr__(self, name: str) -> object:
        return getattr(self._process, name)

    @property
    def returncode(self) -> int | None:
        code = self._process.returncode  # type: ignore[attr-defined]
        return None if code is None else 255


@pytest.mark.anyio
async def test_a_lost_exit_status_does_not_fail_a_passing_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_open = anyio.open_process

    async def open_losing_status(*args: object, **kwargs: object) -> _StatusLost:
        return _StatusLost(await real_open(*args, **kwargs))  # type: ignore[arg-type]

    monkeypatch.setattr(anyio, "open_process", open_losing_status)
    verifier = UnitTests(ADD_TESTS, timeout=5)
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    assert await verifier.verify("q", [code(GOOD), code(wrong)]) == [True, False]
    passed, failed = verifier.last_reports
    assert passed.exit_code == 0  # the script's last act is os._exit(0)
    assert failed.exit_code == 255 and "AssertionError" in failed.stderr


@pytest.mark.anyio
async def test_what_the_candidate_leaves_running_cannot_change_a_pass() -> None:
    lingering = (
        "```python\n"
        "import atexit, os, threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,)).start()  # not a daemon\n"
        "atexit.register(lambda: os._exit(3))\n"
        "def add(a, b):\n"
        "    return a + b\n"
        "```"
    )
    verifier = UnitTests(ADD_TESTS, timeout=5)
    start = time.monotonic()
    assert await verifier.verify("q", [code(lingering)]) == [True]
    assert time.monotonic() - start < 4  # not held until the timeout by the thread
    assert verifier.last_reports[0].exit_code == 0
