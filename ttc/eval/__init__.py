"""Evaluation: datasets, a resumable runner (locally or on Ray), metrics, reports and plots.

    from ttc.eval import Solver, evaluate, load_dataset, named_strategy
    from ttc.adapters import resolve_model

    data = load_dataset("gsm8k-sample")
    solver = Solver(resolve_model("embedded"), named_strategy("repeated-sample", 32))
    summary = await evaluate(data, solver, "results")

Names load on first use, so importing ``ttc.eval.metrics`` (as strategies do) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

export(
    globals(),
    {
        "ttc.eval.metrics": (
            "majority_at_k",
            "majority_at_k_curve",
            "weighted_vote_at_k_curve",
            "vote_groups",
        ),
        "ttc.eval.datasets": (
            "Dataset",
            "DatasetError",
            "DatasetSpec",
            "Example",
            "GSM8K",
            "HUMANEVAL",
            "MATH500",
            "GRADED",
            "load_dataset",
        ),
        "ttc.eval.solver": ("Question", "STRATEGIES", "Solver", "named_strategy", "spec_strategy"),
        "ttc.eval.runner": ("EvalSummary", "evaluate"),
        "ttc.eval.store": ("QuestionRecord", "ResultsStore"),
        "ttc.eval.report": ("RunReport", "build_report", "load_reports"),
        "ttc.eval.plots": ("write_plots",),
        "ttc.eval.experiment": ("load_experiment", "run_experiment"),
        "ttc.eval.compare": ("load_comparison",),
    },
)

if TYPE_CHECKING:
    from ttc.eval.compare import load_comparison as load_comparison
    from ttc.eval.datasets import GRADED as GRADED
    from ttc.eval.datasets import GSM8K as GSM8K
    from ttc.eval.datasets import HUMANEVAL as HUMANEVAL
    from ttc.eval.datasets import MATH500 as MATH500
    from ttc.eval.datasets import Dataset as Dataset
    from ttc.eval.datasets import DatasetError as DatasetError
    from ttc.eval.datasets import DatasetSpec as DatasetSpec
    from ttc.eval.datasets import Example as Example
    from ttc.eval.datasets import load_dataset as load_dataset
    from ttc.eval.experiment import load_experiment as load_experiment
    from ttc.eval.experiment import run_experiment as run_experiment
    from ttc.eval.metrics import majority_at_k as majority_at_k
    from ttc.eval.metrics import majority_at_k_curve as majority_at_k_curve
    from ttc.eval.metrics import vote_groups as vote_groups
    from ttc.eval.metrics import weighted_vote_at_k_curve as weighted_vote_at_k_curve
    from ttc.eval.plots import write_plots as write_plots
    from ttc.eval.report import RunReport as RunReport
    from ttc.eval.report import build_report as build_report
    from ttc.eval.report import load_reports as load_reports
    from ttc.eval.runner import EvalSummary as EvalSummary
    from ttc.eval.runner import evaluate as evaluate
    from ttc.eval.solver import STRATEGIES as STRATEGIES
    from ttc.eval.solver import Question as Question
    from ttc.eval.solver import Solver as Solver
    from ttc.eval.solver import named_strategy as named_strategy
    from ttc.eval.solver import spec_strategy as spec_strategy
    from ttc.eval.store import QuestionRecord as QuestionRecord
    from ttc.eval.store import ResultsStore as ResultsStore
