"""UnitTests: candidate code against tests in a limited subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import processes
import pytest

from ttc.errors import ConfigError, TTCError
from ttc.scoring import _sandbox
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


def _others_can_run(python: str) -> bool:
    """Whether a uid other than ours can read ``python``'s standard library."""
    library = subprocess.run(
        [python, "-S", "-c", "import os; print(os.path.dirname(os.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = Path(os.path.realpath(library))
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _fallback_python() -> str | None:
    """An interpreter for the fallback sandbox: as root, the candidate's own uid must be able
    to read its library (a Python under /root, say, is not)."""
    if os.geteuid() != 0 or _others_can_run(sys.executable):
        return sys.executable
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(python) and _others_can_run(python):
            return python
    return None


_FALLBACK_PYTHON = _fallback_python()
#: The two sandboxes: every hostile candidate below runs in both.
SANDBOXES = [
    pytest.param(
        "bwrap",
        sys.executable,
        marks=pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap not installed"),
        id="bwrap",
    ),
    pytest.param(
        "process",
        _FALLBACK_PYTHON or sys.executable,
        marks=pytest.mark.skipif(
            _FALLBACK_PYTHON is None, reason="no Python another uid can run (as root)"
        ),
        id="process",
    ),
]
ROOT = os.geteuid() == 0


def _token() -> str:
    return f"ttc-probe-{uuid.uuid4().hex}"


def _running_with(token: str) -> list[int]:
    """Live processes (any PID namespace, seen from ours) whose command line holds ``token``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            command = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in command and processes.alive(int(name)):
            found.append(int(name))
    return found


def _none_running_with(token: str, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while _running_with(token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _sleeper(token: str, *, new_session: bool = False, redirect: bool = True) -> str:
    """Candidate code that starts a 60 s sleeper recognisable by ``token``."""
    return (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
        f"{token!r}], start_new_session={new_session!r}"
        + (", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL" if redirect else "")
        + ")\n"
    )


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
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_timeout_kills_the_whole_process_group(isolation: str, python: str) -> None:
    token = _token()
    candidate = _sleeper(token, redirect=False) + "while True:\n    pass\n"
    verifier = UnitTests("", timeout=1.0, isolation=isolation, python=python)
    start = time.monotonic()
    assert await verifier.verify("q", [code(candidate)]) == [False]
    assert time.monotonic() - start < 5
    report = verifier.last_reports[0]
    # -9: killed by our SIGKILL; asyncio says 255 when another reaper in this process (a
    # library's) collected the status first, which happened about once in six full runs.
    assert report.timed_out and report.exit_code in (-9, 255)
    assert "timed out" in report.reason
    assert await anyio.to_thread.run_sync(_none_running_with, token), "a child survived"


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_leftover_background_process_is_killed_after_a_pass(
    isolation: str, python: str
) -> None:
    token = _token()
    candidate = _sleeper(token) + "def add(a, b):\n    return a + b\n"
    verifier = UnitTests(ADD_TESTS, timeout=5, isolation=isolation, python=python)
    assert await verifier.verify("q", [code(candidate)]) == [True], verifier.last_reports
    assert await anyio.to_thread.run_sync(_none_running_with, token)


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
        "                           'PYTHONDONTWRITEBYTECODE', 'TMPDIR', 'PWD'}\n"  # bwrap: PWD
        "assert os.environ.get('PWD', os.getcwd()) == os.getcwd()\n"
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
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_multiprocessing_and_tempfiles_work_inside(isolation: str, python: str) -> None:
    """Ordinary code that uses a process pool (semaphores in /dev/shm) and temporary files."""
    candidate = (
        "import multiprocessing, tempfile\n"
        "def square(x):\n"
        "    return x * x\n"
        "def squares(xs):\n"
        "    with multiprocessing.Pool(2) as pool:\n"
        "        return pool.map(square, xs)\n"
        "def scratch():\n"
        "    with tempfile.NamedTemporaryFile(delete=False) as f:\n"
        "        return f.name\n"
    )
    tests = (
        "import os\n"
        "assert squares([1, 2, 3]) == [1, 4, 9]\n"
        "assert os.path.dirname(scratch()) == os.getcwd()\n"
    )
    verifier = UnitTests(tests, timeout=10, isolation=isolation, python=python)
    assert await verifier.verify("q", [code(candidate)]) == [True], verifier.last_reports


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
    stamp = "import time\nstart = time.time()\ntime.sleep(0.8)\nprint(start, time.time())\n"
    verifier = UnitTests(stamp, timeout=5, concurrency=2)
    assert await verifier.verify("q", [code("")] * 5) == [True] * 5
    spans = [tuple(map(float, r.stdout.split())) for r in verifier.last_reports]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2  # two at a time: never more, and not one after another


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
    with pytest.raises(ConfigError, match="disk_mb"):
        UnitTests("", disk_mb=0)
    with pytest.raises(ConfigError, match="isolation"):
        UnitTests("", isolation="docker")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tests must be valid Python"):
        UnitTests("assert (")


@pytest.mark.anyio
@pytest.mark.skipif(_FALLBACK_PYTHON is None, reason="no Python another uid can run (as root)")
async def test_without_bwrap_auto_falls_back_and_bwrap_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_sandbox.shutil, "which", lambda name: None)
    monkeypatch.setattr(_sandbox, "_probed", {})
    with pytest.raises(TTCError, match="bwrap is not installed"):
        await UnitTests(ADD_TESTS, isolation="bwrap").verify("q", [code(GOOD)])
    assert _FALLBACK_PYTHON is not None
    verifier = UnitTests(ADD_TESTS, python=_FALLBACK_PYTHON)
    assert await verifier.verify("q", [code(GOOD)]) == [True]
    assert verifier.last_reports[0].isolation == "process"


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


# --- Hostile candidates ------------------------------------------------------------------------
# Each runs in both sandboxes (as root in CI). Tests that end with a "contained" verdict are
# written so that the candidate *passes* only if the attack worked.


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_forged_pass(isolation: str, python: str) -> None:
    """Failing tests, and a candidate that forges every end marker it could know of: files,
    output, any open file descriptor, then a clean exit. It must not pass."""
    forger = (
        "import os, glob, re\n"
        "for name in ('.ttc_done', '.ttc_ready', 'done', 'ok'):\n"
        "    open(name, 'w').write('1')\n"
        "for script in glob.glob('*.py'):\n"  # the end marker's secret, wherever it is kept
        "    for secret in re.findall(r'[0-9a-f]{32}', open(script).read()):\n"
        "        open('.ttc_done', 'w').write(secret)\n"
        "        print('done', secret, flush=True)\n"
        "print('done', flush=True)\n"
        "for fd in range(3, 64):\n"
        "    for line in ('ready 1', 'loaded', 'ok 0 0', 'done 0 1', 'done', 'ok'):\n"
        "        try:\n"
        "            os.write(fd, (line + '\\n').encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "for path in glob.glob('*') + glob.glob('/proc/self/cmdline'):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read()[:200])\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    honest_but_wrong = "def add(a, b):\n    return 0\n"
    verifier = UnitTests("assert False\n", timeout=5, isolation=isolation, python=python)
    assert await verifier.verify("q", [code(forger), code(honest_but_wrong)]) == [False, False]
    forged = verifier.last_reports[0]
    assert forged.exit_code == 0 and not forged.passed and forged.reason
    # And a run that stops before its last test statement does not pass either.
    early = "def add(a, b):\n    raise SystemExit(0)\n"
    tests = "x = 1\nassert add(1, 2) == 3\n"
    assert await UnitTests(tests, timeout=5, isolation=isolation, python=python).verify(
        "q", [code(early)]
    ) == [False]


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_reads_secrets(
    isolation: str, python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTC_PROBE_SECRET", "sk-parent-secret")
    secret = tmp_path / "secret.txt"
    secret.write_text("sk-file-secret")
    secret.chmod(0o600)
    thief = (
        "import os\n"
        "stolen = [v for v in os.environ.values() if 'secret' in v]\n"
        "try:\n"
        f"    stolen.append(open({str(secret)!r}).read())\n"
        "except OSError as exc:\n"
        "    print('blocked:', exc)\n"
    )
    verifier = UnitTests("assert stolen\n", timeout=5, isolation=isolation, python=python)
    verdicts = await verifier.verify("q", [code(thief)])
    if ROOT or isolation == "bwrap":
        assert verdicts == [False], verifier.last_reports[0]
        assert "blocked" in verifier.last_reports[0].stdout
    else:  # the fallback runs as your user: it reads what you can read (documented)
        assert verdicts == [True]


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_writes_outside_its_directory(
    isolation: str, python: str, tmp_path: Path
) -> None:
    token = _token()
    targets = [tmp_path / token, Path("/tmp") / token, Path("/var/tmp") / token]
    os.chmod(tmp_path, 0o755)  # even where the candidate may look
    writer = (
        "written = []\n"
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        written.append(path)\n"
        "    except OSError as exc:\n"
        "        print('blocked:', path, exc)\n"
    )
    verifier = UnitTests("print(written)\n", timeout=5, isolation=isolation, python=python)
    try:
        assert await verifier.verify("q", [code(writer)]) == [True], verifier.last_reports
        escaped = [t for t in targets if t.exists()]
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
    if isolation == "bwrap":
        assert escaped == []
    elif ROOT:  # its own uid: not root's directories; world-writable ones, yes (documented)
        assert targets[0] not in escaped and targets[1] in escaped
    else:
        assert targets[0] in escaped


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[object]]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_connects_to_a_loopback_server(
    isolation: str, python: str, loopback_server: tuple[int, list[object]]
) -> None:
    port, accepted = loopback_server
    caller = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        "    connected = True\n"
        "except OSError as exc:\n"
        "    print('blocked:', exc)\n"
        "    connected = False\n"
    )
    verifier = UnitTests("assert connected\n", timeout=5, isolation=isolation, python=python)
    verdicts = await verifier.verify("q", [code(caller)])
    if verifier.network_isolated:
        assert verdicts == [False] and accepted == []
    else:  # no network namespace where the kernel refuses one (documented)
        assert verdicts == [True]
    if isolation == "bwrap" or ROOT:
        assert verifier.network_isolated


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_fork_bomb(isolation: str, python: str) -> None:
    """Bounded: at most 40 forks of children that sleep 5 s; the limit allows 8 processes."""
    token = _token()
    bomb = (
        "import os, sys\n"
        "forked = 0\n"
        "try:\n"
        "    for _ in range(40):\n"
        "        if os.fork() == 0:\n"
        "            os.execv(sys.executable, [sys.executable, '-c', 'import time; "
        f"time.sleep(5)', {token!r}])\n"
        "        forked += 1\n"
        "except OSError as exc:\n"
        "    print('blocked after', forked, exc)\n"
    )
    verifier = UnitTests(
        "assert forked == 40\n", timeout=5, max_processes=8, isolation=isolation, python=python
    )
    verdicts = await verifier.verify("q", [code(bomb)])
    report = verifier.last_reports[0]
    if ROOT or isolation == "bwrap":
        assert verdicts == [False] and "blocked after" in report.stdout, report
    assert await anyio.to_thread.run_sync(_none_running_with, token)


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_allocates_4_gb(isolation: str, python: str) -> None:
    hog = "data = bytearray(4 * 1024**3)\n"
    verifier = UnitTests("", timeout=5, memory_mb=256, isolation=isolation, python=python)
    assert await verifier.verify("q", [code(hog)]) == [False]
    assert "MemoryError" in verifier.last_reports[0].stderr


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_child_outlives_the_run(isolation: str, python: str) -> None:
    """A child in a session of its own (``setsid``) is gone after the run."""
    token = _token()
    escapee = _sleeper(token, new_session=True) + "def add(a, b):\n    return a + b\n"
    verifier = UnitTests(ADD_TESTS, timeout=5, isolation=isolation, python=python)
    assert await verifier.verify("q", [code(escapee)]) == [True], verifier.last_reports
    report = verifier.last_reports[0]
    if isolation == "bwrap" or ROOT:
        assert report.pid_namespace
    if report.pid_namespace or ROOT:
        assert await anyio.to_thread.run_sync(_none_running_with, token)
    else:  # the fallback as your user without user namespaces cannot find it; clean up
        for pid in _running_with(token):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_prints_100_mb(isolation: str, python: str) -> None:
    flood = (
        "import sys\n"
        "chunk = 'x' * (1 << 20)\n"
        "for _ in range(100):\n"
        "    sys.stdout.write(chunk)\n"
        "sys.stdout.write('\\nEND\\n')\n"
    )
    verifier = UnitTests("", timeout=10, max_output_bytes=4096, isolation=isolation, python=python)
    assert await verifier.verify("q", [code(flood)]) == [True], verifier.last_reports
    out = verifier.last_reports[0].stdout
    assert out.endswith("END\n") and "bytes dropped" in out and len(out) < 4200


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_fills_the_disk(isolation: str, python: str) -> None:
    """300 MB in 10 MB files against ``disk_mb=40``: it never gets that far."""
    filler = (
        "import os\n"
        "written = 0\n"
        "block = b'x' * (1 << 20)\n"
        "try:\n"
        "    for i in range(30):\n"
        "        with open(f'fill{i}', 'wb') as f:\n"
        "            for _ in range(10):\n"
        "                f.write(block)\n"
        "                f.flush()\n"
        "                written += len(block)\n"
        "except OSError as exc:\n"
        "    print('blocked after', written, exc)\n"
    )
    verifier = UnitTests(
        "assert written >= 300 << 20\n", timeout=10, disk_mb=40, isolation=isolation, python=python
    )
    assert await verifier.verify("q", [code(filler)]) == [False]
    report = verifier.last_reports[0]
    if isolation == "bwrap":
        assert "blocked after" in report.stdout  # the tmpfs is full: ENOSPC
    else:
        assert "disk_mb" in report.reason or "blocked after" in report.stdout, report


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process of ttc's user, standing in for ttc itself."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.anyio
@pytest.mark.parametrize(("isolation", "python"), SANDBOXES)
async def test_hostile_kills_ttc(
    isolation: str, python: str, bystander: subprocess.Popen[bytes]
) -> None:
    contained = ROOT or isolation == "bwrap"
    killer = (
        "import os, signal\n"
        "try:\n"
        f"    os.kill({bystander.pid}, signal.SIGKILL)\n"
        "except OSError as exc:\n"
        "    print('blocked:', exc)\n"
    )
    if contained:  # ttc itself, where it is safe to try
        killer += (
            "try:\n"
            "    os.kill(os.getppid(), signal.SIGKILL)\n"
            "except OSError as exc:\n"
            "    print('blocked:', exc)\n"
        )
    verifier = UnitTests("", timeout=5, isolation=isolation, python=python)
    await verifier.verify("q", [code(killer)])
    await anyio.sleep(0.1)
    if contained:
        assert bystander.poll() is None, verifier.last_reports
