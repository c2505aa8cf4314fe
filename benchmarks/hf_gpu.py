"""The transformers path on a CUDA GPU: bf16 against bitsandbytes 8-bit and 4-bit, and the
PRMs' batched scoring, on a random-weight Llama built here (nothing is downloaded).

    python benchmarks/hf_gpu.py                       # ~1.1B parameters, n = 16, 128 tokens
    python benchmarks/hf_gpu.py --hidden 1024 --layers 8 --quick

Random weights make the text noise, so this measures what the library adds on a GPU (loading,
``generate`` with native n, quantized loading) rather than quality. Per setting it prints the
load time, tokens per second for one sample and for n samples in one request, and peak GPU
memory, beside the same bf16 generation through transformers alone. It also checks that
quantized layers really are bitsandbytes layers, and that a batched QwenPRM pass equals
one-by-one passes on the GPU. Needs a CUDA GPU, torch, transformers and bitsandbytes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CORPUS = [
    "Janet has 3 boxes of 5 eggs, so 3 * 5 = 15 eggs. She eats 4, so 15 - 4 = 11 are left.",
    "The answer is 11. Step 1: count. Step 2: subtract. Question: how many are left?",
] * 4


def build_llama(folder: Path, hidden: int, layers: int) -> Path:
    import tiny_models
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_models.build_tokenizer(
        CORPUS, ["<unk>", "<s>", "</s>", "<pad>"], vocab_size=400
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    params = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    print(f"random Llama: hidden {hidden}, {layers} layers, {params / 1e9:.2f} B parameters")
    return folder


def bare(folder: Path, n: int, tokens: int) -> dict[str, Any]:
    """The same generation through transformers alone (bf16), for comparison."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).to("cuda")
    load = time.perf_counter() - start
    ids = tokenizer("Janet has 3 boxes of 5 eggs.", return_tensors="pt").input_ids.to("cuda")
    model.generate(ids, max_new_tokens=8, do_sample=True, pad_token_id=tokenizer.pad_token_id)
    row: dict[str, Any] = {"setting": "bf16, transformers alone", "load_s": load}
    for count in (1, n):
        torch.manual_seed(0)
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(
            ids,
            max_new_tokens=tokens,
            do_sample=True,
            temperature=0.8,
            top_p=1.0,
            top_k=0,
            num_return_sequences=count,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        new = out[:, ids.shape[1] :]
        made = int((new != tokenizer.pad_token_id).sum())
        row[f"tok_s_n{'1' if count == 1 else n}"] = made / seconds
    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model
    torch.cuda.empty_cache()
    return row


async def measure(
    folder: Path, quantization: str | None, n: int, tokens: int, threads: int | None = 1
) -> dict[str, Any]:
    import torch

    from ttc import SamplingParams
    from ttc.adapters import Transformers

    torch.cuda.reset_peak_memory_stats()
    model = Transformers(
        folder,
        dtype="bfloat16",
        quantization=quantization,  # type: ignore[arg-type]
        num_threads=threads,
    )
    start = time.perf_counter()
    await model.start()
    load = time.perf_counter() - start
    loaded = model._loaded
    assert loaded is not None
    layer_types = {type(m).__name__ for m in loaded.model.modules()}
    if quantization == "8bit":
        assert "Linear8bitLt" in layer_types, layer_types
    if quantization == "4bit":
        assert "Linear4bit" in layer_types, layer_types
    params = SamplingParams(temperature=0.8, max_tokens=tokens, seed=0)
    await model.generate("Janet has 3 boxes", params.model_copy(update={"max_tokens": 8}))
    label = quantization or "bf16"
    threads_label = "" if threads == 1 else f", {threads or 'all torch'} threads"
    row: dict[str, Any] = {"setting": label + threads_label}
    row["load_s"] = load
    for label, count in (("1", 1), (f"{n}", n)):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = await model.generate("Janet has 3 boxes of 5 eggs.", params, n=count)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        made = sum(c.completion_tokens or 0 for c in out)
        row[f"tok_s_n{label}"] = made / seconds
    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    await model.aclose()
    model.close()
    del model
    torch.cuda.empty_cache()
    return row


async def prm_check(tmp: Path) -> str:
    import tiny_models

    from ttc.scoring import QwenPRM

    folder = tiny_models.build_tiny_qwen_prm(tmp / "qwen-prm", CORPUS)
    steps = [
        ["3 * 5 = 15 eggs.\n\n", "15 - 4 = 11.\n\n", "The answer is 11."],
        ["3 * 5 = 16 eggs.\n\n"],
        ["She eats 4.\n\n", "The answer is 12."],
    ]
    batched = QwenPRM(folder, dtype="float32", device="cuda", batch_size=8)
    single = QwenPRM(folder, dtype="float32", device="cuda", batch_size=1)
    a = await batched.score_steps("How many eggs are left?", steps)
    b = await single.score_steps("How many eggs are left?", steps)
    worst = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    assert worst < 1e-4, worst
    loaded = batched._loaded
    assert loaded is not None and loaded.device.type == "cuda"
    return f"QwenPRM on {loaded.device}: batched == one by one (max difference {worst:.1e})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="bf16 and 4-bit only")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_llama(Path(tmp) / "llama", args.hidden, args.layers)
        settings = [None, "4bit"] if args.quick else [None, "8bit", "4bit"]
        rows = [bare(folder, args.n, args.max_tokens)]
        rows += [asyncio.run(measure(folder, q, args.n, args.max_tokens)) for q in settings]
        # the adapter's default is one torch thread (right for CPUs shared by engines)
        rows.append(asyncio.run(measure(folder, None, args.n, args.max_tokens, threads=None)))
        print(asyncio.run(prm_check(Path(tmp))))
    print(f"\n| setting | load s | tok/s, n=1 | tok/s, n={args.n} | peak GPU GiB |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['load_s']:.1f} | {r['tok_s_n1']:.0f} | "
            f"{r[f'tok_s_n{args.n}']:.0f} | {r['peak_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()
