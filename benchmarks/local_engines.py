"""Local engines on this machine: load time, tokens/s, and speculative decoding on and off.

    python benchmarks/local_engines.py                      # every engine that is installed
    python benchmarks/local_engines.py --engines llama.cpp --repeats 3
    python benchmarks/local_engines.py --engines llama.cpp-batching --repeats 1 \
        --batch-tokens 32 --search-questions 2 --search-rounds 3 --search-threads 1
    python benchmarks/local_engines.py --engines llama.cpp-batching vllm-batching  # side by side

Each engine is one function returning rows; ``main`` runs the engines whose package is
installed and prints one table. Numbers are medians over ``--repeats`` runs. The machine may be
shared: a neighbour holding a core halves a one-thread engine's speed, so compare rows of one
run, not numbers across runs.

llama.cpp rows (``ttc.adapters.LlamaCpp`` on the embedded Gemma 3 270M, one thread):
- load: building the ``Llama`` object from the cached GGUF;
- prefill: prompt tokens/s of a cold few-shot prompt (about 320 tokens);
- single stream: generated tokens/s of one greedy sample, prompt already cached;
- n=8: generated tokens/s of eight sampled continuations of one prompt (llama-cpp-python has no
  batched sampling, so the adapter runs them one after another on the cached prompt);
- prompt lookup: generated tokens/s without and with ``prompt_lookup=10`` speculative drafting,
  greedy, on a copy-heavy prompt and on a GSM8K few-shot prompt, and whether the text matched.

llama.cpp-batching rows (``bench_llamacpp_batching``): tokens/s of n = 1, 4, 16, 64 samples
on the serial path and on the batching engine with 1 and 2 threads, and a BeamPRM search
(N = 16, M = 4) on the serial path and batched with the prefix cache off and on.
vllm-batching rows (``bench_vllm_batching``): vLLM CPU on the same prompt and n, as n samples
in one request and as n concurrent requests, and the same search with its prefix-cache hits.

vLLM rows (``ttc.adapters.VLLM``, the async engine in this process, on the Gemma weights
converted once to a Hugging Face folder; bf16, eager mode): engine start, prefill, single
stream, eight concurrent requests (one continuous batch) and n=8 in one request, and greedy
tokens/s without and with n-gram speculative decoding (a second engine). transformers rows
(``ttc.adapters.Transformers``, same folder, bf16): load, prefill, single stream, n=8 through
``num_return_sequences``, and greedy tokens/s without and with prompt lookup (10 tokens).
Scripts that start vLLM need the ``if __name__ == "__main__"`` guard this one has.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ttc import SamplingParams
from ttc.runtime.model import Model


@dataclass
class Row:
    """One measurement."""

    engine: str
    metric: str
    value: float
    unit: str
    note: str = ""


COPY_PROMPT = (
    "Copy the paragraph exactly.\n\n"
    "Paragraph: The committee met on Tuesday to review the budget for the new library. After a "
    "long discussion, the members agreed to fund the children's reading room, the study "
    "carrels on the second floor, and a small cafe near the entrance. The work will start in "
    "March and should be finished before the end of the school year.\n\n"
    "Copy: The committee met on Tuesday to review the budget for the new library."
)
GSM8K_QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day at the "
    "farmers' market?"
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def timed(work: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    """Seconds and tokens of one call of ``work`` (which returns the tokens it produced)."""
    start = time.perf_counter()
    tokens = await work()
    return time.perf_counter() - start, tokens


async def generated_tokens(
    model: Model, prompt: str, params: SamplingParams, n: int = 1
) -> tuple[int, str]:
    completions = await model.generate(prompt, params, n)
    return sum(c.completion_tokens or 0 for c in completions), completions[0].text


# --------------------------------------------------------------------------------------------
# llama.cpp


async def bench_llamacpp(repeats: int, threads: int) -> list[Row]:
    """The embedded default through ``LlamaCpp``: load, prefill, decode, n=8, prompt lookup."""
    from ttc.adapters.gemma import GSM8K_FEW_SHOT, gemma_path
    from ttc.adapters.llamacpp import LlamaCpp

    engine = f"llama.cpp ({threads} thread{'s' if threads > 1 else ''})"
    rows: list[Row] = []
    start = time.perf_counter()
    path = gemma_path()
    rows.append(
        Row(engine, "GGUF path (assemble or stamp check)", time.perf_counter() - start, "s")
    )

    loads = []
    for _ in range(repeats):
        model = LlamaCpp(n_threads=threads)
        start = time.perf_counter()
        model.load()
        loads.append(time.perf_counter() - start)
        model.close()
    rows.append(Row(engine, "load", median(loads), "s"))

    model = LlamaCpp(n_threads=threads, seed=0).load()
    prompt_tokens = model.count_tokens(model.render(GSM8K_QUESTION))
    one = SamplingParams(temperature=0.0, max_tokens=1)
    prefill = []
    for _ in range(repeats):
        model.reset()  # cold cache: the whole prompt is evaluated
        seconds, _ = await timed(lambda: _tokens(model, GSM8K_QUESTION, one))
        prefill.append(prompt_tokens / seconds)
    rows.append(Row(engine, f"prefill ({prompt_tokens}-token prompt)", median(prefill), "tok/s"))

    # Decode speed: a raw model that is not stopped by the template's stop strings.
    raw = LlamaCpp(path, n_threads=threads, seed=0).load()
    story = "Once upon a time, in a small village by the sea, there lived"
    greedy = SamplingParams(temperature=0.0, max_tokens=128)
    await _tokens(raw, story, SamplingParams(temperature=0.0, max_tokens=1))  # cache the prompt
    single = []
    for _ in range(repeats):
        seconds, tokens = await timed(lambda: _tokens(raw, story, greedy))
        single.append(tokens / seconds)
    rows.append(Row(engine, "single stream, greedy, 128 tokens", median(single), "tok/s"))

    sampled = SamplingParams(temperature=0.8, max_tokens=64)
    batched = []
    for _ in range(repeats):
        seconds, tokens = await timed(lambda: _tokens(raw, story, sampled, n=8))
        batched.append(tokens / seconds)
    rows.append(
        Row(engine, "n=8 samples, 64 tokens each", median(batched), "tok/s", "run one by one")
    )
    raw.close()
    model.close()

    cases = [
        ("copy-heavy prompt", COPY_PROMPT, None, 96),
        ("GSM8K few-shot prompt", GSM8K_QUESTION, GSM8K_FEW_SHOT, 128),
    ]
    for label, prompt, template, max_tokens in cases:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        results: dict[str, tuple[float, str]] = {}
        for name, lookup in (("off", None), ("on", 10)):
            spec = LlamaCpp(path, n_threads=threads, template=template, prompt_lookup=lookup)
            spec.load()
            await _tokens(spec, prompt, SamplingParams(temperature=0.0, max_tokens=1))
            speeds = []
            text = ""
            for _ in range(repeats):
                start = time.perf_counter()
                tokens, text = await generated_tokens(spec, prompt, params)
                speeds.append(tokens / (time.perf_counter() - start))
            results[name] = (median(speeds), text)
            spec.close()
        same = "same text" if results["on"][1] == results["off"][1] else "text differs"
        off, on = results["off"][0], results["on"][0]
        rows.append(Row(engine, f"{label}, prompt lookup off", off, "tok/s"))
        rows.append(
            Row(engine, f"{label}, prompt lookup on (10)", on, "tok/s", f"{on / off:.2f}x, {same}")
        )
    return rows


async def _tokens(model: Model, prompt: str, params: SamplingParams, n: int = 1) -> int:
    return (await generated_tokens(model, prompt, params, n))[0]


#: Options of the batching benchmark (set by ``main``).
BATCH_THREADS: tuple[int, ...] = (1, 2)
BATCH_NS: tuple[int, ...] = (1, 4, 16, 64)
SERIAL_CAP = 4  # the serial path's speed does not depend on n: measure at most this many
BATCH_TOKENS = 64
BATCH_SEQS = 16  # the engine's n_seq_max (its default): more samples wait for a free slot
SEARCH_QUESTIONS = 3
SEARCH_ROUNDS = 4
SEARCH_THREADS = 1
SEARCH_SERIAL = True  # also run the search on the serial path (slow)
DATA = Path(__file__).resolve().parent / "data" / "gsm8k_dev_50.jsonl"


async def bench_llamacpp_batching(repeats: int, threads: int) -> list[Row]:
    """Batched against serial decoding in ``LlamaCpp``, and prefix reuse in a step search.

    For each thread count in ``BATCH_THREADS``: generated tokens/s of n sampled continuations
    (T = 0.8, 64 tokens, no stop) of the GSM8K few-shot prompt, for n in ``BATCH_NS``, on the
    serial path (``batched=False``: today's one-after-another generation, measured on at most
    ``SERIAL_CAP`` samples since its speed does not depend on n) and on the batching engine
    (prompt cached, as it is after the first call; ``BATCH_SEQS`` sequences at once, more
    wait for a slot). Then the wall time of a BeamPRM search
    (N = 16, M = 4, ArithmeticPRM, the step format of ``benchmarks/search.py``) on the first
    ``SEARCH_QUESTIONS`` GSM8K dev questions, with the engine's prefix cache off and on, and
    the prompt tokens the engine had to decode (the rest came from the cache).
    """
    from ttc.adapters.llamacpp import LlamaCpp

    rows: list[Row] = []
    sampled = SamplingParams(temperature=0.8, max_tokens=BATCH_TOKENS, seed=1)
    for t in BATCH_THREADS:
        engine = f"llama.cpp ({t} thread{'s' if t > 1 else ''})"
        serial = LlamaCpp(n_threads=t, batched=False, seed=0, raw=True).load()
        batched = LlamaCpp(n_threads=t, n_seq_max=BATCH_SEQS, seed=0, raw=True).load()
        prompt = _batch_prompt()
        for model in (serial, batched):
            await _tokens(model, prompt, SamplingParams(temperature=0.0, max_tokens=1))
        base = float("nan")
        for n in BATCH_NS:
            speeds: dict[str, float] = {}
            for label, model, count in (
                ("serial", serial, min(n, SERIAL_CAP)),
                ("batched", batched, n),
            ):
                runs = []
                for _ in range(repeats):
                    seconds, tokens = await timed(
                        lambda m=model, c=count, p=prompt: _tokens(m, p, sampled, n=c)  # type: ignore[misc]
                    )
                    runs.append(tokens / seconds)
                speeds[label] = median(runs)
            if n == 1:
                base = speeds["serial"]
            note = f"{min(n, SERIAL_CAP)} samples" if n > SERIAL_CAP else ""
            rows.append(
                Row(engine, f"n={n}, serial (batched=False)", speeds["serial"], "tok/s", note)
            )
            ratio = f"{speeds['batched'] / speeds['serial']:.2f}x serial n={n}"
            if base == base:  # n = 1 was measured (not NaN)
                ratio += f", {speeds['batched'] / base:.2f}x serial n=1"
            rows.append(Row(engine, f"n={n}, batched", speeds["batched"], "tok/s", ratio))
            print(rows[-2], rows[-1], sep="\n", flush=True)
        serial.close()
        batched.close()

    problems = _search_problems()
    if not problems:
        return rows
    t = SEARCH_THREADS
    engine = f"llama.cpp ({t} thread{'s' if t > 1 else ''})"
    per_round: dict[str, float] = {}
    configs: list[tuple[str, dict[str, Any]]] = [
        ("serial (batched=False)", {"batched": False}),
        ("batched, prefix cache off", {"prefix_cache": False}),
        ("batched, prefix cache on", {"prefix_cache": True}),
    ]
    for label, options in configs:
        if label.startswith("serial") and not SEARCH_SERIAL:
            continue
        model = LlamaCpp(n_threads=t, raw=True, seed=0, **options).load()
        seconds, rounds, generated = await _run_search(model, problems)
        per_round[label] = seconds / max(rounds, 1)
        note = f"{rounds} rounds, {per_round[label]:.2f} s a round, {generated} tokens generated"
        if model.batch_engine is not None:
            decoded = model.batch_engine.stats["tokens"] - generated
            note += f", {decoded:.0f} prompt tokens decoded"
        if label.endswith("on"):
            off = per_round["batched, prefix cache off"]
            note += f"; a round {off / per_round[label]:.2f}x faster than cache off"
            if "serial (batched=False)" in per_round:
                slow = per_round["serial (batched=False)"]
                note += f", {slow / per_round[label]:.2f}x faster than serial"
        rows.append(
            Row(engine, f"BeamPRM N=16 M=4, {len(problems)} questions, {label}", seconds, "s", note)
        )
        model.close()
        print(rows[-1], flush=True)
    return rows


def _batch_prompt() -> str:
    """The prompt of the batching rows: the GSM8K few-shot template around one question."""
    from ttc.adapters.gemma import GSM8K_FEW_SHOT

    return GSM8K_FEW_SHOT.replace("{question}", GSM8K_QUESTION)


def _search_problems() -> list[dict[str, Any]]:
    """The first ``SEARCH_QUESTIONS`` GSM8K dev problems of the search rows."""
    import json

    lines = DATA.read_text().splitlines()[:SEARCH_QUESTIONS]
    return [json.loads(line) for line in lines if line]


async def _run_search(model: Model, problems: list[dict[str, Any]]) -> tuple[float, int, int]:
    """A BeamPRM search (N = 16, M = 4, ArithmeticPRM, the step format of
    ``benchmarks/search.py``) on each problem: seconds, rounds and tokens generated."""
    from ttc import BeamPRM
    from ttc.adapters.gemma import GSM8K_FEW_SHOT, TEMPLATE_STOPS
    from ttc.scoring import ArithmeticPRM
    from ttc.strategies import StepFormat

    fmt = StepFormat(delimiter=". ", template=GSM8K_FEW_SHOT, end_markers=TEMPLATE_STOPS)
    step = SamplingParams(temperature=0.8, max_tokens=48)
    seconds = 0.0
    rounds = 0
    generated = 0
    for problem in problems:
        search = BeamPRM(
            model,
            ArithmeticPRM(),
            n=16,
            width=4,
            max_rounds=SEARCH_ROUNDS,
            params=step,
            step_format=fmt,
        )
        start = time.perf_counter()
        result = await search.run(problem["question"].strip())
        seconds += time.perf_counter() - start
        rounds += len(result.tree or [])
        generated += result.usage.completion_tokens
    return seconds, rounds, generated


# --------------------------------------------------------------------------------------------
# vLLM (in-process async engine) and transformers


STORY = "Once upon a time, in a small village by the sea, there lived"


def _spec_cases() -> list[tuple[str, str, tuple[str, ...], int]]:
    """The two speculative-decoding prompts, as raw text for engines without a template."""
    from ttc.adapters.gemma import GSM8K_FEW_SHOT, TEMPLATE_STOPS

    gsm8k = GSM8K_FEW_SHOT.replace("{question}", GSM8K_QUESTION)
    return [
        ("copy-heavy prompt", COPY_PROMPT, (), 96),
        ("GSM8K few-shot prompt", gsm8k, TEMPLATE_STOPS, 128),
    ]


async def _speeds(
    model: Model, prompt: str, params: SamplingParams, repeats: int
) -> tuple[float, str]:
    """Median generated tokens/s of ``repeats`` greedy calls, and the text of the last."""
    speeds = []
    text = ""
    for _ in range(repeats):
        start = time.perf_counter()
        tokens, text = await generated_tokens(model, prompt, params)
        speeds.append(tokens / (time.perf_counter() - start))
    return median(speeds), text


async def bench_vllm(repeats: int, threads: int) -> list[Row]:
    """``ttc.adapters.VLLM`` on the converted Gemma (bf16, eager mode, 1 GiB KV cache).

    vLLM's CPU backend binds its own OpenMP threads (``VLLM_CPU_OMP_THREADS_BIND``; on two
    cores it reserves one for the frontend and computes on the other), so ``threads`` does not
    apply. Rows: load (engine start in this process), prefill, single stream, eight concurrent
    requests (continuous batching), and greedy tokens/s without and with n-gram speculation.
    """
    from ttc.adapters.hf_convert import gemma_hf_dir
    from ttc.adapters.vllm_engine import VLLM, Speculative

    engine = "vLLM (CPU, eager)"
    rows: list[Row] = []
    start = time.perf_counter()
    folder = gemma_hf_dir()
    rows.append(
        Row(engine, "HF folder (convert once, then cached)", time.perf_counter() - start, "s")
    )

    def build(speculative: Speculative | None = None) -> VLLM:
        return VLLM(
            folder,
            dtype="bfloat16",
            max_model_len=2048,
            enforce_eager=True,
            kv_cache_gib=1,
            speculative=speculative,
        )

    model = build().load()
    rows.append(Row(engine, "load (engine start)", model.load_seconds or float("nan"), "s"))
    cases = _spec_cases()
    gsm8k = cases[1][1]
    one = SamplingParams(temperature=0.0, max_tokens=1)
    prompt_tokens = len(model.tokenizer(gsm8k)["input_ids"])
    prefill = []
    for i in range(repeats):
        # a fresh first line each time: the prefix cache must not serve the prompt
        fresh = f"Run {i}.\n{gsm8k}"
        seconds, _ = await timed(lambda: _tokens(model, fresh, one))  # noqa: B023
        prefill.append(prompt_tokens / seconds)
    rows.append(Row(engine, f"prefill ({prompt_tokens}-token prompt)", median(prefill), "tok/s"))

    greedy = SamplingParams(temperature=0.0, max_tokens=128)
    await _tokens(model, STORY, one)
    single, _ = await _speeds(model, STORY, greedy, repeats)
    rows.append(Row(engine, "single stream, greedy, 128 tokens", single, "tok/s"))

    sampled = SamplingParams(temperature=0.8, max_tokens=64)
    batched = []
    for _ in range(repeats):
        counts: list[int] = []

        async def one_request(counts: list[int] = counts) -> None:
            counts.append(await _tokens(model, STORY, sampled))

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one_request)
        batched.append(sum(counts) / (time.perf_counter() - start))
    rows.append(
        Row(engine, "8 concurrent requests, 64 tokens each", median(batched), "tok/s", "one batch")
    )
    n8 = []
    for _ in range(repeats):
        seconds, tokens = await timed(lambda: _tokens(model, STORY, sampled, n=8))
        n8.append(tokens / seconds)
    rows.append(Row(engine, "n=8 samples in one request, 64 tokens each", median(n8), "tok/s"))

    plain: dict[str, tuple[float, str]] = {}
    for label, prompt, stops, max_tokens in cases:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=stops)
        await _tokens(model, prompt, one)  # the prompt is cached for both engines alike
        plain[label] = await _speeds(model, prompt, params, repeats)
    await model.aclose()

    spec = build(Speculative.ngram(4, prompt_lookup_min=2, prompt_lookup_max=4)).load()
    rows.append(Row(engine, "load with n-gram speculation", spec.load_seconds or 0.0, "s"))
    for label, prompt, stops, max_tokens in cases:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=stops)
        await _tokens(spec, prompt, one)
        on, text = await _speeds(spec, prompt, params, repeats)
        off, plain_text = plain[label]
        same = "same text" if text == plain_text else "text differs"
        rows.append(Row(engine, f"{label}, n-gram speculation off", off, "tok/s"))
        rows.append(
            Row(
                engine,
                f"{label}, n-gram speculation on (k=4)",
                on,
                "tok/s",
                f"{on / off:.2f}x, {same}",
            )
        )
    await spec.aclose()
    return rows


async def bench_vllm_batching(repeats: int, threads: int) -> list[Row]:
    """vLLM CPU on the prompts of the llama.cpp-batching rows, for the comparison the issue asks.

    Generated tokens/s of n sampled continuations (T = 0.8, ``BATCH_TOKENS`` tokens, no stop)
    of the same GSM8K few-shot prompt, for n in ``BATCH_NS``: n samples in one request, and
    n concurrent requests of one sample (continuous batching). The prompt is in the prefix
    cache first, as on llama.cpp. Then the same BeamPRM search as the llama.cpp rows, with
    the share of prompt tokens vLLM's prefix cache served (``VLLM.prefix_stats``). vLLM binds
    its own OpenMP threads, so ``threads`` does not apply; pin the process with ``taskset``.
    """
    from ttc.adapters.hf_convert import gemma_hf_dir
    from ttc.adapters.vllm_engine import VLLM

    engine = "vLLM (CPU, eager)"
    model = VLLM(
        gemma_hf_dir(), dtype="bfloat16", max_model_len=2048, enforce_eager=True, kv_cache_gib=1
    ).load()
    rows = [Row(engine, "load (engine start)", model.load_seconds or float("nan"), "s")]
    print(rows[-1], flush=True)
    prompt = _batch_prompt()
    sampled = SamplingParams(temperature=0.8, max_tokens=BATCH_TOKENS)
    await _tokens(model, prompt, SamplingParams(temperature=0.0, max_tokens=1))
    for n in BATCH_NS:
        one_request = []
        concurrent = []
        for _ in range(repeats):
            seconds, tokens = await timed(lambda n=n: _tokens(model, prompt, sampled, n=n))  # type: ignore[misc]
            one_request.append(tokens / seconds)
            if n == 1:
                continue
            counts: list[int] = []

            async def single(counts: list[int] = counts) -> None:
                counts.append(await _tokens(model, prompt, sampled))

            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(single)
            concurrent.append(sum(counts) / (time.perf_counter() - start))
        rows.append(Row(engine, f"n={n}, one request", median(one_request), "tok/s"))
        print(rows[-1], flush=True)
        if concurrent:
            rows.append(Row(engine, f"n={n}, {n} concurrent requests", median(concurrent), "tok/s"))
            print(rows[-1], flush=True)

    problems = _search_problems()
    if problems:
        before = dict(model.prefix_stats)
        seconds, rounds, generated = await _run_search(model, problems)
        stats = {key: model.prefix_stats[key] - before[key] for key in before}
        share = stats["cached_tokens"] / max(stats["prompt_tokens"], 1)
        note = (
            f"{rounds} rounds, {seconds / max(rounds, 1):.2f} s a round, {generated} tokens "
            f"generated; prefix cache served {stats['cached_tokens']} of "
            f"{stats['prompt_tokens']} prompt tokens ({share:.0%}) in {stats['requests']} requests"
        )
        label = f"BeamPRM N=16 M=4, {len(problems)} questions, prefix caching on"
        rows.append(Row(engine, label, seconds, "s", note))
        print(rows[-1], flush=True)
    await model.aclose()
    return rows


async def bench_transformers(repeats: int, threads: int) -> list[Row]:
    """``ttc.adapters.Transformers`` on the converted Gemma (bf16, ``threads`` torch threads).

    Rows: load from the converted folder, prefill, single stream, n=8 in one ``generate`` call
    (``num_return_sequences``), and greedy tokens/s without and with prompt lookup (10 tokens).
    """
    from ttc.adapters.hf import Transformers
    from ttc.adapters.hf_convert import gemma_hf_dir

    engine = f"transformers ({threads} thread{'s' if threads > 1 else ''}, bf16)"
    rows: list[Row] = []
    folder = gemma_hf_dir()
    loads = []
    for _ in range(repeats):
        probe = Transformers(folder, dtype="bfloat16", num_threads=threads)
        start = time.perf_counter()
        probe.load()
        loads.append(time.perf_counter() - start)
        probe.close()
    rows.append(Row(engine, "load", median(loads), "s"))

    model = Transformers(folder, dtype="bfloat16", num_threads=threads).load()
    cases = _spec_cases()
    gsm8k = cases[1][1]
    one = SamplingParams(temperature=0.0, max_tokens=1)
    prompt_tokens = len(model.tokenizer(gsm8k)["input_ids"])
    prefill = []
    for _ in range(repeats):
        seconds, _ = await timed(lambda: _tokens(model, gsm8k, one))
        prefill.append(prompt_tokens / seconds)
    rows.append(Row(engine, f"prefill ({prompt_tokens}-token prompt)", median(prefill), "tok/s"))

    greedy = SamplingParams(temperature=0.0, max_tokens=128)
    single, _ = await _speeds(model, STORY, greedy, repeats)
    rows.append(Row(engine, "single stream, greedy, 128 tokens", single, "tok/s"))

    sampled = SamplingParams(temperature=0.8, max_tokens=64)
    n8 = []
    for _ in range(repeats):
        seconds, tokens = await timed(lambda: _tokens(model, STORY, sampled, n=8))
        n8.append(tokens / seconds)
    rows.append(
        Row(engine, "n=8 samples, 64 tokens each", median(n8), "tok/s", "num_return_sequences")
    )

    lookup = Transformers(
        folder, dtype="bfloat16", num_threads=threads, prompt_lookup_num_tokens=10
    )
    lookup.load()
    for label, prompt, stops, max_tokens in cases:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=stops)
        off, plain_text = await _speeds(model, prompt, params, repeats)
        on, text = await _speeds(lookup, prompt, params, repeats)
        same = "same text" if text == plain_text else "text differs"
        rows.append(Row(engine, f"{label}, prompt lookup off", off, "tok/s"))
        rows.append(
            Row(engine, f"{label}, prompt lookup on (10)", on, "tok/s", f"{on / off:.2f}x, {same}")
        )
    model.close()
    lookup.close()
    return rows


# --------------------------------------------------------------------------------------------

#: engine name -> (benchmark, the package it needs)
ENGINES: dict[str, tuple[Callable[[int, int], Awaitable[list[Row]]], str]] = {
    "llama.cpp": (bench_llamacpp, "llama_cpp"),
    "llama.cpp-batching": (bench_llamacpp_batching, "llama_cpp"),
    "vllm": (bench_vllm, "vllm"),
    "vllm-batching": (bench_vllm_batching, "vllm"),
    "transformers": (bench_transformers, "transformers"),
}


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="local engines on this machine", title_justify="left")
    for column in ("engine", "metric", "value", "unit", "note"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in rows:
        value = f"{row.value:.2f}" if row.unit == "s" else f"{row.value:.1f}"
        table.add_row(row.engine, row.metric, value, row.unit, row.note)
    Console(width=140).print(table)


async def run(engines: list[str], repeats: int, threads: int) -> list[Row]:
    rows: list[Row] = []
    for name in engines:
        bench, package = ENGINES[name]
        if importlib.util.find_spec(package) is None:
            print(f"skipping {name}: {package} is not installed")
            continue
        rows.extend(await bench(repeats, threads))
    return rows


def main(argv: list[str] | None = None) -> None:
    global BATCH_THREADS, BATCH_NS, SEARCH_QUESTIONS, SEARCH_THREADS, SERIAL_CAP
    global BATCH_TOKENS, SEARCH_ROUNDS, SEARCH_SERIAL, BATCH_SEQS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per engine")
    parser.add_argument(
        "--batch-threads",
        type=int,
        nargs="*",
        default=list(BATCH_THREADS),
        help="thread counts of the llama.cpp-batching rows",
    )
    parser.add_argument("--batch-n", type=int, nargs="*", default=list(BATCH_NS))
    parser.add_argument("--serial-cap", type=int, default=SERIAL_CAP)
    parser.add_argument("--batch-tokens", type=int, default=BATCH_TOKENS)
    parser.add_argument("--batch-seqs", type=int, default=BATCH_SEQS, help="n_seq_max")
    parser.add_argument("--search-rounds", type=int, default=SEARCH_ROUNDS)
    parser.add_argument("--search-questions", type=int, default=SEARCH_QUESTIONS)
    parser.add_argument("--search-threads", type=int, default=SEARCH_THREADS)
    parser.add_argument(
        "--no-search-serial", action="store_true", help="skip the search on the serial path"
    )
    args = parser.parse_args(argv)
    BATCH_THREADS, BATCH_NS = tuple(args.batch_threads), tuple(args.batch_n)
    SEARCH_QUESTIONS, SEARCH_THREADS = args.search_questions, args.search_threads
    SEARCH_SERIAL = not args.no_search_serial
    BATCH_SEQS = args.batch_seqs
    SERIAL_CAP, BATCH_TOKENS, SEARCH_ROUNDS = args.serial_cap, args.batch_tokens, args.search_rounds
    print_table(anyio.run(run, args.engines, args.repeats, args.threads))


if __name__ == "__main__":
    main()
