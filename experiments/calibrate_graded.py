"""Calibrate the graded suite's levels on a model: pass@1, pass@k and majority@n per level.

    python experiments/calibrate_graded.py --per-level 6 --n 8 --temperature 0.8

Runs only on the development split (``graded-dev``); the held-out split stays untouched. The
first ``--per-level`` questions of each level are used (file order, not picked by answers).
Prints a Markdown table and writes the raw counts as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import anyio

from ttc import SamplingParams
from ttc.adapters import resolve_model
from ttc.eval.datasets import load_dataset
from ttc.eval.graded import few_shot_template
from ttc.eval.metrics import coverage
from ttc.scoring import GSM8KAnswer, MajorityVote
from ttc.strategies import RepeatedSample


async def main(args: argparse.Namespace) -> None:
    data = load_dataset("graded-dev")
    levels = [str(level) for level in args.levels]
    chosen: dict[str, list] = defaultdict(list)
    for example in data:
        if example.level in levels and len(chosen[example.level]) < args.per_level:
            chosen[example.level].append(example)
    template = few_shot_template(args.shots) if args.template == "graded" else None
    model = resolve_model(args.model, template=template, seed=args.seed)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= args.n]
    rows = []
    start = time.perf_counter()
    for level in levels:
        counts: list[int] = []
        majority = 0
        tokens = 0
        for example in chosen[level]:
            verifier = GSM8KAnswer(example.reference)
            strategy = RepeatedSample(
                model, args.n, verifier=verifier, params=params, selector=MajorityVote()
            )
            result = await strategy.run(example.question)
            counts.append(sum(1 for c in result.candidates if c.verified))
            majority += bool(result.best is not None and result.best.verified)
            tokens += result.usage.completion_tokens
        q = len(counts)
        curve = {k: coverage([(args.n, c) for c in counts], k) for k in ks}
        row = {
            "level": level,
            "questions": q,
            "n": args.n,
            "temperature": args.temperature,
            "pass": {str(k): curve[k] for k in ks},
            "majority": majority / q,
            "tokens_per_sample": tokens / (q * args.n),
            "correct_counts": counts,
            "ids": [e.id for e in chosen[level]],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    elapsed = time.perf_counter() - start
    header = "| level | q | " + " | ".join(f"pass@{k}" for k in ks) + " | maj@n | tok/sample |"
    print(header)
    print("|" + "---|" * (len(ks) + 4))
    for row in rows:
        cells = " | ".join(f"{100 * row['pass'][str(k)]:.1f}" for k in ks)
        print(
            f"| {row['level']} | {row['questions']} | {cells} | {100 * row['majority']:.1f} | "
            f"{row['tokens_per_sample']:.0f} |"
        )
    print(
        f"{elapsed:.0f} s, n={args.n}, T={args.temperature}, template={args.template}, "
        f"shots={args.shots}"
    )
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--levels", type=int, nargs="+", default=list(range(1, 9)))
    parser.add_argument("--per-level", type=int, default=6)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--template", choices=["graded", "gsm8k"], default="graded")
    parser.add_argument(
        "--shots", type=int, nargs="+", default=[1, 2, 1, 3], help="levels of the few-shot examples"
    )
    parser.add_argument("--out", type=Path, default=None)
    anyio.run(main, parser.parse_args())
