"""Self-consistency on a few GSM8K questions with the embedded default model.

    python examples/quickstart.py            # 16 samples a question, Gemma 3 270M on the CPU

For each question: the majority answer of the samples, the reference answer, and the coverage,
the chance that k samples contain a correct one (pass@k, judged by the GSM8K verifier). A small
base model is often wrong by majority vote yet right somewhere among its samples: that gap is
what verifiers and reward models turn into accuracy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anyio

from ttc import SamplingParams, SelfConsistency, pass_at_k
from ttc.adapters import resolve_model
from ttc.scoring import GSM8KAnswer, gsm8k_reference

HERE = Path(__file__).resolve().parent


def load(data: Path) -> list[dict[str, str]]:
    """GSM8K problems from a JSONL file (``question``, ``answer`` ending in ``#### N``)."""
    return [json.loads(line) for line in data.read_text().splitlines() if line.strip()]


def short(answer: str | None, width: int = 8) -> str:
    text = str(answer)
    return text if len(text) <= width else text[: width - 1] + "…"


async def main(problems: list[dict[str, str]], n: int, model_name: str, max_tokens: int) -> None:
    model = resolve_model(model_name)
    strategy = SelfConsistency(model, n=n, params=SamplingParams(max_tokens=max_tokens))
    ks = sorted({k for k in (1, 4, n) if k <= n})
    print(f"self-consistency, n={n}, {model.name}, {len(problems)} questions", flush=True)
    majority_right = 0
    coverage = dict.fromkeys(ks, 0.0)
    start = time.perf_counter()
    for i, problem in enumerate(problems, 1):
        question = problem["question"]
        reference = gsm8k_reference(problem["answer"])
        verifier = GSM8KAnswer(reference)
        result = await strategy.run(question)
        verdicts = await verifier.verify(question, result.candidates)
        right = sum(verdicts)
        best_ok = result.best is not None and (await verifier.verify(question, [result.best]))[0]
        majority_right += best_ok
        curve = {k: pass_at_k(len(verdicts), right, k) for k in ks if k <= len(verdicts)}
        for k, value in curve.items():
            coverage[k] += value
        shown = "  ".join(f"pass@{k} {v:.2f}" for k, v in curve.items())
        print(
            f"Q{i}: majority {short(result.answer):>8} | reference {reference:>8} | "
            f"{'right' if best_ok else 'wrong'} | {right:2d}/{len(verdicts)} samples right | "
            f"coverage {shown} | {result.elapsed_s:.0f} s",
            flush=True,
        )
    usage = model.usage
    means = "  ".join(f"pass@{k} {v / len(problems):.2f}" for k, v in coverage.items())
    print(
        f"majority accuracy {majority_right}/{len(problems)} | mean coverage {means} | "
        f"{usage.total_tokens} tokens | {time.perf_counter() - start:.0f} s | "
        f"cost ${usage.cost_usd:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "gsm8k_sample.jsonl")
    parser.add_argument("--n", type=int, default=16, help="samples per question")
    parser.add_argument("--model", default="embedded", help="a ttc model name")
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    anyio.run(main, load(args.data), args.n, args.model, args.max_tokens)
