"""Verifiers against a known answer (math equivalence, GSM8K numbers, a regex) and adapters that
turn plain functions into verifiers and scorers.

``MathAnswer`` grades with math-verify in a worker process: sympy can take unbounded time on a
pathological expression, and only a process can be stopped from outside. math-verify and sympy
are imported in the worker only, so importing ``ttc.scoring`` stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import inspect
import itertools
import logging
import multiprocessing
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, cast

import anyio
import anyio.to_thread

from ttc.errors import ConfigError, TTCError
from ttc.scoring.base import Scorer, Verifier
from ttc.scoring.extract import extract_answer, gsm8k_reference, normalize_answer
from ttc.types import Candidate, Prompt
from ttc.validation import check_float

__all__ = [
    "FunctionScorer",
    "FunctionVerifier",
    "GSM8KAnswer",
    "MathAnswer",
    "Regex",
    "as_scorer",
    "as_verifier",
]

#: Extra seconds allowed to a grading that may land on a worker still starting up (spawning,
#: importing sympy). Once every worker has answered once, the timeout alone applies.
_STARTUP_GRACE_S = 20.0
#: Address-space limit of each grading worker, so that ``10^{10^{10}}`` fails with a
#: MemoryError instead of taking the machine's memory. Ignored where ``resource`` is missing.
_WORKER_MEMORY_BYTES = 2 * 1024**3
#: Verdicts remembered per (gold, prediction) pair.
_CACHE_SIZE = 10_000


# --------------------------------------------------------------------------------------------
# The worker side. These functions run in the grading processes.


def _worker_init(memory_bytes: int) -> None:
    """Import math-verify once per worker and cap the worker's memory."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" warnings
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass
    import math_verify  # noqa: F401


def _worker_grade(gold: str, pred: str) -> tuple[bool, int]:
    """``verify(parse(gold), parse(pred))``, gold first; returns the verdict and the worker's pid.

    math-verify's own timeouts use ``signal.alarm``; they are off here because the parent
    enforces the time limit by killing the worker.
    """
    from math_verify import parse, verify

    try:
        gold_parsed = parse(gold, parsing_timeout=None)
        pred_parsed = parse(pred, parsing_timeout=None)
        verdict = bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # an expression math-verify cannot handle is not a correct answer
        verdict = False
    return verdict, os.getpid()


# --------------------------------------------------------------------------------------------
# The parent side: one shared pool, a gate that keeps queueing time out of the timeout, and a
# watchdog that kills the pool when a grading overruns, whoever is (or is no longer) waiting.


def _mp_context() -> Any:
    """forkserver where available (no fork of a threaded parent), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class _Pool:
    """A process pool plus what ttc knows about it."""

    def __init__(self) -> None:
        self.workers = max(1, min(2, os.cpu_count() or 1))
        self.executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=_mp_context(),
            initializer=_worker_init,
            initargs=(_WORKER_MEMORY_BYTES,),
        )
        self.owner_pid = os.getpid()
        self.warm_pids: set[int] = set()
        self.dead = False
        self.overrun = False  # killed because a grading ran past its time

    @property
    def warm(self) -> bool:
        return len(self.warm_pids) >= self.workers

    def kill(self) -> None:
        """Kill the workers at once: a worker stuck inside sympy does not answer a shutdown."""
        self.dead = True
        executor = self.executor
        kill_workers = getattr(executor, "kill_workers", None)  # Python 3.14+
        if callable(kill_workers):
            with contextlib.suppress(Exception):
                kill_workers()
        else:
            processes = getattr(executor, "_processes", None) or {}
            for process in list(processes.values()):
                with contextlib.suppress(Exception):  # already gone
                    process.kill()
        executor.shutdown(wait=False, cancel_futures=True)


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


async def _grade(gold: str, pred: str, seconds: float) -> bool:
    """Grade one pair in the pool; ``False`` when it overruns ``seconds`` of worker time."""
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
            future = pool.executor.submit(_worker_grade, gold, pred)
        except Exception:  # the pool broke in the meantime
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
            "MathAnswer: the grading worker process died before grading anything "
            f"({failure}). Workers start with forkserver or spawn and import the main "
            'module: a script must guard its entry point with `if __name__ == "__main__":`. '
            "Also check that `import math_verify` works."
        )
    return False


async def _run_all(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
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


def _as_math(answer: str) -> str:
    """Give math-verify something it parses: plain answers go inside ``$...$``."""
    s = answer.strip()
    if any(mark in s for mark in ("$", "\\boxed", "\\(", "\\[")):
        return s
    if _fraction(s) is not None:
        s = normalize_answer(s)  # "1,234" would read as the pair (1, 234)
    return f"${s}$"


class MathAnswer(Verifier):
    """Correct iff math-verify finds the candidate's answer equivalent to ``gold``.

    ``verify(parse(gold), parse(prediction))``, gold first (math-verify is not symmetric). The
    candidate's ``answer`` is graded if it has one, else its whole text (math-verify then
    finds the last boxed or stated answer itself). Each grading runs in a shared pool of at most
    two worker processes and gets ``timeout`` seconds of worker time; an overrun is a wrong
    answer, and the pool is killed and replaced so the expression cannot hold up later calls.
    Verdicts are cached per (gold, prediction).

    The workers start with ``forkserver`` (``spawn`` where that is missing), so a script that
    uses ``MathAnswer`` must guard its entry point with ``if __name__ == "__main__":``.
    """

    def __init__(self, gold: str, timeout: float = 5.0) -> None:
        if not isinstance(gold, str) or not gold.strip():
            raise ConfigError(f"gold must be a non-empty string, got {gold!r}")
        check_float("timeout", timeout, gt=0)
        self.gold = gold
        self.timeout = float(timeout)
        self._gold_math = _as_math(gold)

    def __repr__(self) -> str:
        return f"MathAnswer(gold={self.gold!r})"

    def _prediction(self, candidate: Candidate) -> str:
        if candidate.answer is not None:
            return _as_math(candidate.answer)
        return candidate.text

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        predictions = [self._prediction(c) for c in candidates]
        verdicts: dict[str, bool] = {}

        async def grade(pred: str) -> None:
            verdicts[pred] = await _grade(self._gold_math, pred, self.timeout)

        unique = [p for p in dict.fromkeys(predictions) if p.strip()]
        await _run_all([functools.partial(grade, p) for p in unique])
        return [verdicts.get(pred, False) for pred in predictions]


# --------------------------------------------------------------------------------------------
# Pure-Python verifiers.


def _fraction(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        return Fraction(normalize_answer(text))
    except (ValueError, ZeroDivisionError):
        return None


class GSM8KAnswer(Verifier):
    """Correct iff the candidate's number equals the GSM8K reference exactly (as rationals).

    ``gold`` is a full GSM8K solution (``... #### 1,234``) or the bare number. The candidate's
    ``answer`` is used if set, else ``extract_answer`` of its text; a non-number is wrong.
    """

    def __init__(self, gold: str) -> None:
        reference = gsm8k_reference(gold) if "####" in gold else gold
        value = _fraction(reference)
        if value is None:
            raise ConfigError(f"gold must be a number or a GSM8K solution, got {gold!r}")
        self.gold = gold
        self.reference = value

    def __repr__(self) -> str:
        return f"GSM8KAnswer(gold={self.gold!r})"

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        out = []
        for c in candidates:
            answer = c.answer if c.answer is not None else extract_answer(c.text)
            out.append(_fraction(answer) == self.reference)
        return out


class Regex(Verifier):
    """A regular expression over the candidate's text.

    With ``gold``: correct iff group 1 (or the whole match, if the pattern has no group) of the
    *last* match equals ``gold`` after ``normalize_answer``. Without: correct iff it matches.
    """

    def __init__(self, pattern: str, gold: str | None = None) -> None:
        try:
            self.regex = re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise ConfigError(
                f"pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from exc
        self.pattern = pattern
        self.gold = gold
        self._gold = normalize_answer(gold) if gold is not None else None

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r}, gold={self.gold!r})"

    def _check(self, text: str) -> bool:
        if self._gold is None:
            return self.regex.search(text) is not None
        last = None
        for last in self.regex.finditer(text):  # noqa: B007 - only the last one counts
            pass
        if last is None:
            return False
        found = last.group(1) if self.regex.groups else last.group(0)
        return found is not None and normalize_answer(found) == self._gold

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        return [self._check(c.text) for c in candidates]


# --------------------------------------------------------------------------------------------
# Functions as verifiers and scorers.

VerifyFn = Callable[[str], "bool | Awaitable[bool]"]
ScoreFn = Callable[[str], "float | Awaitable[float]"]


def _is_async(fn: Callable[..., Any]) -> bool:
    # An object whose __call__ is a coroutine function counts too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


async def _call(fn: Callable[[str], Any], text: str) -> Any:
    """Run ``fn(text)``: awaited if async, in a worker thread if not, so the loop never blocks."""
    if _is_async(fn):
        result = fn(text)
    else:
        result = await anyio.to_thread.run_sync(fn, text)
    if inspect.isawaitable(result):
        result = await result
    return result


def _name_of(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


class FunctionVerifier(Verifier):
    """A function ``text -> bool`` (sync or async) as a verifier; candidates run concurrently.

    A sync function runs in a worker thread, so a slow one does not stall other requests.
    """

    def __init__(self, fn: VerifyFn) -> None:
        if not callable(fn):
            raise ConfigError(f"fn must be callable, got {fn!r}")
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionVerifier({_name_of(self.fn)})"

    async def verify(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[bool]:
        out: list[bool] = [False] * len(candidates)

        async def one(i: int, text: str) -> None:
            out[i] = bool(await _call(self.fn, text))

        await _run_all([functools.partial(one, i, c.text) for i, c in enumerate(candidates)])
        return out


class FunctionScorer(Scorer):
    """A function ``text -> float`` (sync or async) as a scorer; higher is better.

    ``name`` is the key of its score in ``Candidate.scores`` (default ``"score"``).
    """

    def __init__(self, fn: ScoreFn, *, name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        if name is not None:
            self.name = name

    def __repr__(self) -> str:
        return f"FunctionScorer({_name_of(self.fn)})"

    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        out: list[float] = [0.0] * len(candidates)

        async def one(i: int, text: str) -> None:
            value = await _call(self.fn, text)
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"scorer {_name_of(self.fn)} returned {value!r}, not a number"
                ) from None

        await _run_all([functools.partial(one, i, c.text) for i, c in enumerate(candidates)])
        return out


def as_verifier(obj: object) -> Verifier:
    """A ``Verifier`` as is; a callable ``text -> bool`` wrapped in ``FunctionVerifier``."""
    if isinstance(obj, Verifier):
        return obj
    if isinstance(obj, Scorer):
        raise ConfigError(
            f"verifier: {obj!r} is a Scorer (it gives numbers, not verdicts); "
            "pass it as a scorer, or wrap a function text -> bool"
        )
    if callable(obj):
        return FunctionVerifier(cast(VerifyFn, obj))
    raise ConfigError(
        f"verifier must be a Verifier or a function text -> bool, got {type(obj).__name__}"
    )


def as_scorer(obj: object) -> Scorer:
    """A ``Scorer`` (verifiers included) as is; a callable ``text -> float`` wrapped."""
    if isinstance(obj, Scorer):
        return obj
    if callable(obj):
        return FunctionScorer(cast(ScoreFn, obj))
    raise ConfigError(
        f"scorer must be a Scorer, a Verifier or a function text -> float, got {type(obj).__name__}"
    )
