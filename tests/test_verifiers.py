"""Verifiers: math-verify in a worker process, GSM8K numbers, regexes, functions."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import processes
import pytest

from ttc.errors import ConfigError
from ttc.scoring import _workers
from ttc.scoring.base import Scorer, Verifier
from ttc.scoring.verifiers import (
    FunctionScorer,
    FunctionVerifier,
    GSM8KAnswer,
    MathAnswer,
    Regex,
    as_scorer,
    as_verifier,
)
from ttc.types import Candidate, Prompt


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    _workers._cache.clear()
    yield
    _workers._cache.clear()


def answers(*values: str) -> list[Candidate]:
    return [Candidate(text=f"... so the answer is {v}", answer=v) for v in values]


_alive, _gone = processes.alive, processes.gone


async def _warm_pool() -> None:
    """Until every worker has graded once, gradings get a startup allowance; tests that shrink
    that allowance to nothing must start from a warm pool."""
    for i in range(100):
        await MathAnswer(str(i)).verify("q", answers(*(f"{i}+{j}" for j in range(4))))
        if _workers._pool is not None and _workers._pool.warm:
            return
    pytest.fail("the grading pool did not warm up")


# --- MathAnswer -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_math_answer_equivalence() -> None:
    half = MathAnswer(r"\frac{1}{2}")
    assert await half.verify("q", answers("0.5", "1/2", r"\frac{2}{4}", "0.6", "2")) == [
        True,
        True,
        True,
        False,
        False,
    ]
    # No extracted answer: math-verify reads the candidate's text itself.
    texts = [
        Candidate(text="$391$"),
        Candidate(text=r"so we get \boxed{391}"),
        Candidate(text="390"),
    ]
    assert await MathAnswer("391").verify("q", texts) == [True, True, False]


@pytest.mark.anyio
async def test_math_answer_plain_numbers_and_commas() -> None:
    assert await MathAnswer("1234").verify("q", answers("1,234", "1234.0", "1,235")) == [
        True,
        True,
        False,
    ]
    assert await MathAnswer("18").verify("q", answers("18", "x = 18", "$18$")) == [True] * 3


@pytest.mark.anyio
async def test_math_answer_gold_goes_first() -> None:
    # math-verify is not symmetric: an interval answer matches an inequality gold, but an
    # inequality answer does not match an interval gold. Swapping the arguments flips both.
    assert await MathAnswer("$1 < x < 2$").verify("q", answers("$(1, 2)$")) == [True]
    assert await MathAnswer("$(1, 2)$").verify("q", answers("$1 < x < 2$")) == [False]


@pytest.mark.anyio
async def test_math_answer_batch_keeps_order_and_duplicates() -> None:
    values = ["3", "4", "3", "1+2", "", "three"]
    assert await MathAnswer("3").verify("q", answers(*values)) == [
        True,
        False,
        True,
        True,
        False,
        False,
    ]
    assert await MathAnswer("3").verify("q", []) == []


@pytest.mark.anyio
async def test_math_answer_timeout_kills_the_pool_and_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _warm_pool()
    pool = _workers._pool
    assert pool is not None
    workers = set(pool.warm_pids)
    monkeypatch.setattr(_workers, "_STARTUP_GRACE_S", 0.0)
    slow = MathAnswer("3", timeout=0.5)
    start = time.monotonic()
    # 9^(9^9) has ~370 million digits: sympy computes it in one long C call.
    verdicts = await slow.verify("q", answers("9^{9^{9}}", "3"))
    elapsed = time.monotonic() - start
    assert verdicts == [False, True]
    assert elapsed < 4.0
    assert pool.dead and _workers._pool is not pool
    if sys.platform.startswith("linux"):
        assert await anyio.to_thread.run_sync(_gone, workers, 5.0)
    # A later call gets a fresh pool and works.
    assert await MathAnswer("7").verify("q", answers("7", "8")) == [True, False]
    assert _workers._pool is not None and _workers._pool is not pool


@pytest.mark.anyio
async def test_math_answer_cancelled_caller_does_not_wedge_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _warm_pool()
    monkeypatch.setattr(_workers, "_STARTUP_GRACE_S", 0.0)
    with anyio.move_on_after(0.2):
        await MathAnswer("3", timeout=0.6).verify("q", answers("9^{9^{9}}"))
    # The abandoned grading is still killed at its deadline; graders keep working meanwhile
    # and afterwards.
    assert await MathAnswer("5").verify("q", answers("5", "6")) == [True, False]
    await anyio.sleep(0.8)
    assert await MathAnswer("6").verify("q", answers("6", "5")) == [True, False]


def test_math_answer_from_a_worker_thread() -> None:
    """No signal.alarm: grading works off the main thread, inside a fresh event loop."""
    verifier = MathAnswer(r"\frac{3}{4}")

    def in_thread() -> list[bool]:
        return asyncio.run(verifier.verify("q", answers("0.75", "0.7")))

    result: list[list[bool]] = []
    import threading

    thread = threading.Thread(target=lambda: result.append(in_thread()))
    thread.start()
    thread.join(timeout=60)
    assert result == [[True, False]]


@pytest.mark.anyio
async def test_math_answer_from_anyio_worker_thread() -> None:
    verifier = MathAnswer("12")
    verdicts = await anyio.to_thread.run_sync(
        lambda: asyncio.run(verifier.verify("q", answers("12", "13")))
    )
    assert verdicts == [True, False]


@pytest.mark.anyio
async def test_math_answer_caches_verdicts() -> None:
    verifier = MathAnswer("41")
    assert await verifier.verify("q", answers("41")) == [True]
    assert _workers._cache_get((verifier._gold_math, "$41$")) is True


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_math_answer_does_not_rerun_a_script_without_main_guard(
    tmp_path: Path, method: str
) -> None:
    """The README's example as a plain script: grading must not execute it again (its
    requests would be paid once more per worker), whatever multiprocessing's start method."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "plain_script.py"
    script.write_text(
        "import multiprocessing\n"
        f"multiprocessing.set_start_method({method!r}, force=True)\n"
        f"with open({str(runs)!r}, 'a') as f:\n"
        "    f.write('ran\\n')\n"
        "from ttc import Candidate\n"
        "from ttc.scoring import MathAnswer\n"
        "import asyncio\n"
        "c = [Candidate(text='x', answer=a) for a in ('1/2', '0.5', '3')]\n"
        "print(asyncio.run(MathAnswer('0.5').verify('q', c)))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[True, True, False]"
    assert runs.read_text() == "ran\n"


def test_math_answer_config_errors() -> None:
    with pytest.raises(ConfigError, match="gold"):
        MathAnswer("")
    with pytest.raises(ConfigError, match="timeout"):
        MathAnswer("1", timeout=0)


def test_importing_scoring_stays_light() -> None:
    code = (
        "import sys, ttc.scoring, ttc.eval\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('sympy', 'math_verify', 'latex2sympy2_extended')]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


# --- GSM8KAnswer ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_gsm8k_answer() -> None:
    verifier = GSM8KAnswer("She has 1000 + 234 = 1,234 apples.\n#### 1,234")
    candidates = [
        Candidate(text="so 1,234 apples\n#### 1,234"),
        Candidate(text="The answer is 1234.0"),
        Candidate(text="whatever", answer="1234"),
        Candidate(text="The answer is 1233"),
        Candidate(text="no idea"),
        Candidate(text="1234", answer="many"),  # the answer field wins over the text
    ]
    assert await verifier.verify("q", candidates) == [True, True, True, False, False, False]


@pytest.mark.anyio
async def test_gsm8k_answer_bare_number_and_fractions() -> None:
    assert await GSM8KAnswer("0.5").verify("q", answers("1/2", "0.50", "0.49")) == [
        True,
        True,
        False,
    ]
    assert await GSM8KAnswer("$18").verify("q", answers("18")) == [True]


def test_gsm8k_answer_bad_gold() -> None:
    with pytest.raises(ConfigError, match="gold"):
        GSM8KAnswer("eighteen")
    with pytest.raises(ConfigError, match="gold"):
        GSM8KAnswer("#### ")


# --- Regex ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_regex_with_gold_uses_the_last_match() -> None:
    verifier = Regex(r"ANSWER:\s*(\S+)", gold="42")
    candidates = [
        Candidate(text="ANSWER: 41 ... on second thought ANSWER: 42"),
        Candidate(text="ANSWER: 42 ... no, ANSWER: 43"),
        Candidate(text="ANSWER: 42.0"),
        Candidate(text="42"),
    ]
    assert await verifier.verify("q", candidates) == [True, False, True, False]


@pytest.mark.anyio
async def test_regex_without_group_or_gold() -> None:
    assert await Regex(r"\d+", gold="7").verify("q", [Candidate(text="6 then 7")]) == [True]
    matches = Regex(r"(?i)\bdone\b")
    assert await matches.verify("q", [Candidate(text="All DONE."), Candidate(text="undone")]) == [
        True,
        False,
    ]


def test_regex_bad_pattern() -> None:
    with pytest.raises(ConfigError, match=r"pattern '\(unclosed'"):
        Regex("(unclosed")


# --- functions --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_function_verifier_sync_and_async() -> None:
    def sync_fn(text: str) -> bool:
        return "yes" in text

    async def async_fn(text: str) -> bool:
        await anyio.lowlevel.checkpoint()
        return "yes" in text

    class AsyncCallable:
        async def __call__(self, text: str) -> bool:
            return "yes" in text

    candidates = [Candidate(text="yes"), Candidate(text="no")]
    for fn in (sync_fn, async_fn, AsyncCallable(), lambda t: "yes" in t):
        assert await FunctionVerifier(fn).verify("q", candidates) == [True, False]


@pytest.mark.anyio
async def test_function_verifier_sync_runs_off_the_loop() -> None:
    def slow(text: str) -> bool:
        time.sleep(0.3)
        return True

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        start = time.monotonic()
        verdicts = await FunctionVerifier(slow).verify(
            "q", [Candidate(text=str(i)) for i in range(4)]
        )
        elapsed = time.monotonic() - start
        tg.cancel_scope.cancel()
    assert verdicts == [True] * 4
    assert ticks >= 10  # the loop kept running while the function slept
    assert elapsed < 1.0  # the four calls ran concurrently


@pytest.mark.anyio
async def test_function_scorer() -> None:
    async def length(text: str) -> float:
        return float(len(text))

    scorer = FunctionScorer(length, name="length")
    assert scorer.name == "length"
    assert await scorer.score("q", [Candidate(text="ab"), Candidate(text="abcd")]) == [2.0, 4.0]
    assert await FunctionScorer(lambda t: 1).score("q", [Candidate(text="x")]) == [1.0]
    with pytest.raises(TypeError, match="not a number"):
        await FunctionScorer(lambda t: "high").score("q", [Candidate(text="x")])  # type: ignore[arg-type, return-value]


@pytest.mark.anyio
async def test_function_verifier_as_scorer_gives_ones_and_zeros() -> None:
    verifier = as_verifier(lambda t: t == "a")
    assert await verifier.score("q", [Candidate(text="a"), Candidate(text="b")]) == [1.0, 0.0]


class _Length(Scorer):
    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        return [float(len(c.text)) for c in candidates]


def test_as_verifier_and_as_scorer() -> None:
    math = MathAnswer("1")
    assert as_verifier(math) is math
    assert as_scorer(math) is math
    length = _Length()
    assert as_scorer(length) is length
    assert isinstance(as_verifier(lambda t: True), FunctionVerifier)
    assert isinstance(as_scorer(lambda t: 1.0), FunctionScorer)
    assert isinstance(as_verifier(lambda t: True), Verifier)
    with pytest.raises(ConfigError, match="Scorer"):
        as_verifier(length)
    with pytest.raises(ConfigError, match="verifier"):
        as_verifier(42)
    with pytest.raises(ConfigError, match="scorer"):
        as_scorer("not a function")
    with pytest.raises(ConfigError, match="callable"):
        FunctionVerifier(42)  # type: ignore[arg-type]


def test_worker_processes_belong_to_this_process() -> None:
    """A forked child must not reuse its parent's pool."""
    pool, _ = _workers._current_pool()
    assert pool.owner_pid == os.getpid()
