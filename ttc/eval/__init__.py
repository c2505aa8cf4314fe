"""Evaluation: datasets, a resumable runner (locally or on Ray), metrics, reports and plots.

    from ttc.eval import Solver, evaluate, load_dataset, named_strategy
    from ttc.adapters import resolve_model

    data = load_dataset("gsm8k-sample")
    solver = Solver(resolve_model("embedded"), named_strategy("repeated-sample", 32))
    summary = await evaluate(data, solver, "results", progress=True)

Names load on first use, so importing ``ttc.eval.metrics`` (as strategies do) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "coverage": "ttc.eval.metrics",
    "pass_at_k": "ttc.eval.metrics",
    "pass_at_k_curve": "ttc.eval.metrics",
    "majority_at_k": "ttc.eval.metrics",
    "majority_at_k_curve": "ttc.eval.metrics",
    "weighted_vote_at_k_curve": "ttc.eval.metrics",
    "vote_groups": "ttc.eval.metrics",
    "Dataset": "ttc.eval.datasets",
    "DatasetError": "ttc.eval.datasets",
    "DatasetSpec": "ttc.eval.datasets",
    "Example": "ttc.eval.datasets",
    "GSM8K": "ttc.eval.datasets",
    "HUMANEVAL": "ttc.eval.datasets",
    "MATH500": "ttc.eval.datasets",
    "load_dataset": "ttc.eval.datasets",
    "Question": "ttc.eval.solver",
    "STRATEGIES": "ttc.eval.solver",
    "Solver": "ttc.eval.solver",
    "named_strategy": "ttc.eval.solver",
    "EvalSummary": "ttc.eval.runner",
    "evaluate": "ttc.eval.runner",
    "QuestionRecord": "ttc.eval.store",
    "ResultsStore": "ttc.eval.store",
    "RunReport": "ttc.eval.report",
    "build_report": "ttc.eval.report",
    "load_reports": "ttc.eval.report",
    "write_plots": "ttc.eval.plots",
    "GRADED": "ttc.eval.datasets",
    "load_experiment": "ttc.eval.experiment",
    "run_experiment": "ttc.eval.experiment",
    "load_comparison": "ttc.eval.compare",
    "spec_strategy": "ttc.eval.solver",
}

__all__ = [
    "GRADED",
    "GSM8K",
    "HUMANEVAL",
    "MATH500",
    "STRATEGIES",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "EvalSummary",
    "Example",
    "Question",
    "QuestionRecord",
    "ResultsStore",
    "RunReport",
    "Solver",
    "build_report",
    "coverage",
    "evaluate",
    "load_comparison",
    "load_dataset",
    "load_experiment",
    "load_reports",
    "majority_at_k",
    "majority_at_k_curve",
    "named_strategy",
    "pass_at_k",
    "pass_at_k_curve",
    "run_experiment",
    "spec_strategy",
    "vote_groups",
    "weighted_vote_at_k_curve",
    "write_plots",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ttc.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from ttc.eval.compare import load_comparison
    from ttc.eval.datasets import (
        GRADED,
        GSM8K,
        HUMANEVAL,
        MATH500,
        Dataset,
        DatasetError,
        DatasetSpec,
        Example,
        load_dataset,
    )
    from ttc.eval.experiment import load_experiment, run_experiment
    from ttc.eval.metrics import (
        coverage,
        majority_at_k,
        majority_at_k_curve,
        pass_at_k,
        pass_at_k_curve,
        vote_groups,
        weighted_vote_at_k_curve,
    )
    from ttc.eval.plots import write_plots
    from ttc.eval.report import RunReport, build_report, load_reports
    from ttc.eval.runner import EvalSummary, evaluate
    from ttc.eval.solver import STRATEGIES, Question, Solver, named_strategy, spec_strategy
    from ttc.eval.store import QuestionRecord, ResultsStore
