"""What one batched decode step of the embedded model costs, under different llama.cpp settings.

    taskset -c 1 python benchmarks/llamacpp_decode_cost.py --repeats 2
    PYTHONPATH=/path/to/a/native/build taskset -c 1 python benchmarks/llamacpp_decode_cost.py

The GSM8K few-shot prompt is read once into sequence 0 and copied to n sequences, then each
step decodes one token of every sequence (what ``BatchEngine`` does at n = 16). Times are the
process's CPU time, not wall time: on a machine shared with other jobs the wall time of a
one-thread decode swings 2-6x, its CPU time much less. Rows (see docs/performance.md):
one stream; 16 sequences on the engine's settings (unified KV cache of 8,192 cells); a smaller
cache; one KV stream per sequence (``kv_unified=False``, as llama.cpp's server); flash
attention; logits of one row only (the output layer's share); 16 and 32 finished sequences'
caches kept beside the live ones (the prefix cache at n > ``n_seq_max``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from local_engines import GSM8K_QUESTION


@dataclass
class Setting:
    label: str
    n: int = 16
    unified: bool = True
    kv: int = 8192
    ids: int = 64
    flash: int = 0
    kept: int = 0
    all_logits: bool = True


SETTINGS = [
    Setting("one stream", n=1),
    Setting("16 sequences, unified KV cache of 8,192 cells (the engine)"),
    Setting("16 sequences, unified KV cache of 2,048 cells", kv=2048),
    Setting(
        "16 sequences, one KV stream each (kv_unified=False)", unified=False, kv=16 * 1024, ids=16
    ),
    Setting("16 sequences, flash attention", flash=1),
    Setting("16 sequences, logits of one row only", all_logits=False),
    Setting("16 sequences + 16 kept caches of 64 tokens", kept=16),
    Setting("16 sequences + 32 kept caches of 64 tokens", kept=32),
]


def measure(llm: Any, prompt: list[int], s: Setting, steps: int) -> tuple[float, float]:
    """Prefill tokens/s and CPU milliseconds a step, on a fresh context for ``s``."""
    import llama_cpp as lib

    params = lib.llama_context_params.from_buffer_copy(llm.context_params)
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = s.kv, 512, 512, s.ids
    params.n_threads = params.n_threads_batch = 1
    params.kv_unified, params.swa_full, params.no_perf = s.unified, True, True
    params.flash_attn_type = s.flash
    ctx = lib.llama_init_from_model(llm.model, params)
    memory = lib.llama_get_memory(ctx)
    batch = lib.llama_batch_init(512, 0, 1)

    def decode(rows: list[tuple[int, int, int, bool]]) -> None:
        for i, (token, pos, seq, logits) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, int(logits)
        batch.n_tokens = len(rows)
        if lib.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    try:
        start = time.process_time()
        decode([(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        prefill = len(prompt) / (time.process_time() - start)
        for seq in range(1, s.n + s.kept):
            # Across KV streams llama.cpp copies whole sequences only (-1, -1).
            lib.llama_memory_seq_cp(memory, 0, seq, *((0, len(prompt)) if s.unified else (-1, -1)))
        for seq in range(s.n, s.n + s.kept):
            decode([(1000 + j, len(prompt) + j, seq, False) for j in range(64)])
        start = time.process_time()
        for k in range(steps):
            pos = len(prompt) + k
            decode([(1000 + k, pos, seq, s.all_logits or seq == 0) for seq in range(s.n)])
        return prefill, 1000 * (time.process_time() - start) / steps
    finally:
        lib.llama_batch_free(batch)
        lib.llama_free(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import llama_cpp

    from ttc.adapters.gemma import GSM8K_FEW_SHOT, gemma_path

    print(llama_cpp.llama_print_system_info().decode())
    llm = llama_cpp.Llama(model_path=str(gemma_path()), n_ctx=2048, n_threads=1, verbose=False)
    text = GSM8K_FEW_SHOT.replace("{question}", GSM8K_QUESTION)
    prompt = llm.tokenize(text.encode(), add_bos=True)
    for _ in range(args.repeats):
        for s in SETTINGS:
            prefill, step = measure(llm, prompt, s, args.steps)
            print(
                f"{s.label:62s} prefill {prefill:5.0f} tok/s  step {step:6.1f} ms  "
                f"{s.n * 1000 / step:5.1f} tok/s (CPU time)",
                flush=True,
            )


if __name__ == "__main__":
    main()
