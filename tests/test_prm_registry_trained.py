"""The PRMs ``ttc train-prm`` trains, by name in the strategy registry (``ttc run``/``ttc eval
--prm``, experiment files): ``stepwise`` (a TRL checkpoint, in-process), ``hidden-state`` (the
light head with its embedder) and ``vllm-stepwise`` (the checkpoint served by vLLM). Each is
built from a spec as a user writes it and scores steps as the class built by hand does; bad
options fail when the spec is made, before a model loads, naming the option."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models

from ttc.adapters.function import FunctionModel
from ttc.cli.options import strategy_spec
from ttc.errors import ConfigError
from ttc.eval.experiment import load_experiment
from ttc.labels import LabelledQuestion, LabelledSolution, StepLabel
from ttc.scoring import HiddenStatePRM, StepwisePRM, VLLMStepwisePRM
from ttc.scoring.prm import PRMScorer
from ttc.scoring.prm_trained import (
    PRM_CONFIG,
    LlamaCppEmbedder,
    TransformersEmbedder,
    fit_hidden_state_prm,
)
from ttc.strategies import BeamPRM, BestOfN, Lookahead
from ttc.strategies.registry import BuildContext, StrategySpec, build_prm, build_strategy
from ttc.strategies.steps import StepFormat

pytestmark = [pytest.mark.hf, pytest.mark.anyio]

CORPUS = [
    "Q: pick one\nA: yes\nThe answer is 1.",
    "Q: pick one\nA: no\nThe answer is 2.",
    "Q: choose a path\nA: maybe yes or no",
] * 20
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
Q = "Q: pick one\nA:"
GOOD = [" yes\n", "The answer is 1."]
BAD = [" no\n", "The answer is 2."]
POLICY = FunctionModel(lambda request, i: " yes\nThe answer is 1.")


def flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token-classification checkpoint as ``ttc train-prm --method trl`` leaves one (its
    ``ttc_prm.json`` names the step separator), random weights."""
    folder = tiny_models.build_tiny_llama(
        tmp_path_factory.mktemp("stepwise"), CORPUS, SPECIALS, chat_template=None, classifier=True
    )
    config = {"format": "trl-stepwise", "step_separator": "\n"}
    (folder / PRM_CONFIG).write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_llama(
        tmp_path_factory.mktemp("policy"), CORPUS, SPECIALS, chat_template=None
    )


def head_on(embedder: TransformersEmbedder, folder: Path) -> HiddenStatePRM:
    """A light head trained on a separable signal and saved to ``folder``."""

    def solution(steps: list[str], good: bool) -> LabelledSolution:
        labels = [StepLabel(text=s, hard=good, soft=float(good), rollouts=4) for s in steps]
        return LabelledSolution(text="".join(steps), correct=good, steps=labels)

    questions = [
        LabelledQuestion(
            id=str(i),
            question=Q,
            prompt=Q,
            reference="1",
            solutions=[solution(GOOD, True), solution(BAD, False)],
        )
        for i in range(3)
    ]
    prm = fit_hidden_state_prm(questions, embedder)
    prm.save(folder)
    return prm


@pytest.fixture(scope="module")
def head(policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, HiddenStatePRM]:
    folder = tmp_path_factory.mktemp("head") / "light-prm"
    return folder, head_on(TransformersEmbedder(policy_dir, max_tokens=64), folder)


# --------------------------------------------------------------------------------------------
# stepwise


async def test_stepwise_by_name_scores_as_the_class_built_by_hand(checkpoint: Path) -> None:
    spec = StrategySpec.of(
        "beam-prm", n=4, params={"width": 2}, prm="stepwise", prm_options={"model_dir": checkpoint}
    )
    assert spec.config()["prm"] == "stepwise"
    assert spec.config()["prm.model_dir"] == str(checkpoint)
    built = build_prm(spec.prm or "", dict(spec.prm_options), POLICY)
    assert isinstance(built, StepwisePRM) and built.step_separator == "\n"  # the folder's
    by_hand = StepwisePRM(checkpoint)
    solutions = [GOOD, BAD, GOOD[:1]]
    expected = flat(await by_hand.score_steps(Q, solutions))
    assert flat(await built.score_steps(Q, solutions)) == pytest.approx(expected)
    assert len(set(expected)) > 1  # random weights, yet not one constant score
    strategy = build_strategy(spec, POLICY, BuildContext(step_format=StepFormat(delimiter="\n")))
    assert isinstance(strategy, BeamPRM) and strategy.prm is built  # one PRM a process


def test_stepwise_options_from_the_command_line_are_typed(checkpoint: Path) -> None:
    spec = strategy_spec(
        "best-of-n",
        4,
        "stepwise",
        [
            "scorer=prm",
            f"prm.model_dir={checkpoint}",
            "prm.batch_size=2",
            "prm.dtype=float32",
            r"prm.step_separator=\n\n",  # as a shell passes it: backslash, n
        ],
    )
    options = dict(spec.prm_options)
    assert options["batch_size"] == 2 and options["step_separator"] == "\n\n"
    strategy = build_strategy(spec, POLICY, BuildContext(step_format=StepFormat(delimiter="\n")))
    assert isinstance(strategy, BestOfN) and isinstance(strategy.scorer, PRMScorer)
    prm = strategy.scorer.prm
    assert isinstance(prm, StepwisePRM)
    assert prm.batch_size == 2 and prm.dtype == "float32" and prm.step_separator == "\n\n"


# --------------------------------------------------------------------------------------------
# hidden-state


async def test_hidden_state_by_name_scores_as_the_saved_head(
    head: tuple[Path, HiddenStatePRM],
) -> None:
    folder, _ = head
    spec = StrategySpec.of(
        "lookahead", n=4, params={"width": 2, "k": 1}, prm="hidden-state",
        prm_options={"path": str(folder)},
    )  # fmt: skip
    built = build_prm("hidden-state", dict(spec.prm_options), POLICY)
    assert isinstance(built, HiddenStatePRM)
    assert isinstance(built.embedder, TransformersEmbedder)  # the one it was trained on
    assert built.embedder.max_tokens == 64  # its saved setting
    by_hand = HiddenStatePRM.load(folder)
    expected = flat(await by_hand.score_steps(Q, [GOOD, BAD]))
    assert flat(await built.score_steps(Q, [GOOD, BAD])) == pytest.approx(expected)
    good, bad = await built.score_steps(Q, [GOOD, BAD])
    assert min(good) > 0.9 and max(bad) < 0.1  # the head, not a fresh one
    strategy = build_strategy(spec, POLICY, BuildContext(step_format=StepFormat(delimiter="\n")))
    assert isinstance(strategy, Lookahead) and strategy.prm is built


def test_hidden_state_embedder_options(head: tuple[Path, HiddenStatePRM], policy_dir: Path) -> None:
    folder, _ = head
    options = {"path": str(folder), "max_tokens": "32", "batch_size": "2", "device": "cpu"}
    spec = StrategySpec.of("beam-prm", n=2, prm="hidden-state", prm_options=options)
    built = build_prm("hidden-state", dict(spec.prm_options), POLICY)
    assert isinstance(built, HiddenStatePRM) and isinstance(built.embedder, TransformersEmbedder)
    embedder = built.embedder
    assert (embedder.max_tokens, embedder.batch_size, embedder.device) == (32, 2, "cpu")
    with pytest.raises(ConfigError, match=r"prm\.n_threads: not an option of a transformers"):
        options = {"path": folder, "n_threads": 2}
        StrategySpec.of("beam-prm", prm="hidden-state", prm_options=options)
    # a GGUF (here: the embedded Gemma) named instead of the saved folder: llama.cpp's options
    gguf = {"path": str(folder), "embedder": "embedded", "n_threads": 1, "max_tokens": 48}
    spec = StrategySpec.of("beam-prm", prm="hidden-state", prm_options=gguf)
    built = build_prm("hidden-state", dict(spec.prm_options), POLICY)
    assert isinstance(built, HiddenStatePRM) and isinstance(built.embedder, LlamaCppEmbedder)
    assert built.embedder.model_path is None and built.embedder.max_tokens == 48
    assert built.embedder._llm is None  # nothing loaded until a step is scored


async def test_a_head_whose_embedder_moved_fails_at_once_and_takes_another(
    policy_dir: Path, tmp_path: Path
) -> None:
    moved = shutil.copytree(policy_dir, tmp_path / "policy-copy")
    head_on(TransformersEmbedder(moved, max_tokens=64), tmp_path / "head")
    shutil.rmtree(moved)  # the head's saved embedder is gone
    with pytest.raises(ConfigError, match=r"prm\.path: the head's embedder .*prm\.embedder"):
        StrategySpec.of("beam-prm", prm="hidden-state", prm_options={"path": tmp_path / "head"})
    options = {"path": str(tmp_path / "head"), "embedder": str(policy_dir)}  # the same weights
    spec = StrategySpec.of("beam-prm", prm="hidden-state", prm_options=options)
    built = build_prm("hidden-state", dict(spec.prm_options), POLICY)
    assert isinstance(built, HiddenStatePRM) and isinstance(built.embedder, TransformersEmbedder)
    assert built.embedder.model_dir == policy_dir
    good, bad = await built.score_steps(Q, [GOOD, BAD])
    assert min(good) > 0.9 and max(bad) < 0.1


def test_an_experiment_cell_names_the_hidden_state_prm(
    head: tuple[Path, HiddenStatePRM], tmp_path: Path
) -> None:
    folder, _ = head
    path = tmp_path / "grid.toml"
    path.write_text(
        f"""
datasets = ["graded-dev"]
models = ["embedded"]

[[strategy]]
name = "best-of-n"
n = [4, 8]
scorer = "prm"
selector = "weighted"
aggregation = "min"
prm = "hidden-state"
prm_options = {{ path = {json.dumps(str(folder))}, max_tokens = 64 }}

[[strategy]]
name = "beam-prm"
n = 4
width = 2
prm = "hidden-state"
prm_options = {{ path = {json.dumps(str(folder))} }}
""",
        encoding="utf-8",
    )
    cells = load_experiment(path).cells
    assert [c.strategy.prm for c in cells] == ["hidden-state"] * 3
    config = cells[0].config()
    assert config["prm.path"] == str(folder) and config["prm.max_tokens"] == 64
    assert len({c.run_name() for c in cells}) == 3
    # a bad option fails while the file is read, naming the file, the table and the key
    path.write_text(
        path.read_text(encoding="utf-8").replace("max_tokens = 64", "max_tokens = 'many'"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"grid\.toml: \[\[strategy\]\] #1: prm\.max_tokens"):
        load_experiment(path)


# --------------------------------------------------------------------------------------------
# vllm-stepwise (construction: a served checkpoint is scored in tests/test_train_prm_vllm.py)


def test_vllm_stepwise_builds_a_server_client_with_the_checkpoint_separator(
    checkpoint: Path, tmp_path: Path
) -> None:
    url = "http://127.0.0.1:9/v1"  # nothing is sent until a step is scored
    spec = StrategySpec.of(
        "beam-prm", n=2, prm="vllm-stepwise", prm_options={"model": f"vllm-server/tiny@{url}"}
    )
    built = build_prm("vllm-stepwise", dict(spec.prm_options), POLICY)
    assert isinstance(built, VLLMStepwisePRM)
    assert built.server.model == "tiny" and built.server.base_url == url
    assert built.separator == "\n" and built.label == 1  # TRL's default
    # served under its folder's name (vllm serve ./my-prm): the saved separator
    folder = tmp_path / "my-prm"
    folder.mkdir()
    saved = {"format": "trl-stepwise", "step_separator": " ки"}
    (folder / PRM_CONFIG).write_text(json.dumps(saved), encoding="utf-8")
    options = {"model": f"vllm-server/{folder}@{url}", "label": "0"}
    spec = StrategySpec.of("beam-prm", n=2, prm="vllm-stepwise", prm_options=options)
    built = build_prm("vllm-stepwise", dict(spec.prm_options), POLICY)
    assert isinstance(built, VLLMStepwisePRM) and built.separator == " ки" and built.label == 0
    options = {"model": f"vllm-server/{folder}@{url}", "step_separator": r"\t"}
    spec = StrategySpec.of("beam-prm", n=2, prm="vllm-stepwise", prm_options=options)
    built = build_prm("vllm-stepwise", dict(spec.prm_options), POLICY)
    assert isinstance(built, VLLMStepwisePRM) and built.separator == "\t"  # given: it wins


# --------------------------------------------------------------------------------------------
# bad options


@pytest.mark.parametrize(
    ("prm", "options", "message"),
    [
        ("stepwise", {}, r"PRM 'stepwise' needs prm\.model_dir"),
        ("stepwise", {"model_dir": "/nowhere/prm"}, r"prm\.model_dir: '/nowhere/prm' is not"),
        ("stepwise", {"model_dir": "CHECKPOINT", "batch_size": "two"}, r"prm\.batch_size: exp"),
        ("stepwise", {"model_dir": "CHECKPOINT", "dtype": "float8"}, r"prm\.dtype: must be one"),
        ("stepwise", {"model_dir": "CHECKPOINT", "path": "x"}, r"unknown PRM option 'path'"),
        ("hidden-state", {}, r"PRM 'hidden-state' needs prm\.path"),
        ("hidden-state", {"path": "/nowhere/head"}, r"prm\.path: no trained PRM at /nowhere"),
        ("hidden-state", {"path": "CHECKPOINT"}, r"prm\.path: .*PRM 'stepwise'"),
        ("hidden-state", {"path": "HEAD", "embedder": "/no/m.gguf"}, r"prm\.embedder: no GGUF"),
        ("hidden-state", {"path": "HEAD", "embedder": "/no/dir"}, r"prm\.embedder: '/no/dir'"),
        ("hidden-state", {"path": "HEAD", "max_tokens": 1.5}, r"prm\.max_tokens: expected int"),
        ("vllm-stepwise", {}, r"PRM 'vllm-stepwise' needs prm\.model"),
        ("vllm-stepwise", {"model": "openai/gpt-4o"}, r"prm\.model: .*vllm-server/"),
        ("vllm-stepwise", {"model": "vllm-server/m", "label": "x"}, r"prm\.label: expected int"),
        ("math-shepherd", {"model_dir": "/nowhere/ms"}, r"prm\.model_dir: '/nowhere/ms'"),
        ("arithmetic", {"right": "high"}, r"prm\.right: expected float"),
    ],
)
def test_bad_options_fail_when_the_spec_is_made_naming_the_option(
    prm: str,
    options: dict[str, object],
    message: str,
    checkpoint: Path,
    head: tuple[Path, HiddenStatePRM],
) -> None:
    swap = {"CHECKPOINT": str(checkpoint), "HEAD": str(head[0])}
    options = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(ConfigError, match=message):
        StrategySpec.of("beam-prm", n=2, prm=prm, prm_options=options)


def test_the_command_line_refuses_a_missing_checkpoint_before_loading_a_model(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from ttc.cli import app

    missing = tmp_path / "no-such-prm"
    args = ["eval", "graded-dev", "-s", "beam-prm", "-n", "2", "--prm", "stepwise"]
    result = CliRunner().invoke(app, [*args, "--param", f"prm.model_dir={missing}"])
    assert result.exit_code == 2
    assert "prm.model_dir" in result.output and "no-such-prm" in result.output
    assert not missing.exists()


def test_published_prms_take_typed_options_from_the_command_line(policy_dir: Path) -> None:
    """Before options were typed, ``prm.batch_size=2`` reached the class as the text ``"2"``
    (refused) and ``prm.renormalize=false`` as a true-looking ``"false"``."""
    from ttc.scoring import MathShepherdPRM, StepJudge

    spec = strategy_spec(
        "beam-prm", 2, "math-shepherd",
        [f"prm.model_dir={policy_dir}", "prm.batch_size=2", "prm.num_threads=1"],
    )  # fmt: skip
    shepherd = build_prm("math-shepherd", dict(spec.prm_options), POLICY)
    assert isinstance(shepherd, MathShepherdPRM)
    assert shepherd.batch_size == 2 and shepherd.num_threads == 1
    spec = strategy_spec(
        "beam-prm", 2, "step-judge", ["prm.renormalize=false", "prm.top_logprobs=5"]
    )
    judge = build_prm("step-judge", dict(spec.prm_options), POLICY)
    assert isinstance(judge, StepJudge) and judge.renormalize is False
