"""Experiment files (``ttc eval --config``) and the strategy registry behind every front end."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from ttc.adapters.function import FunctionModel
from ttc.errors import ConfigError
from ttc.eval.experiment import load_experiment, run_experiment
from ttc.eval.store import ResultsStore
from ttc.strategies import (
    DVTS,
    AdaptiveConsistency,
    BeamPRM,
    BestOfN,
    ComputeOptimal,
    Lookahead,
    RepeatedSample,
    SelfConsistency,
)
from ttc.strategies.registry import (
    STRATEGIES,
    BuildContext,
    StrategySpec,
    build_strategy,
)
from ttc.types import GenerateRequest

GRID = """
out = "{out}"
datasets = ["graded-dev"]
models = ["scripted"]
levels = [1, 2]
per_level = 2
temperature = 0.5

[[strategy]]
name = "repeated-sample"
n = 2

[[strategy]]
name = "best-of-n"
n = [2, 4]
scorer = "prm"
selector = "weighted"
aggregation = "min"
prm = "arithmetic"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.toml"
    path.write_text(text.replace("{out}", str(tmp_path / "results")))
    return path


def test_every_strategy_builds_from_the_registry(tmp_path: Path) -> None:
    model = FunctionModel(lambda request, i: "x")
    expected = {
        "repeated-sample": RepeatedSample,
        "best-of-n": BestOfN,
        "self-consistency": SelfConsistency,
        "beam-prm": BeamPRM,
        "lookahead": Lookahead,
        "dvts": DVTS,
        "adaptive-consistency": AdaptiveConsistency,
        "compute-optimal": ComputeOptimal,
    }
    assert set(STRATEGIES) == set(expected)
    policy = tmp_path / "policy.json"
    policy.write_text(
        '{"bins": [{"name": "all", "low": 0, "high": 1, "action": "beam-prm",'
        ' "params": {"n": 4, "width": 2}}]}',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="compute-optimal needs policy=FILE"):
        StrategySpec.of("compute-optimal")
    for name, cls in expected.items():
        params: dict[str, object] = {"width": 2} if STRATEGIES[name].search else {}
        if name == "compute-optimal":
            params = {"policy": str(policy)}
        spec = StrategySpec.of(name, n=4, params=params)
        built = build_strategy(spec, model, BuildContext())
        assert type(built) is cls
        if STRATEGIES[name].search:
            assert spec.prm == "arithmetic"  # the default PRM of the searches
            assert built.width == 2  # type: ignore[attr-defined]


def test_parameters_from_text_are_typed_and_checked() -> None:
    spec = StrategySpec.of("lookahead", n="8", params={"width": "4", "k": "2"})
    assert spec.n == 8 and spec.param("k") == 2 and spec.param("max_rounds") == 40
    assert spec.config()["prm"] == "arithmetic"
    with pytest.raises(ConfigError, match="unknown parameter 'beam' for strategy 'dvts'"):
        StrategySpec.of("dvts", params={"beam": 4})
    with pytest.raises(ConfigError, match="multiple of width"):
        StrategySpec.of("beam-prm", n=6, params={"width": 4})
    with pytest.raises(ConfigError, match="k: expected int"):
        StrategySpec.of("lookahead", params={"k": "two"})
    with pytest.raises(ConfigError, match="scorer: must be one of"):
        StrategySpec.of("best-of-n", params={"scorer": "oracle"})


def test_grid_cells_are_keyed_by_their_full_configuration(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, GRID))
    assert len(experiment.cells) == 3
    names = [cell.run_name() for cell in experiment.cells]
    assert len(set(names)) == 3
    assert names[1].startswith("graded-dev-best-of-n-prm-n2-")
    config = experiment.cells[2].config()
    assert config["n"] == 4 and config["scorer"] == "prm" and config["prm"] == "arithmetic"
    assert config["temperature"] == 0.5 and config["per_level"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("[[strategy]]\nname = 'beam-search'\n", "unknown strategy 'beam-search'"),
        ("[[strategy]]\nname = 'dvts'\nprm = 'oracle'\n", "unknown PRM 'oracle'"),
        ("[[strategy]]\nname = 'dvts'\nwidht = 2\n", "unknown parameter 'widht'"),
        ("per_level = 0\n", "per_level must be an integer"),
        ("[[strategy]\n", "not valid TOML"),
    ],
)
def test_bad_experiment_files_fail_with_one_error_naming_the_key(
    tmp_path: Path, extra: str, message: str
) -> None:
    base = GRID.replace("per_level = 2\n", "") if extra.startswith("per_level") else GRID
    text = base + "\n" + extra if extra.startswith("[") else extra + base
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_a_killed_grid_resumes_without_redoing_stored_cells(tmp_path: Path) -> None:
    experiment = load_experiment(_write(tmp_path, GRID))
    calls: list[int] = []

    def killed_at(limit: int):  # type: ignore[no-untyped-def]
        def reply(request: GenerateRequest, i: int) -> str:
            calls.append(i)
            if len(calls) > limit:
                raise RuntimeError("killed")
            if i % 2:  # a wrong step, which the arithmetic PRM scores 0
                return "Tom has 2 apples.\nThen 2 + 3 = 6.\nThe answer is 6."
            return "Tom has 2 apples.\nThen 2 + 3 = 5.\nThe answer is 5."

        return reply

    # Cell 1 takes 4 questions x 2 samples; cell 2 is killed in its third question.
    first = FunctionModel(killed_at(8 + 2 * 2 + 1), native_n=False)
    with pytest.raises(RuntimeError, match="killed"):
        anyio.run(lambda: run_experiment(experiment, models={"scripted": first}))
    names = [cell.run_name() for cell in experiment.cells]
    with ResultsStore(experiment.out) as store:
        assert store.count(names[0]) == 4
        assert store.count(names[1]) == 2
        assert names[2] not in {run.name for run in store.runs()}
    calls.clear()
    again = FunctionModel(killed_at(10_000), native_n=False)
    summaries = anyio.run(lambda: run_experiment(experiment, models={"scripted": again}))
    # Only what was missing ran: 2 questions of cell 2 (n=2), all 4 of cell 3 (n=4).
    assert len(calls) == 2 * 2 + 4 * 4
    assert [s.new for s in summaries] == [0, 2, 4]
    assert all(s.finished for s in summaries)
    with ResultsStore(experiment.out) as store:
        record = store.records(names[2])[0]
        # min over steps: 0.5 (unchecked steps, right sums) or 0 (a wrong sum).
        assert sorted(c.score for c in record.result.candidates) == [0.0, 0.0, 0.5, 0.5]
        assert record.result.answer == "5"
