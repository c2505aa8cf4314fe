"""Worker processes for scoring: the shared math grading pool, and what ``UnitTests``' code
sandbox shares with it (running jobs together, process kills).

Grading workers are plain subprocesses running ``ttc/scoring/_grader.py`` with ``python -c``
and answering over their stdin/stdout. Not ``multiprocessing``: its spawn and forkserver start
methods import the user's ``__main__`` in every worker, which re-runs a script without an
``if __name__ == "__main__":`` guard (and its paid requests) once per worker.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import heapq
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio

from ttc.errors import TTCError

#: Extra seconds allowed to a grading that may land on a worker still starting up (starting
#: Python, importing sympy). Once every worker has answered once, the timeout alone applies.
_STARTUP_GRACE_S = 20.0
#: Address-space limit of each grading worker, so that ``10^{10^{10}}`` fails with a
#: MemoryError instead of taking the machine's memory. Ignored where ``resource`` is missing.
_WORKER_MEMORY_BYTES = 2 * 1024**3
#: Verdicts remembered per (gold, prediction) pair.
_CACHE_SIZE = 10_000

_GRADER_SOURCE = (Path(__file__).with_name("_grader.py")).read_text(encoding="utf-8")


class _WorkerFailed(Exception):
    """A grading worker could not start, or died while grading."""


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group: a process and anything it started in its group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, signal.SIGKILL)


async def run_all(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run ``jobs`` concurrently; on the first error cancel the rest and raise that error.

    Raised as is, not wrapped in an ``ExceptionGroup``, so that callers can catch
    ``BudgetExceeded`` and the like from a scorer that calls a model.
    """
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def guarded(job: Callable[[], Awaitable[None]]) -> None:
            nonlocal error
            try:
                await job()
            except Exception as exc:
                if error is None:
                    error = exc
                tg.cancel_scope.cancel()

        for job in jobs:
            tg.start_soon(guarded, job)
    if error is not None:
        raise error


# --------------------------------------------------------------------------------------------
# The pool: one thread per worker process feeds it requests and reads its answers.


_Request = tuple["Future[tuple[bool, int]]", str, str]


class _Pool:
    """Grading worker processes, started on first use, plus what ttc knows about them."""

    def __init__(self) -> None:
        self.workers = max(1, min(2, os.cpu_count() or 1))
        self.owner_pid = os.getpid()
        self.warm_pids: set[int] = set()
        self.dead = False
        self.overrun = False  # killed because a grading ran past its time
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._processes: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def warm(self) -> bool:
        return len(self.warm_pids) >= self.workers

    def submit(self, gold: str, pred: str) -> Future[tuple[bool, int]]:
        """Queue one grading; its future gives (verdict, worker pid)."""
        future: Future[tuple[bool, int]] = Future()
        with self._lock:
            if self.dead:
                raise _WorkerFailed("the pool was killed")
            if not self._threads:
                for i in range(self.workers):
                    thread = threading.Thread(
                        target=self._serve, name=f"ttc-math-worker-{i}", daemon=True
                    )
                    self._threads.append(thread)
                    thread.start()
        self._requests.put((future, gold, pred))
        return future

    def _start(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-c",
            _GRADER_SOURCE,
            json.dumps(sys.path),
            str(_WORKER_MEMORY_BYTES),
        ]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        with self._lock:
            self._processes.append(process)
            dead = self.dead
        if dead:
            self._reap(process)
            raise _WorkerFailed("the pool was killed")
        assert process.stdout is not None
        hello = process.stdout.readline()
        try:
            message = json.loads(hello)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not message.get("ready"):
            self._reap(process)
            error = message.get("error") if isinstance(message, dict) else None
            raise _WorkerFailed(str(error or f"it exited with status {process.returncode}"))
        return process

    @staticmethod
    def _ask(process: subprocess.Popen[bytes], gold: str, pred: str) -> bool:
        stdin: IO[bytes] | None = process.stdin
        stdout: IO[bytes] | None = process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps([gold, pred]).encode() + b"\n")
            stdin.flush()
            answer = stdout.readline()
        except (OSError, ValueError) as exc:  # killed: broken pipe, or closed by kill()
            raise _WorkerFailed(f"the grading worker died: {exc!r}") from None
        if answer not in (b"1\n", b"0\n"):
            raise _WorkerFailed(f"the grading worker died (exit status {process.wait()})")
        return answer == b"1\n"

    def _serve(self) -> None:
        process: subprocess.Popen[bytes] | None = None
        try:
            while True:
                request = self._requests.get()
                if request is None or self.dead:
                    if request is not None:
                        request[0].cancel()
                    return
                future, gold, pred = request
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    if process is None:
                        process = self._start()
                    verdict = self._ask(process, gold, pred)
                except BaseException as exc:
                    future.set_exception(exc)
                    if process is not None and process.poll() is None:
                        continue  # still answering: a bad request, not a dead worker
                    self._reap(process)
                    process = None
                else:
                    future.set_result((verdict, process.pid))
        finally:
            self._reap(process)

    @staticmethod
    def _reap(process: subprocess.Popen[bytes] | None) -> None:
        if process is None:
            return
        with contextlib.suppress(Exception):
            process.kill()
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
        with contextlib.suppress(Exception):
            process.wait(timeout=5)

    def kill(self) -> None:
        """Kill the workers at once: a worker stuck inside sympy does not answer a shutdown."""
        with self._lock:
            self.dead = True
            processes = list(self._processes)
            threads = len(self._threads)
        for process in processes:
            with contextlib.suppress(Exception):  # already gone
                process.kill()
        while True:  # queued gradings will not run: cancel them
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            if request is not None:
                request[0].cancel()
        for _ in range(threads):
            self._requests.put(None)


class _Slots:
    """A counting semaphore that coroutines on any thread's event loop can wait on.

    An ``anyio``/``asyncio`` semaphore belongs to one event loop; the pool is shared by all.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()
        self._waiters: deque[Future[None]] = deque()

    async def acquire(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter: Future[None] = Future()
            self._waiters.append(waiter)
        try:
            await asyncio.wrap_future(waiter)
        except BaseException:
            if not waiter.cancel():  # the slot was handed over just now: pass it on
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.set_running_or_notify_cancel():
                    waiter.set_result(None)
                    return
            self._free += 1


@dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    pool: _Pool = field(compare=False)
    future: Future[tuple[bool, int]] = field(compare=False)
    expired: bool = field(default=False, compare=False)


class _Watchdog:
    """One daemon thread that kills the pool of any grading still running at its deadline."""

    def __init__(self) -> None:
        self._jobs: list[_Job] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, pool: _Pool, future: Future[tuple[bool, int]], seconds: float) -> _Job:
        job = _Job(time.monotonic() + seconds, next(self._seq), pool, future)
        with self._cond:
            heapq.heappush(self._jobs, job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="ttc-math-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return job

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._jobs and self._jobs[0].future.done():
                    heapq.heappop(self._jobs)
                if not self._jobs:
                    self._cond.wait(timeout=60.0)
                    if not self._jobs:
                        self._thread = None
                        return
                    continue
                job = self._jobs[0]
                wait = job.deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=min(wait, 1.0))
                    continue
                heapq.heappop(self._jobs)
            if not job.future.done():
                job.expired = True
                job.pool.overrun = True
                _discard_pool(job.pool)


_lock = threading.Lock()
_pool: _Pool | None = None
_slots: _Slots | None = None
_watchdog = _Watchdog()
_cache: OrderedDict[tuple[str, str], bool] = OrderedDict()


def _current_pool() -> tuple[_Pool, _Slots]:
    """The shared pool, created on first use (and again in a forked child, or after a kill)."""
    global _pool, _slots
    with _lock:
        if _pool is None or _pool.dead or _pool.owner_pid != os.getpid():
            _pool = _Pool()
            _slots = _Slots(_pool.workers)
        assert _slots is not None
        return _pool, _slots


def _discard_pool(pool: _Pool) -> None:
    """Kill ``pool``; the next grading starts a fresh one."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    if not pool.dead:
        pool.kill()


@atexit.register
def _kill_at_exit() -> None:
    """A worker stuck in sympy would outlive us; idle ones leave when their stdin closes."""
    pool = _pool
    if pool is not None and pool.owner_pid == os.getpid():
        _discard_pool(pool)


def _cache_get(key: tuple[str, str]) -> bool | None:
    with _lock:
        verdict = _cache.get(key)
        if verdict is not None:
            _cache.move_to_end(key)
        return verdict


def _cache_put(key: tuple[str, str], verdict: bool) -> None:
    with _lock:
        _cache[key] = verdict
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


async def _finished(future: Future[Any]) -> None:
    """Wait until ``future`` is done, without taking over its outcome.

    ``asyncio.wrap_future`` would turn a cancelled pool future into ``CancelledError`` in the
    caller, indistinguishable from the caller itself being cancelled.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not done.done():
            done.set_result(None)

    def wake(_: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle)

    future.add_done_callback(wake)
    await done


def _release(slots: _Slots, _: object) -> None:
    slots.release()


async def grade(gold: str, pred: str, seconds: float) -> bool:
    """``verify(parse(gold), parse(pred))`` in the pool; ``False`` when it overruns ``seconds``
    of worker time (the pool is then killed and replaced)."""
    key = (gold, pred)
    cached = _cache_get(key)
    if cached is not None:
        return cached
    failure = ""
    attempts = 0
    while attempts < 2:  # a second try if another grading's overrun killed the pool
        pool, slots = _current_pool()
        await slots.acquire()
        if pool.dead:  # replaced while we waited for a slot: take the new one
            slots.release()
            continue
        attempts += 1
        try:
            future = pool.submit(gold, pred)
        except _WorkerFailed:  # killed in the meantime
            slots.release()
            _discard_pool(pool)
            continue
        future.add_done_callback(functools.partial(_release, slots))
        grace = 0.0 if pool.warm else _STARTUP_GRACE_S
        job = _watchdog.watch(pool, future, seconds + grace)
        try:
            await _finished(future)
        except BaseException:
            future.cancel()  # our caller gave up; a grading that already runs is left to finish
            raise
        if job.expired:
            _cache_put(key, False)
            return False
        if future.cancelled() or future.exception() is not None:
            # Killed for another grading's overrun, or a worker crashed: on this expression,
            # or before it graded anything (then the next try will not fare better).
            crashed_cold = not pool.overrun and not pool.warm_pids
            failure = repr(future.exception()) if crashed_cold and not future.cancelled() else ""
            _discard_pool(pool)
            continue
        verdict, pid = future.result()
        pool.warm_pids.add(pid)
        _cache_put(key, verdict)
        return verdict
    if failure:
        raise TTCError(
            f"MathAnswer: the grading worker process failed before grading anything ({failure}). "
            "Check that `import math_verify` works in this Python."
        )
    return False
