"""Process supervision from rollouts: step labels (Math-Shepherd, OmegaPRM), their exports, and
PRM training data.

    from ttc.labels import StepLabeller, collect_labels

    labeller = StepLabeller(model, solutions=4, rollouts=8, method="mc")
    summary = await collect_labels(load_dataset("graded-dev"), labeller, "labels")

Names load on first use, so ``import ttc.labels`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

export(
    globals(),
    {
        "ttc.labels.estimate": (
            "LabelMethod",
            "LabelledQuestion",
            "LabelledSolution",
            "StepLabel",
            "StepLabeller",
            "split_steps",
        ),
        "ttc.labels.collect": ("CollectSummary", "LabelStore", "collect_labels"),
        "ttc.labels.stats": ("LabelStats", "label_stats", "subsample_agreement"),
    },
)

if TYPE_CHECKING:
    from ttc.labels.collect import CollectSummary as CollectSummary
    from ttc.labels.collect import LabelStore as LabelStore
    from ttc.labels.collect import collect_labels as collect_labels
    from ttc.labels.estimate import LabelledQuestion as LabelledQuestion
    from ttc.labels.estimate import LabelledSolution as LabelledSolution
    from ttc.labels.estimate import LabelMethod as LabelMethod
    from ttc.labels.estimate import StepLabel as StepLabel
    from ttc.labels.estimate import StepLabeller as StepLabeller
    from ttc.labels.estimate import split_steps as split_steps
    from ttc.labels.stats import LabelStats as LabelStats
    from ttc.labels.stats import label_stats as label_stats
    from ttc.labels.stats import subsample_agreement as subsample_agreement
