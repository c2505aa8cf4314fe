"""Scoring candidates: verifiers (yes or no), scorers (a number), selectors (the final answer),
and answer extraction.

Importing this package is cheap: math-verify and sympy load only in ``MathAnswer``'s worker
processes, and ``VLLMPoolingPRM`` (which brings the HTTP client) on first use.
"""

from typing import Any

from ttc.scoring._checker import CheckReport
from ttc.scoring.base import Scorer, Selection, Selector, Verifier
from ttc.scoring.coq import CoqProof
from ttc.scoring.extract import extract_answer, extract_boxed, gsm8k_reference, normalize_answer
from ttc.scoring.lean import LeanProof
from ttc.scoring.prm import ArithmeticPRM, ProcessRewardModel, aggregate
from ttc.scoring.prm_hf import MathShepherdPRM, QwenPRM, RLHFlowPRM, TransformersPRM
from ttc.scoring.selectors import Argmax, FirstVerified, MajorityVote, WeightedMajority
from ttc.scoring.smt import SMTCheck
from ttc.scoring.step_judge import StepJudge
from ttc.scoring.unit_tests import UnitTestReport, UnitTests, extract_code
from ttc.scoring.verifiers import (
    FunctionScorer,
    FunctionVerifier,
    GSM8KAnswer,
    MathAnswer,
    Regex,
    as_scorer,
    as_verifier,
)

__all__ = [
    "Argmax",
    "ArithmeticPRM",
    "CheckReport",
    "CoqProof",
    "FirstVerified",
    "FunctionScorer",
    "FunctionVerifier",
    "GSM8KAnswer",
    "LeanProof",
    "MajorityVote",
    "MathAnswer",
    "MathShepherdPRM",
    "ProcessRewardModel",
    "QwenPRM",
    "RLHFlowPRM",
    "Regex",
    "SMTCheck",
    "Scorer",
    "Selection",
    "Selector",
    "StepJudge",
    "TransformersPRM",
    "UnitTestReport",
    "UnitTests",
    "VLLMPoolingPRM",
    "Verifier",
    "WeightedMajority",
    "aggregate",
    "as_scorer",
    "as_verifier",
    "extract_answer",
    "extract_boxed",
    "extract_code",
    "gsm8k_reference",
    "normalize_answer",
]


def __getattr__(name: str) -> Any:
    if name == "VLLMPoolingPRM":
        from ttc.scoring.prm_vllm import VLLMPoolingPRM

        return VLLMPoolingPRM
    raise AttributeError(f"module 'ttc.scoring' has no attribute {name!r}")
