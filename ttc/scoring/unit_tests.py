"""Run each candidate's code against unit tests in a sandboxed Python process."""

from __future__ import annotations
import __future__

import ast
import asyncio
import contextlib
import functools
import keyword
import logging
import marshal
import math
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
import anyio.to_thread
from anyio.lowlevel import RunVar

from ttc.errors import ConfigError, TTCError
from ttc.scoring import _sandbox
from ttc.scoring._workers import kill_group, run_all
from ttc.scoring.base import Verifier
from ttc.types import Candidate, Prompt
from ttc.validation import check_float, check_int

logger = logging.getLogger("ttc.unit_tests")

__all__ = ["UnitTestReport", "UnitTests", "extract_code"]

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}
#: Open files per process (RLIMIT_NOFILE).
_MAX_OPEN_FILES = 64
#: Exit code of the runner when it cannot set up the sandbox.
_SANDBOX_FAILED = 86
#: How long to wait for output pipes after the process group is killed.
_DRAIN_GRACE_S = 1.0
#: The exit status asyncio reports for a child whose real status it could not collect,
#: because something else in this process (a library's child reaper) collected it first.
_STATUS_LOST = 255
#: How often the fallback sandbox measures the candidate's directory against ``disk_mb``.
_DISK_POLL_S = 0.05
#: Most bytes the runner may send on its channel (a flood of it is a broken run).
_MAX_CHANNEL_BYTES = 1 << 20
_RUNNER_SOURCE = Path(__file__).with_name("_runner.py").read_text(encoding="utf-8")


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
    """How one candidate's run went, for debugging a verdict.

    ``reason`` says why it did not pass (empty when it did); ``tests_run`` of ``tests_total``
    top-level test statements (plus ``check(candidate)`` with an entry point) ran to their end;
    ``isolation`` is ``"bwrap"`` or ``"process"`` (the fallback); ``pid_namespace`` says whether
    it ran in a PID namespace of its own (then nothing it started outlives it).
    """

    passed: bool
    exit_code: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    network_isolated: bool
    reason: str = ""
    tests_run: int = 0
    tests_total: int = 0
    isolation: str = "process"
    pid_namespace: bool = False


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


_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_CHECK = 'if callable(globals().get("check")):\n    check(candidate)\n'


def _split(tests: str) -> tuple[list[tuple[str, str]], int]:
    """The tests' top-level statements, each as source padded to its own line numbers (those
    sharing a line stay together), and the ``from __future__`` flags to compile them with."""
    tree = ast.parse(tests, "tests.py")
    lines = _LINES.findall(tests)  # as the tokenizer counts them (not str.splitlines)
    flags = 0
    for node in tree.body:
        if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            break
        for alias in node.names:
            flags |= getattr(__future__, alias.name).compiler_flag
    spans: list[list[int]] = []
    for node in tree.body:
        decorators = getattr(node, "decorator_list", [])
        first = min([node.lineno, *(d.lineno for d in decorators)])
        last = node.end_lineno or node.lineno
        if spans and first <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    steps = [
        ("tests.py", "\n" * (first - 1) + "".join(lines[first - 1 : last])) for first, last in spans
    ]
    return steps, flags


class _Conversation:
    """The parent's side of the runner's channel: what it sends, and the verdict it counts.

    A pass needs exactly ``ready``, ``loaded``, ``ok <nonce> i`` for every step in order and
    ``done <nonce> <steps>``: anything else, however it got there, is a broken run.
    """

    def __init__(
        self, sock: socket.socket, config: dict[str, object], tests: dict[str, object], steps: int
    ) -> None:
        self.sock = sock
        self.config = config
        self.tests = tests
        self.steps = steps
        self.nonce = secrets.token_hex(16)
        self.ready = False
        self.network = False
        self.pids = False  # a PID namespace of its own
        self.loaded = False
        self.ran = 0
        self.done = False
        self.broken = ""

    async def _send(self, message: dict[str, object]) -> None:
        data = marshal.dumps(message)
        await asyncio.get_running_loop().sock_sendall(self.sock, b"%d\n" % len(data) + data)

    async def run(self) -> None:
        """Talk to the runner until it closes the channel or breaks the protocol."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            await self._send(self.config)
            pending = bytearray()
            received = 0
            while not self.broken:
                chunk = await loop.sock_recv(self.sock, 1 << 16)
                if not chunk:
                    return
                received += len(chunk)
                if received > _MAX_CHANNEL_BYTES:
                    self.broken = "the runner's channel was flooded"
                    return
                pending += chunk
                while b"\n" in pending and not self.broken:
                    line, _, rest = bytes(pending).partition(b"\n")
                    pending[:] = rest
                    await self._handle(line.decode("ascii", errors="replace"))

    async def _handle(self, line: str) -> None:
        if not self.ready:
            if line in ("ready 00", "ready 01", "ready 10", "ready 11"):
                self.ready, self.network, self.pids = True, line[6] == "1", line[7] == "1"
                return
        elif not self.loaded:
            if line == "loaded":
                self.loaded = True
                await self._send({"nonce": self.nonce, **self.tests})
                return
        elif not self.done:
            if line == f"ok {self.nonce} {self.ran}" and self.ran < self.steps:
                self.ran += 1
                return
            if line == f"done {self.nonce} {self.ran}":
                self.done = True
                if self.ran < self.steps:
                    self.broken = f"the tests stopped after {self.ran} of {self.steps} statements"
                return
        self.broken = f"unexpected message from the runner: {line[:80]!r}"


class UnitTests(Verifier):
    """Correct iff the candidate's code passes ``tests``: every test statement ran, none failed.

    The code is the candidate's last ```python block (else its last ``` block, else its whole
    text). Each candidate runs in a fresh sandbox as ``solution.py``; a runner imports its
    namespace and then runs ``tests`` as a script, one top-level statement at a time (``assert``
    lines, or a unittest module ending in ``unittest.main()``). It passes iff every statement
    ran to its end, the runner reported each one to ttc over a private channel, and it exited
    with 0: a candidate calling ``sys.exit(0)``, exiting early, printing or writing what looks
    like a verdict fails. Once the tests have passed the process exits at once, so exit
    handlers and threads the candidate left cannot change the verdict. With ``entry_point``,
    ``candidate`` names that function and a ``check(candidate)`` defined by the tests
    (HumanEval style) is called.

    **The sandbox** (details, and what it does not contain, in docs/reliability.md). With
    bubblewrap installed and usable (``isolation="auto"`` or ``"bwrap"``): its own mount, PID
    and network namespaces, a read-only view of the system and of the interpreter's install,
    one writable directory (a ``disk_mb`` tmpfs), and everything it started dies with it. The
    fallback (``isolation="process"``, or ``"auto"`` without a usable bwrap): its own session
    and temporary directory, network and PID namespaces where the kernel allows them, the
    directory measured against ``disk_mb``. Both: an environment with nothing but a minimal
    ``PATH``, ``HOME`` and ``TMPDIR`` (its directory), ``LANG``, ``PYTHONHASHSEED=0`` and
    ``PYTHONDONTWRITEBYTECODE=1``, and resource limits: CPU seconds (``timeout + 1``), address
    space (``memory_mb``), processes (``max_processes``), file size (``disk_mb``), open files
    (64), no core dumps.
    When ttc runs as root the candidate runs as a uid of its own, so it cannot read root's
    files or signal ttc, and ``max_processes`` holds.

    ``RLIMIT_NPROC`` counts every process of a uid: when ttc is not root, the candidate runs as
    your user and ``max_processes`` bounds a fork bomb only with fewer of your processes than
    that already running (the PID namespace still kills them all at the end under bwrap).

    ``last_reports`` holds one ``UnitTestReport`` (exit code, stdout and stderr tails, why it
    failed) per candidate of the latest call, in order.
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
        disk_mb: int = 100,
        isolation: Literal["auto", "bwrap", "process"] = "auto",
        python: str = sys.executable,
        concurrency: int = 2,
    ) -> None:
        if os.name != "posix":
            raise ConfigError("UnitTests needs a POSIX system (resource limits, process groups)")
        if not isinstance(tests, str):
            raise ConfigError(f"tests must be a string of Python code, got {type(tests).__name__}")
        try:
            self._steps, self._flags = _split(tests)
        except SyntaxError as exc:
            raise ConfigError(f"tests must be valid Python: {exc}") from None
        if entry_point is not None and (
            not entry_point.isidentifier() or keyword.iskeyword(entry_point)
        ):
            raise ConfigError(f"entry_point must be a Python identifier, got {entry_point!r}")
        if entry_point is not None:
            self._steps.append(("<check>", _CHECK))
        check_float("timeout", timeout, gt=0)
        check_int("memory_mb", memory_mb, ge=32)
        check_int("max_processes", max_processes, ge=1)
        check_int("max_output_bytes", max_output_bytes, ge=0)
        check_int("disk_mb", disk_mb, ge=1)
        if isolation not in ("auto", "bwrap", "process"):
            raise ConfigError(f"isolation must be 'auto', 'bwrap' or 'process', got {isolation!r}")
        check_int("concurrency", concurrency, ge=1)
        if not python:
            raise ConfigError("python must name a Python interpreter")
        self.tests = tests
        self.entry_point = entry_point
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_output_bytes = max_output_bytes
        self.disk_mb = disk_mb
        self.isolation = isolation
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
            ("RLIMIT_FSIZE", self.disk_mb * 1024 * 1024),
            ("RLIMIT_NOFILE", _MAX_OPEN_FILES),
            ("RLIMIT_CORE", 0),
        ]

    def _env(self, home: str) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "TMPDIR": home,  # tempfile's files count against disk_mb, and go with the run
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def _isolation(self) -> _sandbox.Isolation:
        chosen = _sandbox.isolation(
            self.isolation, self.python, self._env("/tmp"), self.disk_mb * 1024 * 1024
        )
        if self.isolation == "bwrap" and chosen.kind != "bwrap":
            raise TTCError(
                f"UnitTests(isolation='bwrap'): bubblewrap unusable: {chosen.why_not_bwrap}"
            )
        return chosen

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
            chosen = await anyio.to_thread.run_sync(self._isolation)
            folder = tempfile.TemporaryDirectory(prefix="ttc-tests-", ignore_cleanup_errors=True)
            uid = _sandbox.acquire_uid()
            try:
                return await self._execute(chosen, folder.name, uid, code)
            finally:
                with anyio.CancelScope(shield=True):
                    if uid is not None and chosen.kind == "process":
                        await anyio.to_thread.run_sync(_sandbox.kill_uid, uid, self.python)
                    await anyio.to_thread.run_sync(folder.cleanup)
                    _sandbox.release_uid(uid)

    async def _execute(
        self, chosen: _sandbox.Isolation, folder: str, uid: int | None, code: str
    ) -> UnitTestReport:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        steps = len(self._steps)
        conversation = _Conversation(
            ours,
            {
                "uid": uid,
                "limits": self._limits(),
                "unshare_net": chosen.kind != "bwrap",
                "no_new_privs": chosen.kind != "bwrap",
                "code": code,
            },
            {
                "tests": self.tests,
                "steps": self._steps,
                "flags": self._flags,
                "entry_point": self.entry_point,
            },
            steps,
        )
        bwrap = chosen.kind == "bwrap"
        # Not "-I": it would also ignore PYTHONHASHSEED; the environment is ours entirely, so
        # "-s" (no user site-packages) and "-B" (no bytecode) give the same isolation.
        runner = [self.python, "-s", "-B", "-c", _RUNNER_SOURCE, str(theirs.fileno())]
        out, err = _Tail(self.max_output_bytes), _Tail(self.max_output_bytes)
        start = time.monotonic()
        try:
            process = await anyio.open_process(
                [*chosen.prefix, *runner],
                stdin=subprocess.DEVNULL,
                cwd=folder,
                env=self._env("/tmp" if bwrap else folder),
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        timed_out = disk_full = False
        try:
            async with anyio.create_task_group() as tg:
                drained = anyio.Event()

                async def drain_all() -> None:
                    async with anyio.create_task_group() as inner:
                        inner.start_soon(_drain, process.stdout, out)
                        inner.start_soon(_drain, process.stderr, err)
                        inner.start_soon(conversation.run)
                    drained.set()

                async def watch_disk() -> None:
                    nonlocal disk_full
                    limit = self.disk_mb * 1024 * 1024
                    while True:
                        await anyio.sleep(_DISK_POLL_S)
                        used = await anyio.to_thread.run_sync(_sandbox.disk_usage, folder)
                        if used > limit:
                            disk_full = True
                            kill_group(process.pid)
                            return

                tg.start_soon(drain_all)
                if not bwrap:
                    tg.start_soon(watch_disk)
                with anyio.move_on_after(self.timeout) as scope:
                    await process.wait()
                timed_out = scope.cancelled_caught
                kill_group(process.pid)  # also what the candidate left running in its group
                if uid is not None and not bwrap:
                    await anyio.to_thread.run_sync(_sandbox.kill_uid, uid, self.python)
                with anyio.move_on_after(_DRAIN_GRACE_S):
                    await drained.wait()
                tg.cancel_scope.cancel()  # a process that left the group may hold a pipe
        finally:
            kill_group(process.pid)
            ours.close()
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()
        seconds = time.monotonic() - start
        code_ = process.returncode
        if not conversation.ready and code_ == _SANDBOX_FAILED:
            raise TTCError(f"UnitTests could not set up its sandbox: {err.text().strip()}")
        if not conversation.ready and bwrap and err.text().startswith("bwrap:"):
            raise TTCError(f"UnitTests could not start bubblewrap: {err.text().strip()}")
        if code_ == _STATUS_LOST and conversation.done and not timed_out:
            # The runner's last act after its done message is os._exit(0): the status was lost
            # to another reaper, not set by the candidate.
            logger.debug("UnitTests: exit status of a finished run was lost; it exited with 0")
            code_ = 0
        reason = ""
        if timed_out:
            reason = f"timed out after {self.timeout:g} s"
        elif disk_full:
            reason = f"wrote more than disk_mb={self.disk_mb} MB"
        elif conversation.broken:
            reason = conversation.broken
        elif code_ != 0:
            reason = (
                f"exited with status {code_} after {conversation.ran} of {steps} test statements"
            )
        elif not conversation.done:
            reason = (
                f"exited before the tests finished ({conversation.ran} of {steps} statements ran)"
            )
        return UnitTestReport(
            passed=not reason,
            exit_code=code_,
            timed_out=timed_out,
            seconds=seconds,
            stdout=out.text(),
            stderr=err.text(),
            network_isolated=conversation.network,
            reason=reason,
            tests_run=conversation.ran,
            tests_total=steps,
            isolation=chosen.kind,
            pid_namespace=conversation.pids,
        )

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        reports: list[UnitTestReport | None] = [None] * len(candidates)

        async def one(i: int, code: str) -> None:
            reports[i] = await self.run_one(code)

        await run_all(
            [functools.partial(one, i, extract_code(c.text)) for i, c in enumerate(candidates)]
        )
        done = [r for r in reports if r is not None]
        self.last_reports = done
        if done:
            isolated = all(r.network_isolated for r in done)
            self._network_isolated = isolated and self._network_isolated is not False
        return [r.passed if r is not None else False for r in reports]
