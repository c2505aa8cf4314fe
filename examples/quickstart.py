"""Repeated sampling on graded word problems with the embedded default model.

    python examples/quickstart.py            # 8 samples a question, Gemma 3 270M on the CPU

The questions come from ttc's graded suite (``ttc.eval.graded``): level L takes L arithmetic
steps, so difficulty is under control and a 270M model is in range at the low levels. The
first three questions of levels 1 and 2 of the development split are used, in file order (never
picked by the model's answers). Per level and overall it prints one sample's accuracy
(pass@1), the majority vote's accuracy and coverage (pass@k: the chance that k samples contain
a right answer), with the tokens spent: the gap between the vote and coverage is what a
verifier or a reward model can turn into accuracy.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import anyio

from ttc import SamplingParams, SelfConsistency, pass_at_k
from ttc.adapters import resolve_model
from ttc.eval.datasets import Example, load_dataset
from ttc.eval.graded import GRADED_FEW_SHOT
from ttc.scoring import GSM8KAnswer


async def main(levels: list[int], per_level: int, n: int, model_name: str) -> None:
    data = load_dataset("graded-dev")
    wanted = {str(level) for level in levels}
    taken: dict[str, int] = defaultdict(int)
    examples = []
    for example in data:
        if example.level in wanted and taken[example.level] < per_level:
            taken[example.level] += 1
            examples.append(example)
    # The suite's few-shot template replaces the model's default (GSM8K) one.
    model = resolve_model(model_name, template=GRADED_FEW_SHOT)
    strategy = SelfConsistency(model, n=n, params=SamplingParams(max_tokens=120))
    print(f"self-consistency, n={n}, {model.name}, {len(examples)} graded questions", flush=True)
    rows: dict[str, list[tuple[float, float, float, int]]] = defaultdict(list)
    start = time.perf_counter()

    async def answer(example: Example) -> None:
        verifier = GSM8KAnswer(example.reference)
        result = await strategy.run(example.question)
        verdicts = await verifier.verify(example.question, result.candidates)
        right = sum(verdicts)
        vote_ok = result.best is not None and (await verifier.verify("", [result.best]))[0]
        tokens = result.usage.completion_tokens
        row = (pass_at_k(n, right, 1), float(vote_ok), pass_at_k(n, right, n), tokens)
        rows[str(example.level)].append(row)
        print(
            f"level {example.level} {example.id}: majority {result.answer} | reference "
            f"{example.reference} | {'right' if vote_ok else 'wrong'} | {right:2d}/{n} samples "
            f"right | {tokens} tokens | {result.elapsed_s:.0f} s",
            flush=True,
        )

    # All questions at once: the engine decodes their samples together in one batch.
    async with anyio.create_task_group() as tg:
        for example in examples:
            tg.start_soon(answer, example)
    print(f"\n{'level':>7} {'q':>3} {'1 sample':>9} {'majority':>9} {f'pass@{n}':>8} {'tokens':>7}")
    everything = [row for level in rows for row in rows[level]]
    for level, group in [*sorted(rows.items()), ("all", everything)]:
        q = len(group)
        p1, vote, cover = (sum(r[i] for r in group) / q for i in range(3))
        spent = sum(r[3] for r in group)
        print(f"{level:>7} {q:>3} {p1:>9.2f} {vote:>9.2f} {cover:>8.2f} {spent:>7}")
    print(
        f"{model.usage.completion_tokens} generated tokens | "
        f"{time.perf_counter() - start:.0f} s | cost ${model.usage.cost_usd:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--per-level", type=int, default=3, help="questions per level")
    parser.add_argument("--n", type=int, default=8, help="samples per question")
    parser.add_argument("--model", default="embedded", help="a ttc model name")
    args = parser.parse_args()
    anyio.run(main, args.levels, args.per_level, args.n, args.model)
