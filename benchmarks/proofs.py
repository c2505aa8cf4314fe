"""Repeated sampling judged by a proof checker: coverage@k on the shipped Coq sample.

Two models on ``coq-sample`` (12 statements), every sample judged by ``CoqProof`` (real coqc):

- ``--model scripted`` (default): a model that writes the known proof with probability ``p``
  (``--p``, 0.25) and otherwise a wrong one, drawn from a few typical failures (``Admitted``,
  the wrong tactic, an axiom). Coverage@k should rise with k like ``1 - (1 - p)^k``.
- ``--model embedded``: ttc's embedded Gemma 3 270M (llama.cpp), under a budget
  (``--budget-seconds``). A 270M base model writes no valid Coq; the run shows the whole path
  works end to end, whatever its coverage.

Run: ``python benchmarks/proofs.py [--model scripted|embedded] [-n 8] [--p 0.25]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from ttc import Budget
from ttc.adapters.function import FunctionModel
from ttc.eval.datasets import load_dataset
from ttc.eval.metrics import coverage
from ttc.runtime.model import Model
from ttc.strategies import RepeatedSample
from ttc.types import GenerateRequest

WRONG = (
    "Proof. Admitted.",
    "Proof. intros. reflexivity. Qed.",
    "Axiom cheat : False.\nProof. destruct cheat. Qed.",
    "Proof. auto. Qed.",
)


def scripted(p: float, seed: int) -> Model:
    """A model that answers each sample with the known proof with probability ``p``."""
    data = load_dataset("coq-sample")
    rows = [json.loads(line) for line in data.path.read_text().splitlines()]
    proofs = {e.question: r["proof"] for e, r in zip(data, rows, strict=True)}
    rng = random.Random(seed)

    def reply(request: GenerateRequest, index: int) -> str:
        question = request.prompt if isinstance(request.prompt, str) else request.prompt[-1].content
        proof = proofs[question] if rng.random() < p else rng.choice(WRONG)
        return f"Here is the proof.\n```coq\n{proof}\n```"

    return FunctionModel(reply, model="scripted-prover")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("scripted", "embedded"), default="scripted")
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--p", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-seconds", type=float, default=600.0)
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    data = load_dataset("coq-sample")
    if args.model == "scripted":
        model = scripted(args.p, args.seed)
    else:
        from ttc.adapters.registry import resolve_model

        model = resolve_model("embedded")
    start = time.perf_counter()
    counts: list[tuple[int, int]] = []
    budget = Budget(seconds=args.budget_seconds)
    for example in data:
        strategy = RepeatedSample(
            model,
            n=args.n,
            verifier=data.verifier(example),
            extract=data.spec.extractor(),
            budget=budget,
        )
        result = await strategy.run(data.prompt(example))
        correct = sum(bool(c.verified) for c in result.candidates)
        counts.append((len(result.candidates), correct))
        reasons = {c.failure for c in result.candidates if c.failure}
        print(
            f"{example.id:24} {correct}/{len(result.candidates)} proved"
            f"{' (stopped: ' + str(result.stopped_by) + ')' if result.stopped_by else ''}"
            f"  e.g. {sorted(reasons)[0][:70] if reasons else ''}"
        )
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= args.n]
    done = [(n, c) for n, c in counts if n > 0]
    print(f"\n{args.model}: n={args.n}, {len(done)} questions, {time.perf_counter() - start:.0f} s")
    for k in ks:
        usable = [(n, c) for n, c in done if n >= k]
        if usable:
            print(f"coverage@{k}: {coverage(usable, k):.3f}")


if __name__ == "__main__":
    asyncio.run(main())
