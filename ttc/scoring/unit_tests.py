"""Run each candidate's code against unit tests in a separate, limited Python process."""

from __future__ import annotations

import contextlib
import functools
import keyword
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
from anyio.lowlevel import RunVar

from ttc.errors import ConfigError, TTCError
from ttc.scoring.base import Verifier
from ttc.scoring.verifiers import _run_all
from ttc.types import Candidate, Prompt
from ttc.validation import check_float, check_int

logger = logging.getLogger("ttc.unit_tests")

__all__ = ["UnitTestReport", "UnitTests", "extract_code"]

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}
#: Largest file the candidate may write (RLIMIT_FSIZE).
_MAX_FILE_BYTES = 10 * 1024 * 1024
#: Open files per process (RLIMIT_NOFILE).
_MAX_OPEN_FILES = 64
#: Exit code of the sandbox preamble when it cannot apply the limits.
_SANDBOX_FAILED = 86
#: How long to wait for output pipes after the process group is killed.
_DRAIN_GRACE_S = 1.0
#: The exit status asyncio reports for a child whose real status it could not collect,
#: because something else in this process (a library's child reaper) collected it first.
_STATUS_LOST = 255

# The first lines of run_tests.py, before any candidate code: private network namespace where
# the kernel allows one, then resource limits (soft = hard, so the candidate cannot raise them).
_PREAMBLE = """\
# Written by ttc.scoring.UnitTests. Limits first, then the candidate's code, then the tests.
def _ttc_sandbox():
    import os
    net = False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # CLONE_NEWUSER | CLONE_NEWNET works unprivileged where user namespaces are enabled
        # (and drops root's capabilities); CLONE_NEWNET alone needs CAP_SYS_ADMIN.
        for flags in (0x10000000 | 0x40000000, 0x40000000):
            if libc.unshare(flags) == 0:
                net = True
                break
    except Exception:
        pass
    with open(".ttc_net", "w") as f:
        f.write("1" if net else "0")
    try:
        import resource

        for name, value in {limits!r}:
            which = getattr(resource, name)
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
    except Exception as exc:
        os.write(2, ("ttc sandbox: cannot set resource limits: %r\\n" % (exc,)).encode())
        os._exit({failed})
    with open(".ttc_ready", "w") as f:
        f.write("1")


_ttc_sandbox()
del _ttc_sandbox

import solution as _ttc_solution

globals().update(
    {{k: v for k, v in vars(_ttc_solution).items() if not k.startswith("__")}}
)
_ttc_solution_file = _ttc_solution.__file__
del _ttc_solution
"""

# unittest.main() ends the tests with SystemExit(0): that is a pass. The candidate's own code
# calling sys.exit(0) in the middle of the tests is not.
_TESTS = """
with open("tests.py", encoding="utf-8") as _ttc_f:
    _ttc_tests = compile(_ttc_f.read(), "tests.py", "exec")
try:
    exec(_ttc_tests)
except SystemExit as _ttc_exit:
    _ttc_tb = _ttc_exit.__traceback__
    while _ttc_tb is not None:
        if _ttc_tb.tb_frame.f_code.co_filename == _ttc_solution_file:
            raise
        _ttc_tb = _ttc_tb.tb_next
    if _ttc_exit.code not in (None, 0):
        raise
"""

_ENTRY_POINT = """
candidate = {entry_point}
"""

_CHECK = """
if callable(globals().get("check")):
    check(candidate)
"""

# The tests ran to their end: say so, then leave at once with 0, so that nothing the candidate
# left behind (exit handlers, threads) can change the outcome.
_DONE = """
with open(".ttc_done", "w") as _ttc_f:
    _ttc_f.write({nonce!r})
import os as _ttc_os
import sys as _ttc_sys
for _ttc_stream in (_ttc_sys.stdout, _ttc_sys.stderr):
    try:
        _ttc_stream.flush()
    except Exception:
        pass
_ttc_os._exit(0)
"""


def extract_code(text: str) -> str:
    """The code in a sample: the last ```python block, else the last ``` block, else the text."""
    blocks = _FENCE.findall(text)
    python = [code for tag, code in blocks if tag.lower() in _PYTHON_TAGS]
    if python:
        return str(python[-1])
    if blocks:
        return str(blocks[-1][1])
    return text


@dataclass(frozen=True)
class UnitTestReport:
    """How one candidate's run went, for debugging a verdict."""

    passed: bool
    exit_code: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    network_isolated: bool


class _Tail:
    """The last ``cap`` bytes of a stream."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.cap
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def text(self) -> str:
        body = self.data.decode("utf-8", errors="replace")
        return f"[... {self.dropped} bytes dropped ...]\n{body}" if self.dropped else body


async def _drain(stream: anyio.abc.ByteReceiveStream | None, tail: _Tail) -> None:
    if stream is None:
        return
    async for chunk in stream:
        tail.add(chunk)


def _kill_group(pgid: int) -> None:
    """SIGKILL the whole process group: the candidate and anything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, signal.SIGKILL)


class UnitTests(Verifier):
    """Correct iff the candidate's code passes ``tests`` (the test process exits with 0).

    The code is the candidate's last ```python block (else its last ``` block, else its whole
    text). Each candidate runs in a fresh temporary directory as ``solution.py``, with
    ``run_tests.py`` importing its namespace and then running ``tests`` as a script (``assert``
    lines, or a unittest module ending in ``unittest.main()``); it passes iff the tests ran to
    their end and the process exited with 0 (a candidate calling ``sys.exit(0)`` fails; once the
    tests have passed the process exits at once, so exit handlers and threads the candidate
    left cannot change the verdict). With
    ``entry_point``, ``candidate`` names that function and a ``check(candidate)`` defined by the
    tests (HumanEval style) is called.

    **A sandbox against mistakes, not against malice.** Model-written code that loops forever,
    eats memory, forks without end, fills the disk or reads your API keys is contained: the
    test process gets its own session (on a timeout the whole process group is killed), an
    environment with nothing but a minimal ``PATH``, ``HOME`` set to its temporary directory,
    ``LANG``, ``PYTHONHASHSEED=0`` and ``PYTHONDONTWRITEBYTECODE=1``, and resource limits:
    CPU seconds (``timeout + 1``), address space (``memory_mb``), processes (``max_processes``),
    file size (10 MB), open files (64), no core dumps. Where the kernel allows it (root, or
    unprivileged user namespaces), it also gets a private network namespace with no network;
    ``network_isolated`` says whether that held. It still runs as your user and can read what
    your user can read: run untrusted code in a container or VM.

    ``RLIMIT_NPROC`` counts *all* processes and threads of the user, not just the test's, and
    does not apply to root: ``max_processes`` bounds a fork bomb only for an unprivileged user
    with fewer processes than that already running.

    ``last_reports`` holds one ``UnitTestReport`` (exit code, stdout and stderr tails) per
    candidate of the latest call, in order.
    """

    def __init__(
        self,
        tests: str,
        *,
        entry_point: str | None = None,
        timeout: float = 10.0,
        memory_mb: int = 512,
        max_processes: int = 64,
        max_output_bytes: int = 1_000_000,
        python: str = sys.executable,
        concurrency: int = 2,
    ) -> None:
        if os.name != "posix":
            raise ConfigError("UnitTests needs a POSIX system (resource limits, process groups)")
        if not isinstance(tests, str):
            raise ConfigError(f"tests must be a string of Python code, got {type(tests).__name__}")
        if entry_point is not None and (
            not entry_point.isidentifier() or keyword.iskeyword(entry_point)
        ):
            raise ConfigError(f"entry_point must be a Python identifier, got {entry_point!r}")
        check_float("timeout", timeout, gt=0)
        check_int("memory_mb", memory_mb, ge=32)
        check_int("max_processes", max_processes, ge=1)
        check_int("max_output_bytes", max_output_bytes, ge=0)
        check_int("concurrency", concurrency, ge=1)
        if not python:
            raise ConfigError("python must name a Python interpreter")
        self.tests = tests
        self.entry_point = entry_point
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_output_bytes = max_output_bytes
        self.python = python
        self.concurrency = concurrency
        self.last_reports: list[UnitTestReport] = []
        self._network_isolated: bool | None = None
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(f"ttc-unit-tests-{id(self)}")

    def __repr__(self) -> str:
        return f"UnitTests(entry_point={self.entry_point!r}, timeout={self.timeout:g})"

    @property
    def network_isolated(self) -> bool | None:
        """Whether every candidate so far ran without network; ``None`` before the first run."""
        return self._network_isolated

    def _limits(self) -> list[tuple[str, int]]:
        return [
            ("RLIMIT_CPU", math.ceil(self.timeout) + 1),
            ("RLIMIT_AS", self.memory_mb * 1024 * 1024),
            ("RLIMIT_NPROC", self.max_processes),
            ("RLIMIT_FSIZE", _MAX_FILE_BYTES),
            ("RLIMIT_NOFILE", _MAX_OPEN_FILES),
            ("RLIMIT_CORE", 0),
        ]

    def _script(self, nonce: str) -> str:
        parts = [_PREAMBLE.format(limits=self._limits(), failed=_SANDBOX_FAILED)]
        if self.entry_point is not None:
            parts.append(_ENTRY_POINT.format(entry_point=self.entry_point))
        parts.append(_TESTS)
        if self.entry_point is not None:
            parts.append(_CHECK)
        parts.append(_DONE.format(nonce=nonce))
        return "".join(parts)

    def _env(self, home: str) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _prepare(self, code: str, nonce: str) -> tempfile.TemporaryDirectory[str]:
        folder = tempfile.TemporaryDirectory(prefix="ttc-tests-", ignore_cleanup_errors=True)
        root = Path(folder.name)
        (root / "solution.py").write_text(code, encoding="utf-8")
        (root / "tests.py").write_text(self.tests, encoding="utf-8")
        (root / "run_tests.py").write_text(self._script(nonce), encoding="utf-8")
        return folder

    @staticmethod
    def _read_markers(folder: str, nonce: str) -> tuple[bool, bool, bool]:
        """(sandbox ready, network isolated, tests ran to the end)."""
        root = Path(folder)

        def read(name: str) -> str:
            try:
                return (root / name).read_text(encoding="utf-8", errors="replace")
            except OSError:
                return ""

        return read(".ttc_ready") == "1", read(".ttc_net") == "1", read(".ttc_done") == nonce

    def _limiter_here(self) -> anyio.CapacityLimiter:
        """This instance's limiter for the running event loop (a limiter belongs to one loop)."""
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.concurrency)
            self._limiter.set(limiter)
            return limiter

    async def run_one(self, code: str) -> UnitTestReport:
        """Run ``code`` against the tests and report how it went."""
        async with self._limiter_here():
            nonce = secrets.token_hex(16)
            folder = await anyio.to_thread.run_sync(self._prepare, code, nonce)
            try:
                return await self._execute(folder.name, nonce)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(folder.cleanup)

    async def _execute(self, folder: str, nonce: str) -> UnitTestReport:
        # Not "-I": it would also ignore PYTHONHASHSEED; the environment is ours entirely, so
        # "-s" (no user site-packages) and "-B" (no bytecode) give the same isolation.
        command = [self.python, "-s", "-B", "run_tests.py"]
        out, err = _Tail(self.max_output_bytes), _Tail(self.max_output_bytes)
        start = time.monotonic()
        process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            cwd=folder,
            env=self._env(folder),
            start_new_session=True,
        )
        timed_out = False
        try:
            async with anyio.create_task_group() as tg:
                drained = anyio.Event()

                async def drain_both() -> None:
                    async with anyio.create_task_group() as inner:
                        inner.start_soon(_drain, process.stdout, out)
                        inner.start_soon(_drain, process.stderr, err)
                    drained.set()

                tg.start_soon(drain_both)
                with anyio.move_on_after(self.timeout) as scope:
                    await process.wait()
                timed_out = scope.cancelled_caught
                _kill_group(process.pid)  # also what the candidate left running
                with anyio.move_on_after(_DRAIN_GRACE_S):
                    await drained.wait()
                tg.cancel_scope.cancel()  # a process that left the group may hold a pipe
        finally:
            _kill_group(process.pid)
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()
        seconds = time.monotonic() - start
        ready, isolated, done = await anyio.to_thread.run_sync(self._read_markers, folder, nonce)
        code = process.returncode
        if not ready and code == _SANDBOX_FAILED:
            raise TTCError(f"UnitTests could not set up its sandbox: {err.text().strip()}")
        if code == _STATUS_LOST and done and not timed_out:
            # The script's last act after the done marker is os._exit(0): the status was lost
            # to another reaper, not set by the candidate.
            logger.debug("UnitTests: exit status of a finished run was lost; it exited with 0")
            code = 0
        return UnitTestReport(
            passed=not timed_out and code == 0 and done,
            exit_code=code,
            timed_out=timed_out,
            seconds=seconds,
            stdout=out.text(),
            stderr=err.text(),
            network_isolated=isolated,
        )

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        reports: list[UnitTestReport | None] = [None] * len(candidates)

        async def one(i: int, code: str) -> None:
            reports[i] = await self.run_one(code)

        await _run_all(
            [functools.partial(one, i, extract_code(c.text)) for i, c in enumerate(candidates)]
        )
        done = [r for r in reports if r is not None]
        self.last_reports = done
        if done:
            isolated = all(r.network_isolated for r in done)
            self._network_isolated = isolated and self._network_isolated is not False
        return [r.passed if r is not None else False for r in reports]
