"""The evaluation runner end to end on FunctionModels: stored results, judged candidates,
budgets for the whole run (and across resumes), resume after SIGKILL and Ctrl-C, failures
retried, and refusals to mix runs or datasets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from ttc import Budget, RepeatedSample
from ttc.adapters import FunctionModel
from ttc.errors import ConfigError, ServerError
from ttc.eval.datasets import Dataset, load_dataset
from ttc.eval.runner import default_run_name, evaluate
from ttc.eval.solver import STRATEGIES, Question, Solver, named_strategy
from ttc.eval.store import ResultsStore
from ttc.runtime.model import Model
from ttc.runtime.retry import RetryPolicy
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]


def answers_by_prompt(dataset: Dataset) -> dict[str, str]:
    return {e.question: e.reference for e in dataset}


def right_every(dataset: Dataset, period: int, *, native_n: bool = True) -> FunctionModel:
    """Sample i of a question is right when i % period == 0 (counted per prompt), else 7."""
    refs = answers_by_prompt(dataset)
    seen: Counter[str] = Counter()

    def reply(request: GenerateRequest, i: int) -> str:
        assert isinstance(request.prompt, str)
        index = seen[request.prompt]
        seen[request.prompt] += 1
        answer = refs[request.prompt] if index % period == 0 else "7"
        return f"Some steps. The answer is {answer}."

    return FunctionModel(reply, native_n=native_n)


def solver(model: Model, strategy: str = "repeated-sample", n: int = 4) -> Solver:
    return Solver(model, named_strategy(strategy, n), {"strategy": strategy, "n": n})


async def test_every_question_is_stored_with_judged_candidates(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=6)
    summary = await evaluate(data, solver(right_every(data, 4)), tmp_path)
    assert (summary.total, summary.stored, summary.new, summary.skipped) == (6, 6, 6, 0)
    assert summary.accuracy == 1.0 and summary.finished and summary.stopped_by is None
    assert summary.run == "gsm8k-sample-repeated-sample-n4"
    assert summary.usage.requests == 6  # native n: one request a question
    with ResultsStore(tmp_path) as store:
        records = store.records(summary.run)
        info = store.run(summary.run)
    assert [r.id for r in records] == [e.id for e in data]
    assert info.config == {
        "dataset": "gsm8k-sample",
        "format": "gsm8k",
        "strategy": "repeated-sample",
        "n": 4,
    }
    for record, example in zip(records, data):
        assert record.verdicts == [True, False, False, False]
        assert record.correct and record.result.answer == example.reference
        assert record.reference == example.reference and record.fingerprint == example.fingerprint
        assert record.result.usage.completion_tokens > 0
        assert record.result.pass_at_k[1] == pytest.approx(0.25)


async def test_self_consistency_candidates_are_judged_after_the_vote(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=3)
    summary = await evaluate(data, solver(right_every(data, 3), "self-consistency", 6), tmp_path)
    with ResultsStore(tmp_path) as store:
        records = store.records(summary.run)
    for record in records:
        # Two right answers of six, four times "7": the vote picks 7, which is wrong.
        assert record.verdicts == [True, False, False, True, False, False]
        assert record.result.answer == "7" and not record.correct
    assert summary.accuracy == 0.0


async def test_a_custom_strategy_factory_and_every_named_strategy(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=2)
    model = right_every(data, 2)

    def make(model: Model, question: Question) -> RepeatedSample:
        return RepeatedSample(model, 2, verifier=question.verifier, stop_on_success=True)

    summary = await evaluate(data, Solver(model, make), tmp_path, run="custom")
    assert summary.stored == 2 and summary.accuracy == 1.0
    policy = tmp_path / "policy.json"
    policy.write_text(
        '{"bins": [{"name": "all", "low": 0, "high": 1, "action": "vote", "params": {"n": 2}}]}',
        encoding="utf-8",
    )
    for name in STRATEGIES:
        extra = {"policy": str(policy)} if name == "compute-optimal" else None
        make = named_strategy(name, 2, strategy_params=extra)
        # adaptive-allocation spreads the run's budget, so it needs one.
        budget = Budget(requests=100) if make.spec.info.shared_budget else None
        summary = await evaluate(
            data, Solver(model, make, {"strategy": name, "n": 2}), tmp_path, budget=budget
        )
        assert summary.stored == 2 and summary.run == f"gsm8k-sample-{name}-n2"
    with pytest.raises(ConfigError, match="unknown strategy 'beam'; the strategies are"):
        named_strategy("beam", 4)


async def test_run_budget_stops_the_run_keeps_finished_questions_and_holds_across_resumes(
    tmp_path: Path,
) -> None:
    data = load_dataset("gsm8k-sample", limit=6)
    model = right_every(data, 2, native_n=False)  # one request a sample: 4 a question
    budget = Budget(requests=10)
    first = await evaluate(data, solver(model), tmp_path, budget=budget, concurrency=1)
    assert first.stopped_by == "budget" and "requests limit 10" in (first.budget_error or "")
    assert first.stored == 2 and first.incomplete == 1  # the third question got only 2 samples
    assert first.usage.requests == 10
    # Resuming with the same budget: what the stored questions cost counts, and the lost
    # question's requests were never stored, so 2 requests are left: not enough for one.
    again = await evaluate(data, solver(model), tmp_path, budget=budget, concurrency=1)
    assert again.stored == 2 and again.stopped_by == "budget" and again.usage.requests == 2
    done = await evaluate(data, solver(model), tmp_path, budget=Budget(requests=40))
    assert done.stored == 6 and done.stopped_by is None and done.skipped == 2
    # A shorter slice of the same run counts only its own questions.
    head = await evaluate(load_dataset("gsm8k-sample", limit=3), solver(model), tmp_path)
    assert (head.total, head.stored, head.skipped, head.new, head.correct) == (3, 3, 3, 0, 3)


async def test_a_per_question_budget_stop_is_a_result_not_an_end(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=3)
    model = right_every(data, 2, native_n=False)

    def make(on_budget: str) -> Solver:
        def build(model: Model, question: Question) -> RepeatedSample:
            return RepeatedSample(
                model,
                4,
                verifier=question.verifier,
                budget=Budget(requests=2),
                on_budget=on_budget,  # type: ignore[arg-type]
            )

        return Solver(model, build)

    for on_budget in ("return", "raise"):
        summary = await evaluate(data, make(on_budget), tmp_path, run=on_budget)
        assert summary.stored == 3 and summary.stopped_by is None
        with ResultsStore(tmp_path) as store:
            for record in store.records(on_budget):
                assert record.result.stopped_by == "budget"
                assert len(record.result.candidates) == 2 and record.correct


async def test_budget_under_concurrency_never_passes_the_limit(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample")
    model = right_every(data, 2, native_n=False)
    summary = await evaluate(
        data, solver(model), tmp_path, budget=Budget(requests=15), concurrency=8
    )
    assert summary.stopped_by == "budget"
    assert model.usage.requests <= 15
    with ResultsStore(tmp_path) as store:
        records = store.records(summary.run)
    assert all(len(r.result.candidates) == 4 for r in records)  # no question stored short
    assert len(records) == summary.stored <= 3


async def test_provider_failures_are_noted_and_retried_on_the_next_run(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=4)
    refs = answers_by_prompt(data)
    broken = {data.examples[1].question}

    def reply(request: GenerateRequest, i: int) -> str:
        assert isinstance(request.prompt, str)
        if request.prompt in broken:
            raise ServerError("down", status=503)
        return f"The answer is {refs[request.prompt]}."

    model = FunctionModel(reply, retry=RetryPolicy(max_attempts=1))
    first = await evaluate(data, solver(model), tmp_path)
    assert first.stored == 3 and list(first.failed) == [data.examples[1].id]
    assert "503" in first.failed[data.examples[1].id]
    with ResultsStore(tmp_path) as store:
        assert list(store.failures(first.run)) == ["2"]
    broken.clear()
    second = await evaluate(data, solver(model), tmp_path)
    assert second.new == 1 and second.stored == 4 and not second.failed
    with ResultsStore(tmp_path) as store:
        assert store.failures(second.run) == {}


async def test_resume_refuses_a_changed_config_or_dataset(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=3)
    model = right_every(data, 2)
    await evaluate(data, solver(model, n=4), tmp_path, run="r")
    with pytest.raises(ConfigError, match="made with n=4, this one has n=8"):
        await evaluate(data, solver(model, n=8), tmp_path, run="r")
    changed = tmp_path / "changed.jsonl"
    lines = [
        json.dumps({"question": e.question + "?", "answer": f"#### {e.reference}"}) for e in data
    ]
    changed.write_text("\n".join(lines) + "\n")
    other = load_dataset(changed, name="gsm8k-sample")
    with pytest.raises(ConfigError, match="stored question '1' for a different question"):
        await evaluate(other, solver(model, n=4), tmp_path, run="r")
    # --no-resume starts the run over.
    fresh = await evaluate(
        other, solver(right_every(other, 2), n=4), tmp_path, run="r", resume=False
    )
    assert fresh.skipped == 0 and fresh.new == 3


async def test_a_bug_in_a_strategy_ends_the_run_with_its_own_error(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=4)

    def reply(request: GenerateRequest, i: int) -> str:
        if i == 2:
            raise KeyError("bug")
        return "The answer is 3."

    model = FunctionModel(reply)
    with pytest.raises(KeyError, match="bug"):
        await evaluate(data, solver(model, n=1), tmp_path, concurrency=1)
    with ResultsStore(tmp_path) as store:
        assert store.count("gsm8k-sample-repeated-sample-n1") == 2


def test_default_run_names_are_slugs() -> None:
    data = load_dataset("gsm8k-sample", limit=1)
    config = {"strategy": "best-of-n", "n": 8, "model": "groq/Llama 3.1"}
    assert default_run_name(data, config) == "gsm8k-sample-best-of-n-n8-groq-llama-3.1"
    assert default_run_name(data, {}) == "gsm8k-sample-run"


SCRIPT = textwrap.dedent(
    """
    import signal, sys, time, anyio
    # A shell starts background jobs with SIGINT ignored; a user's terminal does not.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from ttc.adapters import FunctionModel
    from ttc.eval.datasets import load_dataset
    from ttc.eval.runner import evaluate
    from ttc.eval.solver import Solver, named_strategy

    data = load_dataset("gsm8k-sample")
    refs = {e.question: e.reference for e in data}

    async def reply(request, i):
        await anyio.sleep(float(sys.argv[2]))
        return f"The answer is {refs[request.prompt]}."

    solver = Solver(FunctionModel(reply, native_n=False), named_strategy("repeated-sample", 3))
    try:
        anyio.run(lambda: evaluate(data, solver, sys.argv[1], run="r", concurrency=2))
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


def start_run(tmp_path: Path, delay: float) -> subprocess.Popen[bytes]:
    script = tmp_path / "run_eval.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "out"), str(delay)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stored_rows(db: Path) -> dict[str, str]:
    """The stored records by id, read as another process would (WAL: no lock needed)."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT id, record FROM results").fetchall()
    except sqlite3.OperationalError:  # the tables are not created yet
        return {}
    return {str(r[0]): str(r[1]) for r in rows}


def wait_for_rows(proc: subprocess.Popen[bytes], db: Path, count: int) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = stored_rows(db)
        if len(rows) >= count:
            return rows
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the run stored too few questions in 60 s")


async def test_sigkill_halfway_then_resume_redoes_only_unstored_questions(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out" / "results.sqlite"
    proc = start_run(tmp_path, delay=0.05)
    wait_for_rows(proc, db, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = stored_rows(db)
    assert 5 <= len(before) < 20, "killed too late to test resuming"

    data = load_dataset("gsm8k-sample")
    refs = answers_by_prompt(data)
    asked: Counter[str] = Counter()

    def reply(request: GenerateRequest, i: int) -> str:
        assert isinstance(request.prompt, str)
        asked[request.prompt] += 1
        return f"The answer is {refs[request.prompt]}."

    model = FunctionModel(reply, native_n=False)
    summary = await evaluate(
        data, Solver(model, named_strategy("repeated-sample", 3)), tmp_path / "out", run="r"
    )
    assert summary.skipped == len(before) and summary.new == 20 - len(before)
    assert summary.stored == 20
    # Only the questions not stored were asked again, each with all its samples.
    redone = {e.question for e in data if e.id not in before}
    assert set(asked) == redone and set(asked.values()) == {3}
    assert model.samples == 3 * (20 - len(before))
    after = stored_rows(db)
    assert {k: after[k] for k in before} == before  # stored rows untouched
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_ctrl_c_stops_cleanly_keeping_what_is_finished(tmp_path: Path) -> None:
    db = tmp_path / "out" / "results.sqlite"
    proc = start_run(tmp_path, delay=0.1)
    wait_for_rows(proc, db, 3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    rows = stored_rows(db)
    assert 3 <= len(rows) < 20
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ResultsStore(tmp_path / "out") as store:
        assert all(len(r.result.candidates) == 3 for r in store.records("r"))
