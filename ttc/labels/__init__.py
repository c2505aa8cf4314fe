"""Process supervision from rollouts: step labels (Math-Shepherd, OmegaPRM), their exports, and
PRM training data.

    from ttc.labels import StepLabeller, collect_labels

    labeller = StepLabeller(model, solutions=4, rollouts=8, method="mc")
    summary = await collect_labels(load_dataset("graded-dev"), labeller, "labels")

Names load on first use, so ``import ttc.labels`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "LabelMethod": "ttc.labels.estimate",
    "LabelledQuestion": "ttc.labels.estimate",
    "LabelledSolution": "ttc.labels.estimate",
    "StepLabel": "ttc.labels.estimate",
    "StepLabeller": "ttc.labels.estimate",
    "split_steps": "ttc.labels.estimate",
    "CollectSummary": "ttc.labels.collect",
    "LabelStore": "ttc.labels.collect",
    "collect_labels": "ttc.labels.collect",
    "LabelStats": "ttc.labels.stats",
    "subsample_agreement": "ttc.labels.stats",
    "label_stats": "ttc.labels.stats",
}

__all__ = [
    "CollectSummary",
    "LabelMethod",
    "LabelStats",
    "LabelStore",
    "LabelledQuestion",
    "LabelledSolution",
    "StepLabel",
    "StepLabeller",
    "collect_labels",
    "label_stats",
    "split_steps",
    "subsample_agreement",
]

if TYPE_CHECKING:
    from ttc.labels.collect import CollectSummary, LabelStore, collect_labels
    from ttc.labels.estimate import (
        LabelledQuestion,
        LabelledSolution,
        LabelMethod,
        StepLabel,
        StepLabeller,
        split_steps,
    )
    from ttc.labels.stats import LabelStats, label_stats, subsample_agreement


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ttc.labels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
