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
    NotFoundError,
    ProviderConnectionError,
    ServerError,
)
from ttc.eval.datasets import load_dataset
from ttc.eval.runner import evaluate, fails_every_question
from ttc.eval.solver import Solver, named_strategy
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
    # Before: a UnicodeEncodeError traceback ended the whole evaluation.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "3/4 questions stored" in text
    assert "failed question broken, line 2: UnicodeEncodeError" in text
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
        ProviderConnectionError("ClientConnectorError: refused"),
        GenerationError(AuthenticationError("bad key", status=401), [], 4),
    ):
        assert fails_every_question(exc), exc
    for exc in (
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
    assert summary.fatal_error is not None and "ProviderConnectionError" in summary.fatal_error
    assert len(summary.failed) == 1 and summary.stored == 0
    assert model.usage.requests <= 4  # one question (2 samples, 2 attempts), not twenty
