"""``ttc eval``'s progress display, driven by ``evaluate`` through its ``Progress`` protocol: a
line per question when the console is not a terminal (a run's log in the background)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from ttc.adapters import FunctionModel
from ttc.cli.progress import EvalProgress
from ttc.errors import ConfigError
from ttc.eval.datasets import load_dataset
from ttc.eval.runner import evaluate
from ttc.eval.solver import Solver, named_strategy
from ttc.types import GenerateRequest

pytestmark = pytest.mark.anyio


async def test_a_line_per_question_off_a_terminal_and_a_resume_says_what_is_stored(
    tmp_path: Path,
) -> None:
    data = load_dataset("gsm8k-sample", limit=3)
    refs = {e.question: e.reference for e in data}

    def reply(request: GenerateRequest, i: int) -> str:
        assert isinstance(request.prompt, str)
        return f"The answer is {refs[request.prompt]}."

    solver = Solver(FunctionModel(reply), named_strategy("self-consistency", 2), {"n": 2})
    out = io.StringIO()
    display = EvalProgress(Console(file=out, force_terminal=False))
    assert not display.animated
    await evaluate(data, solver, tmp_path, run="r", concurrency=1, progress=display)
    lines = out.getvalue().splitlines()
    assert lines[0] == "r: 3 questions, 0 already stored, 3 to do"
    assert [line.split(" ")[0] for line in lines[1:]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all("acc 1.000" in line and "tokens" in line for line in lines[1:])
    again = io.StringIO()
    await evaluate(data, solver, tmp_path, run="r", progress=EvalProgress(Console(file=again)))
    assert again.getvalue().splitlines() == ["r: 3 questions, 3 already stored, 0 to do"]


async def test_a_progress_that_is_not_a_display_is_refused(tmp_path: Path) -> None:
    data = load_dataset("gsm8k-sample", limit=1)
    solver = Solver(
        FunctionModel(lambda r, i: "The answer is 1."), named_strategy("self-consistency", 1)
    )
    with pytest.raises(ConfigError, match="progress: pass a display"):
        await evaluate(data, solver, tmp_path, progress=True)  # type: ignore[arg-type]
