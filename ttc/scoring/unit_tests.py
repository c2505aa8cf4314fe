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
import re
import secrets
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ttc.errors import ConfigError
from ttc.scoring import _sandbox
from ttc.scoring._checker import trim
from ttc.scoring._sandbox import SandboxedVerifier
from ttc.scoring._workers import run_all
from ttc.types import Candidate, Prompt

logger = logging.getLogger("ttc.unit_tests")

__all__ = ["UnitTestReport", "UnitTests", "extract_code"]

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}
#: Most bytes the runner may send on its channel (a flood of it is a broken run).
_MAX_CHANNEL_BYTES = 1 << 20


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


class UnitTests(SandboxedVerifier):
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
    failed) per candidate of the latest call, in order; why each one failed is also set on the
    candidate, ``Candidate.failure``.
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
        super().__init__(
            timeout=timeout,
            memory_mb=memory_mb,
            max_processes=max_processes,
            max_output_bytes=max_output_bytes,
            disk_mb=disk_mb,
            isolation=isolation,
            python=python,
            concurrency=concurrency,
        )
        self.tests = tests
        self.entry_point = entry_point
        self.last_reports: list[UnitTestReport] = []
        self._network_isolated: bool | None = None

    def __repr__(self) -> str:
        return f"UnitTests(entry_point={self.entry_point!r}, timeout={self.timeout:g})"

    @property
    def network_isolated(self) -> bool | None:
        """Whether every candidate so far ran without network; ``None`` before the first run."""
        return self._network_isolated

    async def run_one(self, code: str) -> UnitTestReport:
        """Run ``code`` against the tests and report how it went."""
        async with self._sandbox() as (chosen, folder, uid):
            return await self._execute(chosen, folder, uid, code)

    async def _execute(
        self, chosen: _sandbox.Isolation, folder: str, uid: int | None, code: str
    ) -> UnitTestReport:
        steps = len(self._steps)
        conversations: list[_Conversation] = []

        def talk(sock: socket.socket) -> _Conversation:
            conversation = _Conversation(
                sock,
                {**self._runner_config(chosen, uid), "code": code},
                {
                    "tests": self.tests,
                    "steps": self._steps,
                    "flags": self._flags,
                    "entry_point": self.entry_point,
                },
                steps,
            )
            conversations.append(conversation)
            return conversation

        outcome = await self._run(chosen, folder, uid, talk)
        conversation = conversations[0]
        code_ = outcome.returncode
        if code_ == _sandbox.STATUS_LOST and conversation.done and not outcome.timed_out:
            # The runner's last act after its done message is os._exit(0): the status was lost
            # to another reaper, not set by the candidate.
            logger.debug("UnitTests: exit status of a finished run was lost; it exited with 0")
            code_ = 0
        reason = ""
        if outcome.timed_out:
            reason = f"timed out after {self.timeout:g} s"
        elif outcome.disk_full:
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
            timed_out=outcome.timed_out,
            seconds=outcome.seconds,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
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
        for candidate, report in zip(candidates, reports, strict=True):
            if report is not None:
                candidate.failure = trim(report.reason) if report.reason else None
        if done:
            isolated = all(r.network_isolated for r in done)
            self._network_isolated = isolated and self._network_isolated is not False
        return [r.passed if r is not None else False for r in reports]
