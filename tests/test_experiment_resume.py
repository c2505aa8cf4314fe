"""Resuming runs stored before the strategy registry listed every parameter."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import anyio
import pytest

from ttc.adapters.function import FunctionModel
from ttc.errors import ConfigError
from ttc.eval.datasets import Dataset, load_dataset
from ttc.eval.experiment import load_experiment, run_experiment, select_questions
from ttc.eval.runner import evaluate
from ttc.eval.solver import Solver, spec_strategy
from ttc.eval.store import ResultsStore
from ttc.strategies.registry import StrategySpec, upgrade_config
from ttc.types import GenerateRequest

ANSWER = "Tom has 2 apples.\nThen 2 + 3 = 5 apples.\nThe answer is 5."


def _questions(count: int) -> Dataset:
    data = select_questions(load_dataset("graded-dev"), levels=[1], per_level=4)
    return dataclasses.replace(data, examples=data.examples[:count])


def _counting(calls: list[int]) -> FunctionModel:
    def reply(request: GenerateRequest, i: int) -> str:
        calls.append(i)
        return ANSWER

    return FunctionModel(reply, native_n=False)


def _today(spec: StrategySpec) -> dict[str, Any]:
    """The configuration ``ttc eval`` stores today: every parameter listed."""
    return {**spec.config(), "model": "function", "temperature": 0.8, "max_tokens": 50}


def test_upgrade_fills_parameters_listed_since_with_their_defaults() -> None:
    old = {"strategy": "beam-prm", "n": 8, "final_selector": "weighted", "model": "m"}
    assert upgrade_config(old) == {
        **StrategySpec.of("beam-prm", n=8).config(),
        "model": "m",
    }
    # What was stored stays: a setting that really differs still shows.
    assert upgrade_config({"strategy": "dvts", "n": 2, "width": 1})["width"] == 1
    assert upgrade_config({"strategy": "best-of-n", "n": 4, "scorer": "prm"})["prm"] == "arithmetic"
    assert upgrade_config({"n": 4, "model": "m"}) == {"n": 4, "model": "m"}


def test_a_run_stored_with_the_older_config_shape_resumes(tmp_path: Path) -> None:
    spec = StrategySpec.of("repeated-sample", n=2)
    today = _today(spec)
    # What ttc eval stored before the registry: no stop_on_success, no selector.
    older = {k: v for k, v in today.items() if k not in ("stop_on_success", "selector")}
    calls: list[int] = []
    make = spec_strategy(spec)
    old_solver = Solver(model=_counting(calls), strategy=make, config=older)
    anyio.run(lambda: evaluate(_questions(2), old_solver, tmp_path, run="old"))
    assert len(calls) == 4
    calls.clear()
    solver = Solver(model=_counting(calls), strategy=make, config=today)
    summary = anyio.run(lambda: evaluate(_questions(4), solver, tmp_path, run="old"))
    assert (summary.skipped, summary.new) == (2, 2) and len(calls) == 2 * 2
    with ResultsStore(tmp_path) as store:
        # Stored in today's shape from now on, so reports group it with today's runs.
        assert store.run("old").config["selector"] == "first-verified"
        assert store.count("old") == 4
    # A setting that really differs from what the run was made with still refuses.
    changed = Solver(
        model=_counting(calls),
        strategy=make,
        config={**today, "stop_on_success": True},
    )
    with pytest.raises(ConfigError, match="made with stop_on_success=False"):
        anyio.run(lambda: evaluate(_questions(4), changed, tmp_path, run="old"))


def test_a_grid_cell_stored_under_an_older_name_resumes(tmp_path: Path) -> None:
    config = tmp_path / "experiment.toml"
    config.write_text(
        f'out = "{tmp_path / "results"}"\ndatasets = ["graded-dev"]\nmodels = ["scripted"]\n'
        'levels = [1]\nper_level = 4\n\n[[strategy]]\nname = "self-consistency"\nn = 2\n'
    )
    experiment = load_experiment(config)
    (cell,) = experiment.cells
    # An older ttc stored the cell without stop_when_settled: its name's hash differs.
    older = cell.config()
    del older["stop_when_settled"]
    older_name = f"{cell.slug()}-0123abcd"
    assert older_name != cell.run_name()
    calls: list[int] = []
    data = select_questions(load_dataset("graded-dev"), levels=[1], per_level=4)
    half = dataclasses.replace(data, examples=data.examples[:2])
    solver = Solver(model=_counting(calls), strategy=spec_strategy(cell.strategy), config=older)
    anyio.run(lambda: evaluate(half, solver, experiment.out, run=older_name))
    calls.clear()
    model = _counting(calls)
    (summary,) = anyio.run(lambda: run_experiment(experiment, models={"scripted": model}))
    assert summary.run == older_name and (summary.skipped, summary.new) == (2, 2)
    assert len(calls) == 2 * 2
    with ResultsStore(experiment.out) as store:
        assert [run.name for run in store.runs()] == [older_name]
        assert store.run(older_name).config["stop_when_settled"] is False
