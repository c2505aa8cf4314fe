"""Evaluation on a local Ray instance (2 workers): the same stored results as a local run,
and one ledger actor that holds the budget across workers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ttc import Budget
from ttc.adapters import FunctionModel
from ttc.eval.datasets import load_dataset
from ttc.eval.runner import evaluate
from ttc.eval.solver import Solver, named_strategy
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.types import GenerateRequest

pytestmark = [pytest.mark.ray, pytest.mark.anyio]

ray = pytest.importorskip("ray")

REFS = {e.question: e.reference for e in load_dataset("gsm8k-sample")}


def reply(request: GenerateRequest, i: int) -> str:
    """Deterministic per prompt and sample position, whichever process runs it."""
    assert isinstance(request.prompt, str)
    seed = request.params.seed or 0
    right = (len(request.prompt) + seed) % 3 == 0
    return f"Step one, step two. The answer is {REFS[request.prompt] if right else '17'}."


def build_model() -> FunctionModel:
    return FunctionModel(reply, native_n=False)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    # Workers unpickle this module's functions by value: they cannot import the test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def comparable(record: QuestionRecord) -> dict[str, Any]:
    """A stored record without what differs between any two runs (timings)."""
    data = record.model_dump(mode="json")
    result = data["result"]
    result["elapsed_s"] = 0
    result["usage"]["seconds"] = 0
    for usage in result["usage"].get("by_model", {}).values():
        usage["seconds"] = 0
    for event in result["trace"]:
        event["seconds"] = 0
    return data  # type: ignore[no-any-return]


async def test_ray_run_stores_the_same_results_as_a_local_run(
    ray_instance: None, tmp_path: Path
) -> None:
    data = load_dataset("gsm8k-sample", limit=8)
    solver = Solver(build_model, named_strategy("repeated-sample", 3), {"n": 3})
    local = await evaluate(data, solver, tmp_path / "local", run="r", concurrency=2)
    remote = await evaluate(data, solver, tmp_path / "ray", run="r", ray=True, workers=2)
    assert local.stored == remote.stored == 8 and remote.new == 8
    assert remote.usage.requests == local.usage.requests == 24
    with ResultsStore(tmp_path / "local") as a, ResultsStore(tmp_path / "ray") as b:
        assert [comparable(r) for r in a.records("r")] == [comparable(r) for r in b.records("r")]
        assert a.run("r").config == b.run("r").config
    # Resume on Ray skips what is stored, as a local run does.
    again = await evaluate(data, solver, tmp_path / "ray", run="r", ray=True, workers=2)
    assert again.new == 0 and again.skipped == 8

    # One ledger actor holds the budget for both workers: 7 requests pay for two questions
    # of 3 samples, and the third question's refusal ends the run with nothing stored short.
    budget = Budget(requests=7)
    capped = await evaluate(
        data, solver, tmp_path / "capped", run="r", ray=True, workers=2, budget=budget
    )
    assert capped.stopped_by == "budget" and capped.usage.requests <= 7
    assert capped.stored <= 2 and capped.incomplete >= 1
    with ResultsStore(tmp_path / "capped") as store:
        assert all(len(r.result.candidates) == 3 for r in store.records("r"))
        assert store.usage("r").requests <= 7
