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
    # adaptive-allocation answers many questions together: it has no per-question form.
    assert set(STRATEGIES) == {*expected, "adaptive-allocation"}
    with pytest.raises(ConfigError, match="does not run on one prompt"):
        build_strategy(StrategySpec.of("adaptive-allocation"), model, BuildContext())
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
            assert built.width == 2


def test_parameters_from_text_are_typed_and_checked() -> None:
    spec = StrategySpec.of("lookahead", n="8", params={"width": "4", "k": "2"})
    assert spec.n == 8 and spec.param("k") == 2 and spec.param("max_rounds") == 40
    assert spec.config()["prm"] == "arithmetic"
    with pytest.raises(ConfigError, match="unknown parameter 'beam' for strategy 'dvts'"):
        StrategySpec.of("dvts", params={"beam": 4})
    assert StrategySpec.of("dvts", n=2).param("width") == 2  # the default 4 does not divide 2
    assert StrategySpec.of("dvts", n=12).param("width") == 4
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
        assert sorted(c.score or 0.0 for c in record.result.candidates) == [0.0, 0.0, 0.5, 0.5]
        assert record.result.answer == "5"


def test_prm_scorer_scores_each_sample_by_its_steps() -> None:
    from ttc.scoring.prm import ArithmeticPRM, PRMScorer
    from ttc.types import Candidate

    scorer = PRMScorer(ArithmeticPRM(), delimiter="\n", aggregation="min")
    assert scorer.steps("a\nb\n\nc") == ["a\n", "b\n", "c"]
    texts = ["2 + 3 = 5.\n5 * 2 = 10.\nThe answer is 10.", "2 + 3 = 6.\nThe answer is 6.", ""]
    scores = anyio.run(scorer.score, "q", [Candidate(text=t) for t in texts])
    assert scores == [0.5, 0.0, 0.0]  # neutral answer line; a wrong sum; nothing to score
    with pytest.raises(ConfigError, match="aggregation"):
        PRMScorer(ArithmeticPRM(), aggregation="max")


def test_ttc_eval_runs_a_search_with_its_parameters_and_checks_config_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ttc.cli import app

    prompts: list[str] = []

    def resolve(name: str, **kwargs: object) -> FunctionModel:
        def reply(request: GenerateRequest, i: int) -> str:
            assert isinstance(request.prompt, str)
            prompts.append(request.prompt)
            return "Then 2 + 3 = 5 apples." if request.params.stop == ("\n",) else "x"

        return FunctionModel(reply, model="fake", native_n=False)

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)
    runner = CliRunner()
    args = ["eval", "graded-dev", "-s", "beam-prm", "-n", "2", "--param", "width=2"]
    args += ["--param", "max_rounds=2", "--level", "1", "--per-level", "1", "-o", str(tmp_path)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    # The graded suite's few-shot template, then the question; steps stop at a line's end.
    assert prompts[0].startswith("Question: ") and prompts[0].endswith("Answer:")
    with ResultsStore(tmp_path) as store:
        (run,) = store.runs()
    assert run.config["strategy"] == "beam-prm" and run.config["width"] == 2
    assert run.config["max_rounds"] == 2 and run.config["prm"] == "arithmetic"
    bad = runner.invoke(app, [*args[:-2], "--param", "beams=3", "-o", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown parameter 'beams'" in bad.output
    config = _write(tmp_path, GRID.replace('name = "best-of-n"', 'name = "best-of-m"'))
    bad = runner.invoke(app, ["eval", "--config", str(config)])
    assert bad.exit_code == 2 and "unknown strategy 'best-of-m'" in " ".join(bad.output.split())
    both = runner.invoke(app, ["eval", "graded-dev", "--config", str(config)])
    assert both.exit_code == 2 and "drop the dataset argument" in " ".join(both.output.split())


def test_ttc_run_offers_every_strategy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from ttc.cli import app

    def resolve(name: str, **kwargs: object) -> FunctionModel:
        return FunctionModel(lambda request, i: "2 + 3 = 5. The answer is 5.", model="fake")

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)
    policy = tmp_path / "policy.json"
    policy.write_text(
        '{"bins": [{"name": "all", "low": 0, "high": 1, "action": "vote", "params": {"n": 3}}]}',
        encoding="utf-8",
    )
    for strategy in STRATEGIES:
        if STRATEGIES[strategy].shared_budget:  # refused (tests/test_eval_allocation.py)
            continue
        args = ["run", "q", "-s", strategy, "-n", "2", "--verify", "5", "--json"]
        if STRATEGIES[strategy].search:
            args += ["--param", "width=2", "--prm", "arithmetic"]
        if strategy == "compute-optimal":
            args += ["--param", f"policy={policy}"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (strategy, result.output)
        data = json.loads(result.stdout)
        assert data["strategy"] == strategy and data["answer"] == "5" and data["correct"]


@pytest.mark.llamacpp
def test_a_search_on_the_embedded_model_continues_the_graded_template(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from ttc.cli import app

    args = ["eval", "graded-dev", "-s", "beam-prm", "-n", "2", "--param", "width=2"]
    args += ["--param", "max_rounds=3", "--level", "1", "--per-level", "1", "--max-tokens", "30"]
    result = CliRunner().invoke(app, [*args, "--seed", "0", "-o", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    with ResultsStore(tmp_path) as store:
        (record,) = store.records(store.runs()[0].name)
    beams = record.result.candidates
    assert beams and all(c.steps for c in beams)
    # One line a step, the first restating the question's start as the few-shot shows.
    assert all(step.endswith("\n") for c in beams for step in (c.steps or [])[:-1])
    assert record.result.usage.completion_tokens > 0


def test_the_embedded_template_becomes_one_step_a_line_on_gsm8k_only() -> None:
    from ttc.adapters.gemma import GSM8K_FEW_SHOT, GSM8K_STEP_FEW_SHOT
    from ttc.eval.datasets import load_dataset
    from ttc.eval.experiment import sampling, untemplate

    def embedded() -> FunctionModel:
        model = FunctionModel(lambda request, i: "x", model="fake")
        model.template = GSM8K_FEW_SHOT  # type: ignore[attr-defined]  # as LlamaCpp() has
        return model

    llm = embedded()
    gsm8k, moved = untemplate(load_dataset("gsm8k-sample"), llm)
    assert moved == GSM8K_FEW_SHOT and llm.template is None  # type: ignore[attr-defined]
    assert gsm8k.spec.template == GSM8K_STEP_FEW_SHOT and gsm8k.spec.name == "gsm8k-steps"
    _, fmt = sampling(gsm8k, llm)
    assert fmt.delimiter == "\n" and fmt.end_markers == ("\n\n", "Question:")
    # the paragraph template on request; other datasets keep theirs or get the paragraph one
    kept, _ = untemplate(load_dataset("gsm8k-sample"), embedded(), gsm8k_steps=False)
    assert kept.spec.template == GSM8K_FEW_SHOT and kept.spec.name == "gsm8k"
    assert kept.spec.step_delimiter == "\n\n"
    math, _ = untemplate(load_dataset("math500-sample"), embedded())
    assert math.spec.template == GSM8K_FEW_SHOT and math.spec.step_delimiter == "\n\n"
    graded, _ = untemplate(load_dataset("graded-dev"), embedded())
    assert graded.spec.template == load_dataset("graded-dev").spec.template


def test_ttc_run_searches_the_embedded_model_a_line_a_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from typer.testing import CliRunner

    from ttc.adapters.gemma import GSM8K_FEW_SHOT, GSM8K_STEP_FEW_SHOT
    from ttc.cli import app

    head = GSM8K_STEP_FEW_SHOT.split("{question}")[0]

    def resolve(name: str, **kwargs: object) -> FunctionModel:
        def reply(request: GenerateRequest, i: int) -> str:
            assert isinstance(request.prompt, str) and request.prompt.startswith(head)
            steps = request.prompt.split("Answer:")[-1]
            if "\n" not in request.params.stop or steps.count("\n") >= 1:
                return "The answer is 5."
            return " 2 + 3 = 5 apples.\n"

        model = FunctionModel(reply, model="fake")
        model.template = GSM8K_FEW_SHOT  # type: ignore[attr-defined]  # as LlamaCpp() has
        return model

    monkeypatch.setattr("ttc.adapters.registry.resolve_model", resolve)
    args = ["run", "What is 2 + 3?", "-s", "beam-prm", "-n", "2", "--param", "width=2"]
    result = CliRunner().invoke(app, [*args, "--verify", "5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["answer"] == "5" and data["correct"]
    # a first line, then the answer on the next: two steps searched, not one paragraph
    assert all(c["text"] == " 2 + 3 = 5 apples.\nThe answer is 5." for c in data["candidates"])
