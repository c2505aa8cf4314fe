"""The accuracy of majority and weighted votes over k of n judged samples, without asking the
model again. pass@k and coverage are in ``ttc.scoring.pass_k`` (and importable from here)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Sequence

from ttc.errors import ConfigError
from ttc.scoring.pass_k import _check, _count

# Where ``ttc.eval``'s lazy exports (and older code) find them; they live in ttc.scoring.
from ttc.scoring.pass_k import coverage as coverage
from ttc.scoring.pass_k import pass_at_k as pass_at_k
from ttc.scoring.pass_k import pass_at_k_curve as pass_at_k_curve

__all__ = [
    "majority_at_k",
    "majority_at_k_curve",
    "vote_groups",
    "weighted_vote_at_k_curve",
]


# --------------------------------------------------------------------------------------------
# Votes over k of the n samples, without asking the model again.
#
# A vote over a random k-subset of a question's n judged samples estimates what self-
# consistency with k samples would score. Ties go to a uniformly random tied answer (a random
# subset comes in a random order, and the selectors break ties by order).


def vote_groups(
    answers: Sequence[str | None], verdicts: Sequence[bool | None]
) -> tuple[list[tuple[int, bool]], int]:
    """Samples grouped by answer: ``([(size, correct), ...], abstain)``.

    ``answers`` are already normalized (``None``: the sample gives no answer, so no vote).
    A group is correct if its first sample was verified, as the majority vote's choice is.
    """
    if len(answers) != len(verdicts):
        raise ConfigError(
            f"answers and verdicts differ in length ({len(answers)} and {len(verdicts)})"
        )
    sizes: dict[str, int] = {}
    correct: dict[str, bool] = {}
    abstain = 0
    for answer, verdict in zip(answers, verdicts):
        if answer is None:
            abstain += 1
            continue
        if answer not in sizes:
            sizes[answer] = 0
            correct[answer] = bool(verdict)
        sizes[answer] += 1
    return [(sizes[a], correct[a]) for a in sizes], abstain


def _check_groups(groups: Sequence[tuple[int, bool]], abstain: int) -> int:
    for size, _ in groups:
        if _count("group size", size) < 1:
            raise ConfigError("every answer group needs at least one sample")
    return sum(size for size, _ in groups) + _count("abstain", abstain)


def majority_at_k_curve(
    groups: Sequence[tuple[int, bool]], *, abstain: int = 0, ks: Iterable[int] | None = None
) -> dict[int, float]:
    """Expected accuracy of a majority vote over k of the n samples, drawn without
    replacement, for each k in ``ks`` (default every k from 1 to n). Exact.

    ``groups`` are ``(size, correct)`` per distinct answer (see ``vote_groups``); ``abstain``
    samples have no answer. A subset with no vote at all scores 0.

    For each correct group g and each count x it may get: count the subsets where every
    other group gets at most x (t of them exactly x, then g wins with probability 1/(t+1)),
    by a polynomial product over the groups that can reach x; the groups that cannot, and
    the abstainers, contribute a plain binomial. One pass serves every k.
    """
    n = _check_groups(groups, abstain)
    wanted = list(range(1, n + 1)) if ks is None else sorted(set(ks))
    for k in wanted:
        _check(n, 0, k)
    # Integer arithmetic throughout: 1/(t+1) becomes scale // (t+1).
    scale = math.lcm(*range(1, len(groups) + 1))
    win = dict.fromkeys(wanted, 0)
    for index, (size, ok) in enumerate(groups):
        if not ok:
            continue
        others = [s for j, (s, _) in enumerate(groups) if j != index]
        for x in range(1, size + 1):
            small = abstain + sum(s for s in others if s < x)
            ways = _tie_polynomial([s for s in others if s >= x], x, n - x)
            # Ways to draw j from the groups that can reach x, weighted by g's share of a tie.
            weighted = [sum(c * (scale // (t + 1)) for t, c in enumerate(row)) for row in ways]
            pick_g = math.comb(size, x)
            for k in wanted:
                rest = k - x
                if rest < 0:
                    continue
                total = 0
                for drawn in range(min(rest, len(weighted) - 1) + 1):
                    if weighted[drawn]:
                        total += weighted[drawn] * math.comb(small, rest - drawn)
                win[k] += total * pick_g
    return {k: win[k] / (scale * math.comb(n, k)) for k in wanted}


def _tie_polynomial(sizes: Sequence[int], x: int, limit: int) -> list[list[int]]:
    """``ways[j][t]``: the ways to draw j samples from groups of ``sizes`` with every group
    getting at most x, exactly t of them x."""
    ways = [[0] * (len(sizes) + 1) for _ in range(limit + 1)]
    ways[0][0] = 1
    reach = 0  # the most samples drawn so far
    for placed, size in enumerate(sizes):
        picks = [math.comb(size, y) for y in range(x + 1)]
        new = [[0] * (len(sizes) + 1) for _ in range(limit + 1)]
        for j in range(min(reach, limit) + 1):
            row = ways[j]
            for t in range(placed + 1):
                count = row[t]
                if not count:
                    continue
                for y in range(min(x, limit - j) + 1):
                    new[j + y][t + (y == x)] += count * picks[y]
        ways = new
        reach += x
    return ways


def majority_at_k(groups: Sequence[tuple[int, bool]], k: int, *, abstain: int = 0) -> float:
    """Expected accuracy of a majority vote over k of the samples (see
    ``majority_at_k_curve``)."""
    return majority_at_k_curve(groups, abstain=abstain, ks=[k])[k]


def weighted_vote_at_k_curve(
    samples: Sequence[tuple[str | None, float, bool]],
    *,
    ks: Iterable[int] | None = None,
    draws: int = 400,
    seed: int = 0,
) -> dict[int, float]:
    """Expected accuracy of a weighted vote (the answer with the largest summed score,
    Snell et al.'s weighted best-of-N) over k of the n samples, for each k in ``ks``.

    ``samples`` are ``(normalized answer or None, score, verified)``. Exact (every subset)
    where there are at most ``draws`` subsets of size k, else the mean over ``draws`` random
    subsets from a generator seeded with ``seed``, so a report is reproducible. Ties go to a
    uniformly random tied answer; a subset with no vote scores 0.
    """
    n = len(samples)
    wanted = list(range(1, n + 1)) if ks is None else sorted(set(ks))
    if draws < 1:
        raise ConfigError(f"draws must be at least 1, got {draws}")
    correct_answer: dict[str, bool] = {}
    for answer, _, verdict in samples:
        if answer is not None and answer not in correct_answer:
            correct_answer[answer] = bool(verdict)
    rng = random.Random(seed)
    out: dict[int, float] = {}
    indices = range(n)
    for k in wanted:
        _check(n, 0, k)
        subsets: Iterable[Sequence[int]]
        if math.comb(n, k) <= draws:
            subsets = itertools.combinations(indices, k)
            count = math.comb(n, k)
        else:
            subsets = (rng.sample(indices, k) for _ in range(draws))
            count = draws
        total = 0.0
        for subset in subsets:
            sums: dict[str, float] = {}
            for i in subset:
                answer, score, _ = samples[i]
                if answer is not None:
                    sums[answer] = sums.get(answer, 0.0) + score
            if not sums:
                continue
            best = max(sums.values())
            tied = [a for a, v in sums.items() if v == best]
            total += sum(1 for a in tied if correct_answer[a]) / len(tied)
        out[k] = total / count
    return out
