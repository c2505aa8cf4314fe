"""How ``UnitTests`` isolates a candidate: bubblewrap where it works, else a limited process.

**bwrap**: mount, PID, network, IPC and UTS namespaces (and a user namespace when ttc is not
root); a read-only view of ``/usr``, ``/lib*``, ``/bin``, ``/sbin`` and the interpreter's own
install (its prefixes and site-packages, not what ``.pth`` files add); ``/proc``, a minimal
``/dev``, and one writable directory, a tmpfs of ``disk_mb`` at ``/tmp`` (plus one of the same
size at ``/dev/shm``, for multiprocessing's semaphores). bwrap dies with ttc,
and everything in the PID namespace dies with the runner.

**process** (the fallback): a session of its own, a temporary directory, network and PID
namespaces where the kernel allows them (the runner makes them); the disk watched by the parent.

Under both, when ttc runs as root the runner drops to a uid of its own (one per run, no
``/etc/passwd`` entry) before any candidate code runs, so ``RLIMIT_NPROC`` applies and the
candidate can neither read root's files nor signal ttc; in the fallback everything still
running under that uid after the run is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import math
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.abc
import anyio.to_thread
from anyio.lowlevel import RunVar

from ttc.errors import ConfigError, TTCError
from ttc.scoring._workers import kill_group
from ttc.scoring.base import Verifier
from ttc.validation import check_float, check_int

logger = logging.getLogger("ttc.unit_tests")

#: The candidate's uids when ttc runs as root: one per run, far from real users' and from the
#: usual subordinate-uid ranges of containers.
_UID_BASE = 1_900_000_000
_UID_SPAN = 100_000_000
#: Paths bound read-only when they exist (on merged-/usr systems most are links into /usr).
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache")

_lock = threading.Lock()
_uids_in_use: set[int] = set()
_probed: dict[tuple[str, int, tuple[str, ...]], Isolation] = {}


@dataclass(frozen=True)
class Isolation:
    """What a run goes through: ``prefix`` is the bwrap command before the interpreter."""

    kind: str  # "bwrap" or "process"
    prefix: tuple[str, ...] = ()
    why_not_bwrap: str = ""


def acquire_uid() -> int | None:
    """A fresh uid for one run when ttc is root (``None`` otherwise: the user's own)."""
    if os.geteuid() != 0:
        return None
    with _lock:
        while True:
            uid = _UID_BASE + random.randrange(_UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def release_uid(uid: int | None) -> None:
    if uid is not None:
        with _lock:
            _uids_in_use.discard(uid)


def _uid_processes(uid: int) -> bool:
    """Whether any process runs as ``uid``."""
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{name}").st_uid == uid:
                        return True
    return False


def kill_uid(uid: int, python: str) -> None:
    """SIGKILL every process running as ``uid`` (what escaped the run's session).

    ``kill(-1)`` from a process of that uid reaches them all at once; forks cannot slip through
    while the kernel walks the process list."""
    for _ in range(5):
        if not _uid_processes(uid):
            return
        kill = shutil.which("kill")
        command = [kill, "-9", "-1"] if kill else [python, "-S", "-c", "import os; os.kill(-1, 9)"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                command,
                user=uid,
                group=uid,
                extra_groups=[],
                env={},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
            )
    logger.warning("UnitTests: processes of uid %d survived five kills", uid)


def _python_paths(python: str, env: dict[str, str]) -> list[str]:
    """The directories ``python`` needs: its prefixes, its binary's folder, site-packages."""
    probe = (
        "import json, os, site, sys\n"
        "paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,\n"
        "         os.path.dirname(os.path.realpath(sys.executable))]\n"
        "print(json.dumps(paths + site.getsitepackages()))\n"
    )
    out = subprocess.run(
        [python, "-s", "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    paths: list[str] = json.loads(out)
    return [os.path.abspath(p) for p in paths if os.path.isdir(p)]


def _bwrap_prefix(
    bwrap: str, python: str, env: dict[str, str], disk_bytes: int, extra: tuple[str, ...] = ()
) -> list[str]:
    root = os.geteuid() == 0
    args = [bwrap, "--die-with-parent", "--new-session"]
    if root:
        # No user namespace: as root, bwrap would map the sandbox's uid to root outside. The
        # runner keeps only what it needs to drop to the candidate's uid, then drops it.
        args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_CHOWN"]
    else:
        args += ["--unshare-all"]
    bound: list[str] = []
    made: set[str] = set()

    def bind(path: str) -> None:
        # bwrap makes missing parents 0700: the candidate's uid could not walk through them.
        for parent in reversed(Path(path).parents[:-1]):
            if str(parent) not in made:
                args.extend(["--perms", "0755", "--dir", str(parent)])
                made.add(str(parent))
        args.extend(["--ro-bind", path, path])
        bound.append(path)

    for path in _SYSTEM:
        if os.path.exists(path):
            bind(path)
    wanted = [*_python_paths(python, env), *(os.path.abspath(p) for p in extra)]
    late: list[str] = []  # under /tmp: bound over the sandbox's own /tmp, once it exists
    for path in sorted({p for p in wanted if os.path.exists(p)}):
        if path.startswith("/tmp/"):
            late.append(path)
        elif not any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
            bind(path)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(disk_bytes), "--perms", "0700", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    made.add("/tmp")
    for path in late:
        if not any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound):
            bind(path)
    # multiprocessing's semaphores live in /dev/shm: a second small tmpfs, open to the candidate.
    args += ["--size", str(disk_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]
    return args


def isolation(
    mode: str, python: str, env: dict[str, str], disk_bytes: int, extra: tuple[str, ...] = ()
) -> Isolation:
    """The isolation for ``mode`` ("auto", "bwrap", "process"), probed once per interpreter.

    ``extra``: more directories bound read-only under bwrap (a toolchain outside ``/usr``).

    A bwrap that is missing or cannot make its namespaces (a container without the rights,
    user namespaces off) means the fallback under "auto"; under "bwrap" it is an error the
    caller raises (``why_not_bwrap``).
    """
    if mode == "process":
        return Isolation("process")
    key = (python, disk_bytes, extra)
    with _lock:
        known = _probed.get(key)
    if known is None:
        known = _probe(python, env, disk_bytes, extra)
        with _lock:
            _probed[key] = known
        if known.kind != "bwrap":
            logger.info(
                "UnitTests: bubblewrap unusable (%s); using the process sandbox",
                known.why_not_bwrap,
            )
    return known


def _probe(
    python: str, env: dict[str, str], disk_bytes: int, extra: tuple[str, ...] = ()
) -> Isolation:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Isolation("process", why_not_bwrap="bwrap is not installed")
    try:
        prefix = _bwrap_prefix(bwrap, python, env, disk_bytes, extra)
        subprocess.run(
            [*prefix, python, "-S", "-c", "pass"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr or b"").decode(errors="replace").strip() or f"status {exc.returncode}"
        return Isolation("process", why_not_bwrap=message)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return Isolation("process", why_not_bwrap=repr(exc))
    return Isolation("bwrap", tuple(prefix))


def disk_usage(folder: str) -> int:
    """Bytes of disk used under ``folder`` (what the fallback's quota counts)."""
    total = 0
    for path, dirs, files in os.walk(folder):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(path, name)).st_blocks * 512
    return total


# --------------------------------------------------------------------------------------------
# One sandboxed run, and what every verifier that runs untrusted work in it shares.

#: Exit code of the runner when it cannot set up the sandbox.
SANDBOX_FAILED = 86
#: Open files per process (RLIMIT_NOFILE).
_MAX_OPEN_FILES = 64
#: How long to wait for output pipes after the process group is killed.
_DRAIN_GRACE_S = 1.0
#: How often the fallback sandbox measures the candidate's directory against ``disk_mb``.
_DISK_POLL_S = 0.05
#: The exit status asyncio reports for a child whose real status it could not collect,
#: because something else in this process (a library's child reaper) collected it first.
STATUS_LOST = 255
RUNNER_SOURCE = Path(__file__).with_name("_runner.py").read_text(encoding="utf-8")


class Tail:
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


async def _drain(stream: anyio.abc.ByteReceiveStream | None, tail: Tail) -> None:
    if stream is None:
        return
    async for chunk in stream:
        tail.add(chunk)


class Talk(Protocol):
    """The parent's side of the runner's channel (one per protocol: tests, or commands)."""

    ready: bool

    async def run(self) -> None:
        """Talk to the runner until it closes the channel or breaks the protocol."""


@dataclass(frozen=True)
class Outcome:
    """How one sandboxed run ended: its status, whether a limit ended it, its output tails."""

    returncode: int | None
    timed_out: bool
    disk_full: bool
    seconds: float
    stdout: str
    stderr: str


class SandboxedVerifier(Verifier):
    """What ``UnitTests`` and the proof and SMT checkers share: the sandbox's settings, their
    checks, the resource limits, and one run of the runner (``_runner.py``) in the sandbox.

    Subclasses say what the runner does (``talk``) and read the verdict off the channel.
    """

    #: The class's name in errors and logs.
    who = "UnitTests"

    def __init__(
        self,
        *,
        timeout: float,
        memory_mb: int,
        max_processes: int,
        max_output_bytes: int,
        disk_mb: int,
        isolation: str,
        python: str,
        concurrency: int,
    ) -> None:
        if os.name != "posix":
            raise ConfigError(f"{self.who} needs a POSIX system (resource limits, process groups)")
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
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.max_output_bytes = max_output_bytes
        self.disk_mb = disk_mb
        self.isolation = isolation
        self.python = python
        self.concurrency = concurrency
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(f"ttc-sandbox-{id(self)}")

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

    def _read_only(self) -> tuple[str, ...]:
        """Directories outside the system ones the sandbox must see, read-only (a toolchain)."""
        return ()

    def _isolation(self) -> Isolation:
        chosen = isolation(
            self.isolation,
            self.python,
            self._env("/tmp"),
            self.disk_mb * 1024 * 1024,
            self._read_only(),
        )
        if self.isolation == "bwrap" and chosen.kind != "bwrap":
            raise TTCError(
                f"{self.who}(isolation='bwrap'): bubblewrap unusable: {chosen.why_not_bwrap}"
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

    @contextlib.asynccontextmanager
    async def _sandbox(self) -> AsyncIterator[tuple[Isolation, str, int | None]]:
        """One run's isolation, directory and uid (``None``: the user's own), at most
        ``concurrency`` at a time; afterwards the directory is gone and the uid's processes
        are killed."""
        async with self._limiter_here():
            chosen = await anyio.to_thread.run_sync(self._isolation)
            folder = tempfile.TemporaryDirectory(prefix="ttc-tests-", ignore_cleanup_errors=True)
            uid = acquire_uid()
            try:
                yield chosen, folder.name, uid
            finally:
                with anyio.CancelScope(shield=True):
                    if uid is not None and chosen.kind == "process":
                        await anyio.to_thread.run_sync(kill_uid, uid, self.python)
                    await anyio.to_thread.run_sync(folder.cleanup)
                    release_uid(uid)

    def _runner_config(self, chosen: Isolation, uid: int | None) -> dict[str, object]:
        """The runner's first message, before any file: who it becomes and its limits."""
        return {
            "uid": uid,
            "limits": self._limits(),
            "unshare_net": chosen.kind != "bwrap",
            "no_new_privs": chosen.kind != "bwrap",
        }

    async def _run_steps(
        self, steps: list[Step], *, seconds: float | None = None
    ) -> tuple[Commands, Outcome, Isolation]:
        """Run ``steps`` in one fresh sandbox, each after the previous one succeeded, all
        within ``seconds`` (default: the verifier's ``timeout``)."""
        async with self._sandbox() as (chosen, folder, uid):
            talks: list[Commands] = []

            def talk(sock: socket.socket) -> Commands:
                config = self._runner_config(chosen, uid)
                talks.append(Commands(sock, config, steps, self.max_output_bytes))
                return talks[0]

            outcome = await self._run(chosen, folder, uid, talk, seconds=seconds)
            return talks[0], outcome, chosen

    async def _run(
        self,
        chosen: Isolation,
        folder: str,
        uid: int | None,
        make_talk: Callable[[socket.socket], Talk],
        *,
        seconds: float | None = None,
    ) -> Outcome:
        """Start the runner in the sandbox, let ``make_talk(socket)`` converse with it, and
        stop it at ``timeout`` (or when it fills ``disk_mb`` in the fallback)."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        talk = make_talk(ours)
        bwrap = chosen.kind == "bwrap"
        # Not "-I": it would also ignore PYTHONHASHSEED; the environment is ours entirely, so
        # "-s" (no user site-packages) and "-B" (no bytecode) give the same isolation.
        runner = [self.python, "-s", "-B", "-c", RUNNER_SOURCE, str(theirs.fileno())]
        out, err = Tail(self.max_output_bytes), Tail(self.max_output_bytes)
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
                        inner.start_soon(talk.run)
                    drained.set()

                async def watch_disk() -> None:
                    nonlocal disk_full
                    limit = self.disk_mb * 1024 * 1024
                    while True:
                        await anyio.sleep(_DISK_POLL_S)
                        used = await anyio.to_thread.run_sync(disk_usage, folder)
                        if used > limit:
                            disk_full = True
                            kill_group(process.pid)
                            return

                tg.start_soon(drain_all)
                if not bwrap:
                    tg.start_soon(watch_disk)
                with anyio.move_on_after(seconds or self.timeout) as scope:
                    await process.wait()
                timed_out = scope.cancelled_caught
                kill_group(process.pid)  # also what the candidate left running in its group
                if uid is not None and not bwrap:
                    await anyio.to_thread.run_sync(kill_uid, uid, self.python)
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
        if not talk.ready and process.returncode == SANDBOX_FAILED:
            raise TTCError(f"{self.who} could not set up its sandbox: {err.text().strip()}")
        if not talk.ready and bwrap and err.text().startswith("bwrap:"):
            raise TTCError(f"{self.who} could not start bubblewrap: {err.text().strip()}")
        return Outcome(process.returncode, timed_out, disk_full, seconds, out.text(), err.text())


@dataclass(frozen=True)
class Step:
    """One program the runner runs in the sandbox (``mode="commands"``), after writing
    ``files`` (sent only when the step starts: a later step's files do not exist while an
    earlier one runs)."""

    argv: tuple[str, ...]
    files: dict[str, str]


@dataclass(frozen=True)
class StepResult:
    """A step's exit status and the last ``max_output_bytes`` of its stdout and stderr."""

    status: int
    output: str


class Commands:
    """The parent's side of the runner in ``commands`` mode: the steps in order, each sent
    when the previous one ended with status 0; ``results`` holds what each one gave."""

    def __init__(
        self, sock: socket.socket, config: dict[str, object], steps: list[Step], cap: int
    ) -> None:
        self.sock = sock
        self.config = {**config, "mode": "commands", "files": {}}
        self.steps = steps
        self.cap = cap
        self.ready = False
        self.network = False
        self.pids = False
        self.results: list[StepResult] = []
        self.broken = ""

    async def _send(self, message: dict[str, object]) -> None:
        data = marshal.dumps(message)
        await asyncio.get_running_loop().sock_sendall(self.sock, b"%d\n" % len(data) + data)

    async def _next(self) -> None:
        i = len(self.results)
        if i < len(self.steps) and all(r.status == 0 for r in self.results):
            step = self.steps[i]
            await self._send({"argv": list(step.argv), "files": step.files, "cap": self.cap})
        else:
            await self._send({})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            await self._send(self.config)
            pending = bytearray()
            while not self.broken:
                chunk = await loop.sock_recv(self.sock, 1 << 16)
                if not chunk:
                    return
                pending += chunk
                while not self.broken and b"\n" in pending:
                    head, _, rest = bytes(pending).partition(b"\n")
                    if not self.ready:
                        if head.decode("ascii", "replace") not in (
                            "ready 00",
                            "ready 01",
                            "ready 10",
                            "ready 11",
                        ):
                            self.broken = f"unexpected message from the runner: {head[:80]!r}"
                            return
                        self.ready = True
                        self.network, self.pids = head[6:7] == b"1", head[7:8] == b"1"
                        pending[:] = rest
                        await self._next()
                        continue
                    fields = head.decode("ascii", "replace").split(" ")
                    if (
                        len(fields) != 4
                        or fields[0] != "out"
                        or fields[1] != str(len(self.results))
                        or not all(f.lstrip("-").isdigit() for f in fields[2:])
                        or int(fields[3]) > self.cap
                    ):
                        self.broken = f"unexpected message from the runner: {head[:80]!r}"
                        return
                    size = int(fields[3])
                    if len(rest) < size:
                        break  # the output is still coming
                    output = rest[:size].decode("utf-8", errors="replace")
                    pending[:] = rest[size:]
                    self.results.append(StepResult(int(fields[2]), output))
                    await self._next()
