"""Step-level search against best-of-N on GSM8K with the embedded Gemma and the arithmetic PRM.

    python benchmarks/search.py                                  # 50 GSM8K dev questions
    python benchmarks/search.py --limit 10 --n 4 --width 2       # a quicker look
    python benchmarks/search.py --data ttc/eval/data/gsm8k_sample.jsonl   # the 20 shipped ones
    python benchmarks/search.py --more-n 9 16 --only "N="   # best-of-N at the searches' tokens

One ``LlamaCpp`` (Gemma 3 270M, one thread, ``raw=True``) and the few-shot GSM8K template
(``GSM8K_FEW_SHOT``) serve every strategy, at the same N:

* ``BestOfN`` with a majority vote over N full samples;
* ``BestOfN`` with a weighted vote (weighted best-of-N), each sample scored by ``ArithmeticPRM``:
  the sample is split into steps the way the step search splits it (a sentence, ``". "``, is a
  step) and its step scores are aggregated (``last`` by default);
* ``BeamPRM`` (N beams, width M) and ``Lookahead`` (k = 1) guided by the same PRM.

Matched budgets mean the same N; what each strategy actually generated is reported (generated
tokens per question), because a step search spends N samples per round and Lookahead adds its
greedy rollouts. Accuracy is the GSM8K verifier's verdict on each strategy's answer against the
reference. Questions are the first 50 GSM8K dev questions (``benchmarks/data``) unless
``--data`` names another JSONL file.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from ttc import BeamPRM, BestOfN, Lookahead, SamplingParams
from ttc.adapters import LlamaCpp
from ttc.adapters.gemma import GSM8K_FEW_SHOT, TEMPLATE_STOPS
from ttc.scoring import (
    ArithmeticPRM,
    GSM8KAnswer,
    MajorityVote,
    ProcessRewardModel,
    Scorer,
    WeightedMajority,
    aggregate,
    gsm8k_reference,
)
from ttc.strategies import StepFormat
from ttc.strategies.base import Strategy
from ttc.types import Candidate, Prompt, Result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "benchmarks" / "data" / "gsm8k_dev_50.jsonl"

#: How the few-shot answers are stepped: one paragraph, a sentence a step; a blank line or the
#: model starting the next example ("Question:") ends the solution.
STEP_FORMAT = StepFormat(delimiter=". ", template=GSM8K_FEW_SHOT, end_markers=TEMPLATE_STOPS)


def load(path: Path, limit: int | None) -> list[dict[str, str]]:
    """The first ``limit`` problems (all when ``None``) of a GSM8K JSONL file."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if limit is not None:
        lines = lines[:limit]
    return [json.loads(line) for line in lines]


def split_steps(text: str, delimiter: str = STEP_FORMAT.delimiter) -> list[str]:
    """``text`` cut into steps after each ``delimiter`` (kept), as the step search writes them."""
    parts = text.split(delimiter)
    steps = [part + delimiter for part in parts[:-1]]
    if parts[-1]:
        steps.append(parts[-1])
    return [step for step in steps if step.strip()] or [text]


class PRMScorer(Scorer):
    """Scores full samples with a PRM: the sample's steps scored, then aggregated."""

    name = "prm"

    def __init__(self, prm: ProcessRewardModel, question: str, aggregation: str = "last"):
        self.prm = prm
        self.question = question
        self.aggregation = aggregation

    async def score(self, prompt: Prompt, candidates: Sequence[Candidate]) -> list[float]:
        solutions = [split_steps(c.text) for c in candidates]
        scores = await self.prm.score_steps(self.question, solutions)
        return [aggregate(s, self.aggregation) for s in scores]  # type: ignore[arg-type]


Builder = Callable[[str], tuple[Strategy, str]]


def strategies(model: LlamaCpp, args: argparse.Namespace) -> dict[str, tuple[int, Builder]]:
    """For each strategy's name, its N and a builder: question -> (strategy, its prompt)."""
    prm = ArithmeticPRM()
    sample = SamplingParams(temperature=0.8, max_tokens=args.max_tokens, stop=TEMPLATE_STOPS)
    step = SamplingParams(temperature=0.8, max_tokens=args.max_tokens)

    def full_prompt(question: str) -> str:
        return STEP_FORMAT.prompt(question, [])

    def majority(n: int) -> Builder:
        def build(question: str) -> tuple[Strategy, str]:
            strategy = BestOfN(model, n, selector=MajorityVote(), params=sample)
            return strategy, full_prompt(question)

        return build

    def weighted(n: int) -> Builder:
        def build(question: str) -> tuple[Strategy, str]:
            scorer = PRMScorer(prm, question, args.aggregation)
            strategy = BestOfN(model, n, scorer=scorer, selector=WeightedMajority(), params=sample)
            return strategy, full_prompt(question)

        return build

    def search(kind: type[BeamPRM], **extra: Any) -> Builder:
        def build(question: str) -> tuple[Strategy, str]:
            strategy = kind(
                model,
                prm,
                n=args.n,
                width=args.width,
                max_rounds=args.max_rounds,
                aggregation=args.aggregation,
                params=step,
                step_format=STEP_FORMAT,
                **extra,
            )
            return strategy, question

        return build

    weighted_name = f"BestOfN, weighted vote (PRM, {args.aggregation})"
    rows: dict[str, tuple[int, Builder]] = {
        "BestOfN, majority vote": (args.n, majority(args.n)),
        weighted_name: (args.n, weighted(args.n)),
        f"BeamPRM (M={args.width})": (args.n, search(BeamPRM)),
        f"Lookahead (k=1, M={args.width})": (args.n, search(Lookahead, k=1)),
    }
    # Best-of-N at larger N, to compare with the searches at about the same generated tokens.
    for n in args.more_n:
        rows[f"BestOfN, majority vote, N={n}"] = (n, majority(n))
        rows[f"{weighted_name}, N={n}"] = (n, weighted(n))
    if args.only:
        rows = {name: row for name, row in rows.items() if re.search(args.only, name)}
    return rows


async def correct(result: Result, reference: str) -> bool:
    """Whether the GSM8K verifier accepts the strategy's answer."""
    if result.answer is None:
        return False
    verdict = await GSM8KAnswer(reference).verify("", [Candidate(text="", answer=result.answer)])
    return verdict[0]


async def evaluate(
    problems: list[dict[str, str]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    model = LlamaCpp(raw=True, n_threads=1, seed=args.seed)
    builders = strategies(model, args)
    rows: list[dict[str, Any]] = []
    for name, (n, build) in builders.items():
        right = tokens = 0
        seconds = 0.0
        stopped: dict[str, int] = {}
        for i, problem in enumerate(problems, 1):
            question = problem["question"].strip()
            reference = gsm8k_reference(problem["answer"])
            strategy, prompt = build(question)
            start = time.perf_counter()
            result = await strategy.run(prompt)
            elapsed = time.perf_counter() - start
            ok = await correct(result, reference)
            right += ok
            tokens += result.usage.completion_tokens
            seconds += elapsed
            if result.stopped_by is not None:
                stopped[result.stopped_by] = stopped.get(result.stopped_by, 0) + 1
            print(
                f"{name:40s} {i:3d}/{len(problems)}  reference {reference:>8}  "
                f"answer {str(result.answer)[:8]:>8} {'right' if ok else 'wrong'}  "
                f"{result.usage.completion_tokens:5d} tok  {elapsed:6.1f} s",
                flush=True,
            )
        count = len(problems)
        rows.append(
            {
                "strategy": name,
                "n": n,
                "accuracy": right / count,
                "right": right,
                "questions": count,
                "tokens_per_question": tokens / count,
                "seconds": seconds,
                "stopped_by": stopped,
            }
        )
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| strategy | N | accuracy | generated tokens / question | wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['n']} | {r['accuracy']:.3f} ({r['right']}/{r['questions']}) "
            f"| {r['tokens_per_question']:.1f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="the first this many questions")
    parser.add_argument("--n", type=int, default=4, help="N: samples, or beams, per question")
    parser.add_argument("--width", type=int, default=2, help="M: the beam width of the searches")
    parser.add_argument(
        "--max-tokens", type=int, default=160, help="per sample (best-of-N) or per step (search)"
    )
    parser.add_argument("--max-rounds", type=int, default=40, help="step rounds of a search")
    parser.add_argument("--aggregation", default="last", choices=["last", "min", "prod", "mean"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--more-n",
        type=int,
        nargs="*",
        default=[],
        help="also best-of-N (majority and weighted) at these N, to match the searches' tokens",
    )
    parser.add_argument("--only", help="run only the strategies whose name matches this regex")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    problems = load(args.data, args.limit)
    rows = anyio.run(evaluate, problems, args)
    print(
        f"\nGemma 3 270M (llama.cpp, 1 thread), arithmetic PRM, {len(problems)} GSM8K questions "
        f"from {args.data.name}, N={args.n}, M={args.width}, seed {args.seed}:\n"
    )
    print(table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
