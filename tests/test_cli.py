"""``ttc run`` end to end on the embedded model (real llama.cpp), plus its error paths."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ttc.cli import app

runner = CliRunner()

CARS = "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are there?"


@pytest.mark.llamacpp
def test_run_json_on_the_embedded_model() -> None:
    pytest.importorskip("llama_cpp")
    args = ["run", CARS, "--n", "3", "--max-tokens", "40", "--seed", "1", "--verify", "5"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "llama.cpp/gemma-3-270m-q4_k_m"
    assert data["strategy"] == "self-consistency" and data["n"] == 3
    assert len(data["candidates"]) == 3
    assert all(isinstance(c["verified"], bool) for c in data["candidates"])
    assert set(data["pass_at_k"]) == {"1", "2", "3"}
    assert data["usage"]["requests"] == 3 and data["usage"]["cost_usd"] == 0.0
    assert data["usage"]["completion_tokens"] == sum(
        c["completion_tokens"] for c in data["candidates"]
    )
    if data["answer"] is not None:
        assert data["votes"][data["answer"]] >= 1
        assert isinstance(data["correct"], bool)


@pytest.mark.llamacpp
def test_run_prints_tables_and_honours_a_budget() -> None:
    pytest.importorskip("llama_cpp")
    args = ["run", CARS, "-s", "repeated-sample", "-n", "4", "--max-tokens", "24"]
    result = runner.invoke(app, [*args, "--verify", "5", "--budget-requests", "2"])
    assert result.exit_code == 0, result.output
    assert "2 candidates" in result.stdout
    assert "answer:" in result.stdout and "tokens:" in result.stdout
    assert "stopped early: budget" in result.stdout
    assert "cost: free" in " ".join(result.stdout.split())  # however rich wraps the line


def test_bad_model_name_is_a_clear_error() -> None:
    result = runner.invoke(app, ["run", "q", "--model", "no-such-model"])
    assert result.exit_code == 2
    assert "cannot resolve 'no-such-model'" in result.output


def test_bad_options_are_rejected_before_anything_runs() -> None:
    result = runner.invoke(app, ["run", "q", "--strategy", "beam"])
    assert result.exit_code != 0
    result = runner.invoke(app, ["run", "q", "--n", "0"])
    assert result.exit_code != 0
