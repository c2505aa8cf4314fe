"""Coverage of repeated sampling on GSM8K with the embedded default (Brown et al. 2024).

    python benchmarks/coverage_gsm8k.py                       # 20 questions, n = 16
    python benchmarks/coverage_gsm8k.py --questions 5 --n 8   # a quick look

``RepeatedSample`` draws n samples a question from Gemma 3 270M (llama.cpp, one thread) and the
GSM8K verifier judges each. Reported: pass@k (the unbiased estimator, mean over questions) for
k = 1, 4 and n, which should rise with k, and the accuracy of the majority vote over the same
samples, which a small base model leaves far below coverage. Questions are the first ones of
``../shared/data/gsm8k_dev.jsonl`` (relative to the repository root) unless ``--data`` says.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import anyio

from ttc import RepeatedSample, SamplingParams
from ttc.adapters import resolve_model
from ttc.scoring import GSM8KAnswer, MajorityVote, gsm8k_reference
from ttc.scoring.pass_k import pass_at_k

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gsm8k_dev.jsonl"


def load(path: Path, count: int) -> list[dict[str, str]]:
    """The first ``count`` problems of a GSM8K JSONL file."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines[:count]]


async def evaluate(
    problems: list[dict[str, str]], n: int, model_name: str, max_tokens: int, threads: int
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"n_threads": threads, "seed": 0} if model_name == "embedded" else {}
    model = resolve_model(model_name, **kwargs)
    params = SamplingParams(temperature=0.8, max_tokens=max_tokens)
    ks = sorted({k for k in (1, 4, n) if k <= n})
    per_question: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i, problem in enumerate(problems, 1):
        reference = gsm8k_reference(problem["answer"])
        strategy = RepeatedSample(model, n, verifier=GSM8KAnswer(reference), params=params)
        result = await strategy.run(problem["question"])
        judged = [c for c in result.candidates if c.verified is not None]
        right = sum(1 for c in judged if c.verified)
        vote = MajorityVote().select(result.candidates)
        majority_ok = bool(vote.best is not None and vote.best.verified)
        curve = {k: pass_at_k(len(judged), right, k) for k in ks if k <= len(judged)}
        per_question.append(
            {
                "reference": reference,
                "majority": vote.answer,
                "majority_correct": majority_ok,
                "samples": len(judged),
                "correct": right,
                "pass_at_k": curve,
                "seconds": result.elapsed_s,
                "tokens": result.usage.total_tokens,
            }
        )
        print(
            f"{i:2d}/{len(problems)}  reference {reference:>6}  majority {str(vote.answer)[:8]:>8} "
            f"{'right' if majority_ok else 'wrong'}  {right:2d}/{len(judged)} samples right  "
            f"{result.elapsed_s:5.1f} s",
            flush=True,
        )
    count = len(per_question)
    return {
        "model": model.name,
        "n": n,
        "questions": count,
        "pass_at_k": {k: sum(q["pass_at_k"].get(k, 0.0) for q in per_question) / count for k in ks},
        "majority_accuracy": sum(q["majority_correct"] for q in per_question) / count,
        "seconds": time.perf_counter() - start,
        "tokens": model.usage.total_tokens,
        "per_question": per_question,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the full results as JSON here")
    args = parser.parse_args(argv)
    problems = load(args.data, args.questions)
    report = anyio.run(evaluate, problems, args.n, args.model, args.max_tokens, args.threads)
    curve = "  ".join(f"pass@{k} {v:.3f}" for k, v in report["pass_at_k"].items())
    print(
        f"\n{report['model']}, {report['questions']} GSM8K dev questions, n={report['n']}:\n"
        f"  {curve}\n  majority accuracy {report['majority_accuracy']:.3f}\n"
        f"  {report['tokens']} tokens in {report['seconds']:.0f} s"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
