"""Score a stored run's samples again with another PRM, without sampling again.

A stored sampling run (best-of-n, self-consistency, repeated-sample, adaptive-consistency)
holds every sample with its verdict. Scoring those samples with a PRM and selecting by weighted
vote is exactly what ``best-of-n scorer=prm`` would have done on the same samples, so a new
PRM (one ``ttc train-prm`` just trained, say) is compared with the vote, or with another PRM,
at identical generated tokens: the comparison is paired, question by question and sample by
sample, and costs only the PRM's passes. The rescored run is stored beside its source, under
the configuration of that best-of-n run plus ``rescored_from``, so ``ttc report`` draws it as
one more series (its weighted vote at every k <= n included).

The samples' usage (what generating them cost) is kept as it was; the PRM's own passes are not
generated tokens and are not added, as in a live best-of-n run with an in-process PRM.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttc.errors import ConfigError, TTCError
from ttc.eval.datasets import Dataset, Example
from ttc.eval.report import _VERDICT_KEYS
from ttc.eval.store import QuestionRecord, ResultsStore
from ttc.scoring.base import Scorer, Selector
from ttc.strategies.registry import STRATEGIES, StrategySpec

__all__ = [
    "RESCORABLE",
    "RescoreSummary",
    "default_name",
    "rescore",
    "rescored_config",
    "rescored_spec",
]

RESCORABLE = ("best-of-n", "self-consistency", "repeated-sample", "adaptive-consistency")
"""Strategies whose stored candidates are independent samples of the prompt (a search's are
its finished beams, which a PRM already chose between step by step)."""


@dataclass(frozen=True)
class RescoreSummary:
    """What a rescoring did: questions stored in the new run, and both runs' accuracy."""

    source: str
    run: str
    total: int
    skipped: int
    new: int
    failed: int
    correct: int
    source_correct: int
    seconds: float

    @property
    def accuracy(self) -> float | None:
        done = self.skipped + self.new
        return self.correct / done if done else None

    @property
    def source_accuracy(self) -> float | None:
        return self.source_correct / self.total if self.total else None


def rescored_spec(
    source_config: Mapping[str, Any],
    prm: str,
    prm_options: Mapping[str, object] | None = None,
    *,
    aggregation: str = "min",
    selector: str = "weighted",
) -> StrategySpec:
    """The best-of-n run (``scorer=prm``) a rescoring of ``source_config``'s samples equals."""
    strategy = source_config.get("strategy")
    if strategy not in RESCORABLE:
        raise ConfigError(
            f"run made with strategy {strategy!r}: only the samples of "
            f"{', '.join(RESCORABLE)} can be scored again (a search's candidates are its "
            "finished beams, chosen step by step by its own PRM)"
        )
    n = source_config.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"run's stored n is not a positive integer: {n!r}")
    return StrategySpec.of(
        "best-of-n",
        n=n,
        params={"scorer": "prm", "selector": selector, "aggregation": aggregation},
        prm=prm,
        prm_options=prm_options,
    )


def rescored_config(
    source: str, source_config: Mapping[str, Any], spec: StrategySpec
) -> dict[str, Any]:
    """The stored configuration of the rescored run: the source's sampling settings (dataset,
    model, temperature, ...), ``spec``'s strategy settings, and the source's name."""
    strategy = str(source_config.get("strategy"))
    own = set(STRATEGIES[strategy].params) if strategy in STRATEGIES else set()
    kept = {
        k: v
        for k, v in source_config.items()
        if k not in own and k not in ("strategy", "n", "prm") and not k.startswith("prm.")
    }
    return {**kept, **spec.config(), "rescored_from": source}


def default_name(source: str, spec: StrategySpec) -> str:
    """``<source>-<prm>-<hash of the PRM, its options and the selection>``."""
    described = json.dumps(spec.config(), sort_keys=True, default=str)
    return f"{source}-{spec.prm}-{hashlib.sha256(described.encode()).hexdigest()[:8]}"


async def rescore(
    folder: str | Path,
    source: str,
    scorer: Scorer,
    selector: Selector,
    data: Dataset,
    *,
    config: Mapping[str, Any],
    name: str,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> RescoreSummary:
    """Score every stored question of run ``source`` again with ``scorer`` and select with
    ``selector``; store the results as run ``name`` in the same folder.

    ``data`` is the dataset the source ran on, prepared as it was (its prompts are what the
    PRM reads); each stored question must be in it, with the same question and reference.
    Candidates keep their text, answer, verdict and tokens; their scorer scores are replaced.
    With ``resume``, questions ``name`` already stored are skipped. A question the scorer
    fails on is stored as a failure of the new run (its source record is untouched).
    """
    started = time.perf_counter()
    examples = {e.id: e for e in data.examples}
    with ResultsStore(folder, create=False) as store:
        known = [r.name for r in store.runs()]
        if source not in known:
            raise ConfigError(
                f"no run {source!r} in {folder}; its runs: {', '.join(known) or 'none'}"
            )
        if name == source:
            raise ConfigError("the rescored run needs a name other than its source's")
        records = store.records(source)
        for record in records:
            example = examples.get(record.id)
            if example is None or example.fingerprint != record.fingerprint:
                why = "is not in" if example is None else "reads differently in"
                raise ConfigError(
                    f"question {record.id!r} of run {source!r} {why} dataset {data.name!r}: "
                    "give the dataset the run was made on"
                )
        store.open_run(name, config, resume=resume)
        done = store.fingerprints(name)
        skipped = new = failed = 0
        for i, record in enumerate(records):
            if done.get(record.id) == record.fingerprint:
                skipped += 1
            else:
                try:
                    rescored = await _rescored(record, scorer, selector, data, examples[record.id])
                    store.put(name, rescored)
                    new += 1
                except TTCError as exc:
                    store.put_failure(name, record.id, f"scoring failed: {exc}")
                    failed += 1
            if progress is not None:
                progress(i + 1, len(records))
        correct, _ = store.accuracy(name)
        source_correct, _ = store.accuracy(source)
    return RescoreSummary(
        source=source,
        run=name,
        total=len(records),
        skipped=skipped,
        new=new,
        failed=failed,
        correct=correct,
        source_correct=source_correct,
        seconds=time.perf_counter() - started,
    )


async def _rescored(
    record: QuestionRecord, scorer: Scorer, selector: Selector, data: Dataset, example: Example
) -> QuestionRecord:
    prompt = data.prompt(example)
    result = record.result
    candidates = [c.model_copy(deep=True) for c in result.candidates]
    scores = await scorer.score(prompt, candidates) if candidates else []
    for candidate, value in zip(candidates, scores, strict=True):
        candidate.score = value
        kept = {k: v for k, v in candidate.scores.items() if k in _VERDICT_KEYS}
        candidate.scores = {**kept, scorer.name: value}
    selection = selector.select(candidates)
    best = selection.best
    rescored = result.model_copy(
        update={
            "answer": selection.answer,
            "best": best,
            "candidates": candidates,
            "votes": selection.votes,
            "tied": selection.tied,
        }
    )
    return record.model_copy(
        update={"result": rescored, "correct": bool(best is not None and best.verified)}
    )
