"""Step labels from rollouts on the embedded model, and a light PRM trained on them.

    python benchmarks/labels.py collect --out results/labels            # graded-dev 1-2, GSM8K
    python benchmarks/labels.py agreement --out results/labels          # hard labels, 8 vs 32
    python benchmarks/labels.py auc --out results/labels                # light PRM vs arithmetic
    python benchmarks/labels.py bestofn --out results/labels            # weighted BoN vs vote
    python benchmarks/labels.py beam --out results/labels               # BeamPRM with the head

``collect`` runs ``ttc collect``'s machinery (``collect_labels``) with the embedded Gemma 3 270M
(llama.cpp) on the first ``--per-level`` questions of levels 1 and 2 of graded-dev and the first
``--gsm8k`` questions of the GSM8K dev split (``../shared/data/gsm8k_dev.jsonl``, or
``--gsm8k-file``), ``--solutions`` solutions each and ``--rollouts`` rollouts a step; it is
resumable (rerun the same command). ``agreement`` reads a stored collection only (no model runs):
on the steps rolled out more than ``--k`` times (8; e.g. a run collected with 32 rollouts) the hard
label from the first ``--k`` rollouts against the one from all of them, and hard labels against
``ArithmeticPRM``'s verdicts on the steps that have arithmetic to check, each pooled over steps
with a 95% bootstrap interval over questions. ``auc`` trains the light head
(``fit_hidden_state_prm``, hidden states of the same model) on the steps of half the questions
(even positions) and reports the step-level AUC on the steps of the other half, beside
``ArithmeticPRM`` and chance, with a bootstrap interval over held-out questions. ``bestofn`` trains
the head on every labelled question and compares, on graded-test levels 1-2 (never labelled),
majority voting with best-of-N weighted by the head over the same ``--n`` samples (so at matched
tokens).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import anyio

from ttc.eval.datasets import load_dataset
from ttc.eval.experiment import prepare, sampling, select_questions
from ttc.labels import LabelledQuestion, LabelStore, StepLabeller, collect_labels, label_stats
from ttc.labels.stats import roc_auc, subsample_agreement
from ttc.scoring.prm import ArithmeticPRM

GSM8K_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_dev.jsonl"


def datasets(args: argparse.Namespace) -> list[tuple[str, object]]:
    graded = select_questions(load_dataset("graded-dev"), levels=[1, 2], per_level=args.per_level)
    out: list[tuple[str, object]] = [("graded", graded)]
    if args.gsm8k:
        path = Path(args.gsm8k_file) if args.gsm8k_file else GSM8K_DEV
        out.append(("gsm8k", load_dataset(path, "gsm8k", limit=args.gsm8k)))
    return out


async def collect(args: argparse.Namespace) -> None:
    for tag, data in datasets(args):
        data, llm = prepare(data, "embedded")  # type: ignore[arg-type]
        params, fmt = sampling(data, llm, args.temperature, args.max_tokens, None)
        labeller = StepLabeller(
            llm,
            solutions=args.solutions,
            rollouts=args.rollouts,
            method=args.method,
            step_format=fmt,
            params=params,
        )
        started = time.perf_counter()
        try:
            summary = await collect_labels(
                data,
                labeller,
                args.out,
                run=f"{tag}-{args.method}-k{args.rollouts}",
                config={"model": llm.name, "max_tokens": params.max_tokens},
                concurrency=args.concurrency,
                progress=True,
            )
        finally:
            await llm.aclose()
        with LabelStore(args.out) as store:
            stats = label_stats(store.labels(summary.run))
        print(
            f"{summary.run}: {summary.stored}/{summary.total} questions, "
            f"{time.perf_counter() - started:.0f} s this call; {stats.as_dict()}"
        )


def runs(out: str) -> dict[str, list[LabelledQuestion]]:
    with LabelStore(out) as store:
        return {run: store.labels(run) for run in store.label_runs()}


def pooled_interval(
    counts: list[tuple[int, int]], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float] | None:
    """A pooled ratio ``sum(hits) / sum(total)`` over questions' ``(hits, total)`` and its
    95% percentile bootstrap interval, questions resampled (steps of one question are not
    independent); ``None`` with nothing counted."""
    counts = [c for c in counts if c[1]]
    if not counts:
        return None
    ratio = sum(h for h, _ in counts) / sum(t for _, t in counts)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        sample = rng.choices(counts, k=len(counts))
        draws.append(sum(h for h, _ in sample) / sum(t for _, t in sample))
    draws.sort()
    return ratio, draws[int(0.025 * (resamples - 1))], draws[round(0.975 * (resamples - 1))]


def _show(counts: list[tuple[int, int]]) -> str:
    found = pooled_interval(counts)
    if found is None:
        return "-"
    hits, total = sum(h for h, _ in counts), sum(t for _, t in counts)
    return f"{hits}/{total} = {found[0]:.3f} [{found[1]:.3f}, {found[2]:.3f}]"


def agreement(args: argparse.Namespace) -> None:
    """Hard labels from the first ``--k`` rollouts of each step against all of them, and hard
    labels against ``ArithmeticPRM``, with 95% bootstrap intervals over questions; from the
    stored collection only (no model runs)."""
    rule = ArithmeticPRM()
    for run, questions in runs(args.out).items():
        if args.run and run not in args.run:
            continue
        rule_counts: list[tuple[int, int]] = []
        agree_counts: list[tuple[int, int]] = []
        found_counts: list[tuple[int, int]] = []  # good from all rollouts, good from k too
        pos_k = pos_all = rollouts = 0
        for q in questions:
            checked = same = 0
            for sol in q.solutions:
                for step in sol.steps:
                    verdict = rule.score_step(step.text)
                    if step.hard is None or verdict == rule.neutral:
                        continue
                    checked += 1
                    same += int(step.hard == (verdict == rule.right))
            rule_counts.append((same, checked))
            agree_counts.append(subsample_agreement([q], args.k))
            steps = [
                s
                for sol in q.solutions
                for s in sol.steps
                if not s.shared and len(s.verdicts) > args.k
            ]
            good = [s for s in steps if any(s.verdicts)]
            found_counts.append((sum(any(s.verdicts[: args.k]) for s in good), len(good)))
            pos_k += sum(any(s.verdicts[: args.k]) for s in steps)
            pos_all += len(good)
            rollouts = max([rollouts, *(len(s.verdicts) for s in steps)])
        print(f"{run}: {len(questions)} questions")
        print(
            "  hard label = ArithmeticPRM's verdict (steps with arithmetic to check): "
            + _show(rule_counts)
        )
        if any(total for _, total in agree_counts):
            print(
                f"  hard label from the first {args.k} rollouts = from all {rollouts}: "
                + _show(agree_counts)
            )
            found = _show(found_counts)
            print(f"  steps good from all {rollouts} found good by {args.k}: {found}")
            print(f"  steps labelled good: {pos_k} from {args.k} rollouts, {pos_all} from all")
        else:
            print(f"  no step has more than {args.k} rollouts: nothing to compare")


def _steps(q: LabelledQuestion) -> list[tuple[list[str], list[bool]]]:
    out = []
    for sol in q.solutions:
        kept = []
        for step in sol.steps:
            if step.hard is None:
                break
            kept.append(step)
        if kept:
            out.append(([s.text for s in kept], [bool(s.hard) for s in kept]))
    return out


async def auc(args: argparse.Namespace) -> None:
    """The light head's step AUC on held-out questions, at each ``--l2`` given (the states
    are computed once, so every penalty is fitted on the same features), beside
    ``ArithmeticPRM`` and chance, with 95% bootstrap intervals over held-out questions."""
    from ttc.scoring.prm_trained import (
        LlamaCppEmbedder,
        head_from_features,
        hidden_state_features,
    )

    questions = [q for run in runs(args.out).values() for q in run]
    train = [q for i, q in enumerate(questions) if i % 2 == 0]
    test = [q for i, q in enumerate(questions) if i % 2 == 1]
    embedder = LlamaCppEmbedder(max_tokens=args.context)
    started = time.perf_counter()
    x_train, y_train, _ = hidden_state_features(train, embedder)
    x_test, y_test, owners = hidden_state_features(test, embedder)
    print(
        f"states of {len(y_train)} training steps ({len(train)} questions) and {len(y_test)} "
        f"held-out steps ({len(test)} questions) in {time.perf_counter() - started:.0f} s"
    )
    arithmetic = ArithmeticPRM()
    rule: list[float] = []
    for q in test:
        solutions = _steps(q)
        if solutions:
            texts = [s for s, _ in solutions]
            rule += [v for row in await arithmetic.score_steps(q.prompt, texts) for v in row]
    assert len(rule) == len(y_test)
    by_question: dict[int, list[int]] = {}
    for i, owner in enumerate(owners):
        by_question.setdefault(owner, []).append(i)
    groups = list(by_question.values())

    def interval(scores: list[float]) -> str:
        point = roc_auc(scores, y_test)
        rng = random.Random(0)
        draws = []
        for _ in range(1000):
            idx = [i for g in rng.choices(groups, k=len(groups)) for i in g]
            value = roc_auc([scores[i] for i in idx], [y_test[i] for i in idx])
            if value is not None:
                draws.append(value)
        draws.sort()
        if point is None or not draws:
            return "-"
        low, high = draws[int(0.025 * len(draws))], draws[int(0.975 * len(draws)) - 1]
        return f"{point:.3f} [{low:.3f}, {high:.3f}]"

    print(
        f"held-out: {len(groups)} questions, {len(y_test)} steps ({sum(y_test)} labelled "
        f"good); training: {len(y_train)} steps ({sum(y_train)} good)"
    )
    for l2 in args.l2:
        head = head_from_features(x_train, y_train, embedder, l2=l2)
        fitted = roc_auc(head.score_states(x_train), y_train)
        print(
            f"  light PRM, l2 = {l2:g}: AUC {interval(head.score_states(x_test))} "
            f"(training AUC {fitted:.3f})"
        )
    print(f"  ArithmeticPRM              AUC {interval(rule)}")
    print("  chance                     AUC 0.5")


async def bestofn(args: argparse.Namespace) -> None:
    """Weighted best-of-N with the light PRM against majority voting on the same samples."""
    from ttc.eval.compare import bootstrap
    from ttc.scoring.extract import extract_answer
    from ttc.scoring.prm import PRMScorer
    from ttc.scoring.prm_trained import LlamaCppEmbedder, fit_hidden_state_prm
    from ttc.scoring.selectors import MajorityVote, WeightedMajority
    from ttc.types import Candidate

    questions = [q for run in runs(args.out).values() for q in run]
    head = fit_hidden_state_prm(questions, LlamaCppEmbedder(max_tokens=args.context), l2=args.l2[0])
    data = select_questions(
        load_dataset("graded-test"), levels=[1, 2], per_level=args.test_per_level
    )
    data, llm = prepare(data, "embedded")
    params, fmt = sampling(data, llm, args.temperature, args.max_tokens, None)
    scorer = PRMScorer(head, delimiter=fmt.delimiter, aggregation=args.aggregation)
    majority: list[float] = []
    weighted: list[float] = []
    tokens = 0
    try:
        for example in data.examples:
            prompt = data.prompt(example)
            completions = await llm.generate(prompt, params, args.n)
            candidates = [
                Candidate.from_completion(c, answer=extract_answer(c.text)) for c in completions
            ]
            tokens += sum(c.completion_tokens or 0 for c in completions)
            verdicts = await data.verifier(example).verify(prompt, candidates)
            right = {c.answer for c, ok in zip(candidates, verdicts) if ok}
            for c, score in zip(candidates, await scorer.score(prompt, candidates)):
                c.score = score
            majority.append(float(MajorityVote().select(candidates).answer in right))
            weighted.append(float(WeightedMajority().select(candidates).answer in right))
    finally:
        await llm.aclose()
    m, w = bootstrap(majority), bootstrap(weighted)
    diff = bootstrap([b - a for a, b in zip(majority, weighted)])
    print(
        f"graded-test levels 1-2, {len(majority)} questions, n = {args.n} samples each "
        f"({tokens / max(1, len(majority)):.0f} generated tokens a question, the same samples "
        f"for both): majority vote {m.mean:.3f} [{m.low:.3f}, {m.high:.3f}]; PRM-weighted "
        f"({args.aggregation}) {w.mean:.3f} [{w.low:.3f}, {w.high:.3f}]; difference "
        f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]"
    )


async def beam(args: argparse.Namespace) -> None:
    """BeamPRM guided by the light PRM on held-out graded-test questions."""
    from ttc.eval.compare import bootstrap
    from ttc.scoring.prm_trained import LlamaCppEmbedder, fit_hidden_state_prm
    from ttc.strategies.beam_prm import BeamPRM

    questions = [q for run in runs(args.out).values() for q in run]
    head = fit_hidden_state_prm(questions, LlamaCppEmbedder(max_tokens=args.context), l2=args.l2[0])
    data = select_questions(
        load_dataset("graded-test"), levels=[1, 2], per_level=args.test_per_level
    )
    data, llm = prepare(data, "embedded")
    params, fmt = sampling(data, llm, args.temperature, args.max_tokens, None)
    right: list[float] = []
    tokens = 0
    try:
        for example in data.examples:
            prompt = data.prompt(example)
            search = BeamPRM(
                llm, head, n=args.n, beam_width=2, max_rounds=8, params=params, step_format=fmt
            )
            result = await search.run(prompt)
            tokens += result.usage.completion_tokens
            best = result.best
            ok = best is not None and (await data.verifier(example).verify(prompt, [best]))[0]
            right.append(float(ok))
    finally:
        await llm.aclose()
    acc = bootstrap(right)
    print(
        f"graded-test levels 1-2, {len(right)} questions: BeamPRM (n = {args.n}, width 2) "
        f"guided by the light PRM {acc.mean:.3f} [{acc.low:.3f}, {acc.high:.3f}], "
        f"{tokens / max(1, len(right)):.0f} generated tokens a question"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["collect", "agreement", "auc", "bestofn", "beam"])
    parser.add_argument("--out", default="results/labels")
    parser.add_argument("--per-level", type=int, default=4)
    parser.add_argument("--gsm8k", type=int, default=2)
    parser.add_argument("--gsm8k-file", default=None)
    parser.add_argument("--solutions", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--method", choices=["mc", "binary"], default="mc")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--context", type=int, default=192, help="auc: tokens a pass reads")
    parser.add_argument(
        "--l2", type=float, nargs="+", default=[10.0], help="the head's L2 penalty (auc: several)"
    )
    parser.add_argument("--n", type=int, default=8, help="bestofn: samples a question")
    parser.add_argument("--test-per-level", type=int, default=5, help="bestofn: questions")
    parser.add_argument("--aggregation", default="min", help="bestofn: step scores to one")
    parser.add_argument("--k", type=int, default=8, help="agreement: the fewer rollouts")
    parser.add_argument(
        "--run", action="append", help="agreement: only this stored run (repeat for several)"
    )
    args = parser.parse_args()
    if args.what == "collect":
        anyio.run(collect, args)
    elif args.what == "agreement":
        agreement(args)
    elif args.what == "bestofn":
        anyio.run(bestofn, args)
    elif args.what == "beam":
        anyio.run(beam, args)
    else:
        anyio.run(auc, args)


if __name__ == "__main__":
    main()
