"""``ttc eval`` and ``ttc report`` when things go wrong: a question whose text cannot be sent,
errors that fail every question (a wrong key, a missing model, a server that is down), a
damaged results store, unpriced models and incomplete runs. Through the real ``ttc`` command
against loopback FakeProvider servers where a provider is involved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_cli_endpoints import dead_url, served
from typer.testing import CliRunner

from ttc.adapters import FunctionModel, OpenAICompatible
from ttc.cli import app
from ttc.errors import (
    AuthenticationError,
    BadRequestError,
    GenerationError,
    NotAnAPIError,
    NotFoundError,
    ProviderConnectionError,
    ProviderUnreachableError,
    ServerError,
)
from ttc.eval.datasets import load_dataset
from ttc.eval.runner import evaluate
from ttc.eval.solver import Solver, fails_every_question, named_strategy
from ttc.runtime.model import Model
from ttc.runtime.retry import RetryPolicy
from ttc.types import GenerateRequest

runner = CliRunner()
KEY = "sk-test-0123456789"


def ttc(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    return " ".join(text.split())


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def encoding_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model name resolves to a model that, like a real engine or HTTP client, encodes
    the prompt as UTF-8 before answering (and is right every time)."""

    def resolve(name: str, **kwargs: Any) -> Model:
        def reply(request: GenerateRequest, i: int) -> str:
            assert isinstance(request.prompt, str)
            request.prompt.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError here
            return "The answer is 5."

        return FunctionModel(reply, model="enc", **kwargs)

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)


# ------------------------------------------------------------------ a question that cannot be sent


def test_a_question_that_cannot_be_sent_fails_alone(tmp_path: Path, encoding_model: None) -> None:
    good = '{"id": "q%d", "question": "What is 2 + 3?", "answer": "#### 5"}'
    # json.loads turns the escape "\ud800" into a lone surrogate, which no encoder takes.
    bad = '{"id": "broken", "question": "What is \\ud800 2 + 3?", "answer": "#### 5"}'
    data = write_jsonl(tmp_path / "d.jsonl", [good % 1, bad, good % 3, good % 4])
    out = tmp_path / "out"
    result = ttc("eval", data, "-n", "2", "-o", out, "-c", "1", "--field", "id=id")
    # Before: a UnicodeEncodeError traceback ended the whole evaluation. Now the prompt
    # boundary refuses the lone surrogate with a PromptError saying where it is.
    assert isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "3/4 questions stored" in text
    assert "failed question broken, line 2: PromptError" in text
    assert "lone surrogate" in text
    assert "Traceback" not in result.output

    as_json = ttc("eval", data, "-n", "2", "-o", out, "--field", "id=id", "--json")
    summary = json.loads(as_json.stdout)
    assert summary["stored"] == 3 and list(summary["failed"]) == ["broken"]
    assert summary["failed"]["broken"].startswith("line 2: ")


# ------------------------------------------------------------------ errors that fail every question


def test_fails_every_question_decides_from_the_error() -> None:
    for exc in (
        AuthenticationError("bad key", status=401),
        NotFoundError("no such model", status=404),
        ProviderUnreachableError("ClientConnectorError: refused"),
        NotAnAPIError("a web page, not the API", status=501),
        GenerationError(AuthenticationError("bad key", status=401), [], 4),
    ):
        assert fails_every_question(exc), exc
    for exc in (
        ProviderConnectionError("connection reset mid-request"),
        ServerError("overloaded", status=503),
        BadRequestError("prompt too long", status=400),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ):
        assert not fails_every_question(exc), exc


def test_a_wrong_key_stops_the_evaluation_at_once(tmp_path: Path) -> None:
    with served("openai", api_key=KEY) as fake:
        model = f"openai-compatible/m@{fake.base_url}"
        args = ["eval", "gsm8k-sample", "-n", "2", "-o", tmp_path, "-c", "1"]
        result = ttc(*args, "-m", model, "--api-key", "sk-wrong-key-000000")
        assert result.exit_code == 1, result.output
        text = flat(result.output)
        assert "stopped:" in text and "401" in text and "fails every question alike" in text
        # One question tried (its two samples in parallel), not all twenty, one by one.
        assert fake.stats.requests <= 2
        assert "sk-wrong-key" not in result.output

        as_json = ttc(*args, "-m", model, "--api-key", "sk-wrong-key-000000", "--json")
        data = json.loads(as_json.stdout)
        assert data["stopped_by"] == "error" and "AuthenticationError" in data["error"]
        assert data["exit_code"] == 1 and len(data["failed"]) == 1


def test_a_missing_model_stops_the_evaluation_at_once(tmp_path: Path) -> None:
    with served("openai", api_key=None, models=["real"]) as fake:
        args = ["eval", "gsm8k-sample", "-n", "1", "-o", tmp_path, "-c", "2", "--json"]
        result = ttc(*args, "-m", f"openai-compatible/typo@{fake.base_url}")
        data = json.loads(result.stdout)
        assert result.exit_code == 1
        assert data["stopped_by"] == "error" and "NotFoundError" in data["error"]
        assert fake.stats.requests <= 2  # the two questions in flight, not twenty


@pytest.mark.anyio
async def test_a_server_that_is_down_stops_the_evaluation(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample")
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    model = OpenAICompatible("m", base_url=dead_url(), retry=retry)
    solver = Solver(model=model, strategy=named_strategy("repeated-sample", 2))
    summary = await evaluate(data, solver, tmp_path, concurrency=1)
    await model.aclose()
    assert summary.stopped_by == "error"
    assert summary.fatal_error is not None and "ProviderUnreachableError" in summary.fatal_error
    assert len(summary.failed) == 1 and summary.stored == 0
    assert model.usage.requests <= 4  # one question (2 samples, 2 attempts), not twenty


# ------------------------------------------------------------------ a damaged results store


@pytest.fixture
def wordy_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model name resolves to a model with long answers (rows of a few KB)."""

    def resolve(name: str, **kwargs: Any) -> Model:
        def reply(request: GenerateRequest, i: int) -> str:
            return "Let me think about it step by step. " * 20 + "The answer is 5."

        return FunctionModel(reply, model="wordy", **kwargs)

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)


def damage(db: Path, marker: bytes, at: int = 0, length: int = 512) -> None:
    """Write garbage into the page of ``db`` that holds ``marker``, ``at`` bytes into it."""
    data = bytearray(db.read_bytes())
    page = data.index(marker) // 4096
    assert page > 0  # not the header: a page in the middle of the file
    start = page * 4096 + at
    data[start : start + length] = b"\xde\xad\xbe\xef" * (length // 4)
    db.write_bytes(bytes(data))


def test_a_damaged_store_is_one_clear_error_and_its_rows_are_salvaged(
    tmp_path: Path, wordy_model: None
) -> None:
    out = tmp_path / "results"
    args = ["eval", "gsm8k-sample", "-n", "4"]
    assert ttc(*args, "-o", out).exit_code == 0
    db = out / "results.sqlite"
    damage(db, b'"id":"10","position"')  # the b-tree page holding question 10's row
    before = db.read_bytes()

    # Resuming: one error naming the file and what to do; nothing written to the file.
    resumed = ttc(*args, "-o", out)
    assert resumed.exit_code == 2, resumed.output
    text = flat(resumed.output)
    assert f"{db} is damaged" in text and "left untouched" in text
    assert f"ttc salvage {out} NEW_FOLDER" in text
    assert isinstance(resumed.exception, SystemExit)  # not a sqlite3.DatabaseError
    assert db.read_bytes() == before

    # The report shows what can be read, says what cannot, and marks the run incomplete.
    report = ttc("report", out, "--no-plots")
    assert report.exit_code == 0, report.output
    text = flat(report.output)
    assert "is damaged" in text and "that could be read" in text
    assert "the others unreadable in a damaged results file" in text
    assert db.read_bytes() == before

    # Salvage copies every readable row to a new folder; the damaged file stays as it is.
    saved = tmp_path / "saved"
    salvaged = ttc("salvage", out, saved)
    assert salvaged.exit_code == 0, salvaged.output
    assert "copied 1 run(s)" in flat(salvaged.output) and "is unchanged" in flat(salvaged.output)
    assert "could not read: results: rows" in flat(salvaged.output)
    assert db.read_bytes() == before
    again = ttc("salvage", out, saved)
    assert again.exit_code == 2 and "already exists" in flat(again.output)

    # Continuing in the new folder answers again only the questions that were lost.
    continued = ttc(*args, "-o", saved, "--json")
    assert continued.exit_code == 0, continued.output
    summary = json.loads(continued.stdout)
    assert summary["stored"] == 20 and 1 <= summary["new"] < 10
    assert summary["skipped"] == 20 - summary["new"]


def test_a_damaged_row_does_not_hide_the_others_from_the_report(
    tmp_path: Path, wordy_model: None
) -> None:
    out = tmp_path / "results"
    assert ttc("eval", "gsm8k-sample", "-n", "4", "-o", out).exit_code == 0
    db = out / "results.sqlite"
    # Garbage inside question 7's stored record (its page's structure intact).
    data = bytearray(db.read_bytes())
    start = data.index(b'"id":"7","position"') + 40
    data[start : start + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    report = ttc("report", out, "--no-plots")
    assert report.exit_code == 0, report.output
    text = flat(report.output)
    assert "question '7' of run" in text and "19/20" in text
    assert db.read_bytes() == before


# ------------------------------------------------------------------ unpriced, incomplete


def test_unpriced_spend_and_incomplete_runs_are_marked(tmp_path: Path) -> None:
    out = tmp_path / "results"
    with served("openai", api_key=None) as fake:
        model = f"openai-compatible/m@{fake.base_url}"
        args = ["eval", "gsm8k-sample", "-n", "2", "-o", out, "-m", model, "-c", "1"]
        stopped = ttc(*args, "--budget-requests", "3")  # one request a question (native n)
        assert stopped.exit_code == 3, stopped.output
        text = flat(stopped.output)
        assert "unpriced" in text and "$0.0000" not in text  # the server's model has no price

        report = ttc("report", out, "--no-plots")
        text = flat(report.output)
        assert report.exit_code == 0, report.output
        assert "3/20" in text and "unpriced" in text and "0.0000" not in text
        assert "incomplete: 3 of 20 questions, stopped by the run's budget" in text

        markdown = ttc("report", out, "--no-plots", "--markdown")
        assert "**Incomplete**: 3 of 20 questions" in markdown.stdout

        finished = ttc(*args)
        assert finished.exit_code == 0, finished.output
        report = ttc("report", out, "--no-plots")
        assert "incomplete:" not in flat(report.output) and "20/20" not in report.output
