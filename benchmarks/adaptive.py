"""Adaptive-Consistency against fixed self-consistency: samples used at equal accuracy.

    python benchmarks/adaptive.py                       # graded-test, levels 1-3, embedded model
    python benchmarks/adaptive.py --from-store results/graded --run <a self-consistency run>

Every question gets ``--max-n`` samples once (fresh from the model, or the candidates of a
stored self-consistency or best-of-N run, in the order they arrived). Then each strategy runs,
for real, on a model that replays those samples in order (``FunctionModel``): fixed
``SelfConsistency`` at n = 16 and n = max_n, and ``AdaptiveConsistency`` with the paper's beta
rule at two thresholds (and the Dirichlet rule), one sample at a time, up to max_n. So every
strategy sees the same samples, the comparison is paired, and the adaptive rows are what the
strategy would have drawn from the model. Accuracy is the selected answer against the
reference (95% bootstrap interval over questions); samples and tokens are means per question.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from ttc import AdaptiveConsistency, SamplingParams, SelfConsistency
from ttc.adapters import FunctionModel, resolve_model
from ttc.eval.compare import bootstrap
from ttc.eval.datasets import Example, load_dataset
from ttc.scoring import GSM8KAnswer
from ttc.strategies.base import Strategy
from ttc.types import Completion, GenerateRequest


@dataclass
class Question:
    example: Example
    samples: list[Completion]


def replaying(samples: Sequence[Completion]) -> FunctionModel:
    """A model whose i-th sample is ``samples[i]``."""

    def reply(request: GenerateRequest, i: int) -> Completion:
        return samples[i]

    return FunctionModel(reply, native_n=False)


async def draw_fresh(args: argparse.Namespace) -> list[Question]:
    from ttc.eval.graded import GRADED_FEW_SHOT

    data = load_dataset(args.dataset)
    wanted = {str(level) for level in args.levels}
    taken: dict[str, int] = {}
    examples = []
    for example in data:  # in file order, never picked by the model's answers
        level = str(example.level)
        if level in wanted and taken.get(level, 0) < args.per_level:
            taken[level] = taken.get(level, 0) + 1
            examples.append(example)
    model = resolve_model(args.model, template=GRADED_FEW_SHOT)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    out: list[Question] = []
    start = time.perf_counter()

    async def one(example: Example) -> None:
        completions = await model.generate(example.question, params, args.max_n)
        out.append(Question(example, completions))
        print(
            f"  drew {len(out)}/{len(examples)} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    limiter = anyio.CapacityLimiter(args.concurrency)

    async def limited(example: Example) -> None:
        async with limiter:
            await one(example)

    async with anyio.create_task_group() as tg:
        for example in examples:
            tg.start_soon(limited, example)
    order = {e.id: i for i, e in enumerate(examples)}
    out.sort(key=lambda q: order[q.example.id])
    print(
        f"{model.name}: {model.usage.completion_tokens} tokens in "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )
    return out


def from_store(args: argparse.Namespace) -> list[Question]:
    from ttc.eval.store import ResultsStore

    data = {e.id: e for e in load_dataset(args.dataset)}
    with ResultsStore(args.from_store, create=False) as store:
        records = store.records(args.run)
    out = []
    for record in records:
        if record.id not in data or len(record.result.candidates) < args.max_n:
            continue
        samples = [
            Completion(
                text=c.text,
                finish_reason=c.finish_reason,
                completion_tokens=c.completion_tokens,
            )
            for c in record.result.candidates[: args.max_n]
        ]
        out.append(Question(data[record.id], samples))
    return out


async def evaluate(questions: list[Question], args: argparse.Namespace) -> None:
    fixed_ns = sorted({16, args.max_n} if args.max_n > 16 else {args.max_n})
    builders: list[tuple[str, Callable[[FunctionModel], Strategy]]] = [
        (f"SelfConsistency n={n}", lambda m, n=n: SelfConsistency(m, n=n)) for n in fixed_ns
    ]
    builders += [
        (
            f"AdaptiveConsistency beta, threshold {t}",
            lambda m, t=t: AdaptiveConsistency(m, max_n=args.max_n, threshold=t),
        )
        for t in (0.95, 0.99)
    ]
    builders.append(
        (
            "AdaptiveConsistency dirichlet, threshold 0.95",
            lambda m: AdaptiveConsistency(m, max_n=args.max_n, rule="dirichlet"),
        )
    )
    levels = sorted({str(q.example.level) for q in questions})
    print(
        f"\n{len(questions)} questions ({args.dataset}, levels {', '.join(levels)}), "
        f"{args.max_n} samples each; accuracy with 95% bootstrap interval over questions\n"
    )
    header = f"{'strategy':<46} {'level':>5} {'accuracy %':>22} {'samples':>8} {'tokens':>7}"
    print(header)
    for name, build in builders:
        per_level: dict[str, list[tuple[float, int, int]]] = {}
        for q in questions:
            result = await build(replaying(q.samples)).run(q.example.question)
            right = 0.0
            if result.best is not None:
                verdict = await GSM8KAnswer(q.example.reference).verify("", [result.best])
                right = float(verdict[0])
            row = (right, len(result.candidates), result.usage.completion_tokens)
            per_level.setdefault(str(q.example.level), []).append(row)
            per_level.setdefault("all", []).append(row)
        for level in [*levels, "all"]:
            group = per_level[level]
            accuracy = bootstrap([r[0] for r in group])
            samples = sum(r[1] for r in group) / len(group)
            tokens = sum(r[2] for r in group) / len(group)
            print(f"{name:<46} {level:>5} {accuracy!s:>22} {samples:>8.1f} {tokens:>7.0f}")


async def main(args: argparse.Namespace) -> None:
    questions = from_store(args) if args.from_store else await draw_fresh(args)
    if not questions:
        raise SystemExit("no questions with enough samples")
    await evaluate(questions, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="graded-test")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--per-level", type=int, default=10)
    parser.add_argument("--max-n", type=int, default=32)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--from-store", default=None, help="replay a stored run's samples")
    parser.add_argument("--run", default=None, help="the stored run (with --from-store)")
    anyio.run(main, parser.parse_args())
