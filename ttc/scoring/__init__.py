"""Scoring candidates: verifiers (yes or no), scorers (a number), selectors (the final answer),
and answer extraction.

Importing this package is cheap: names load on first use, math-verify and sympy only in
``MathAnswer``'s worker processes, and ``VLLMPoolingPRM`` brings the HTTP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

export(
    globals(),
    {
        "ttc.scoring.base": ("Scorer", "Selection", "Selector", "Verifier"),
        "ttc.scoring._checker": ("CheckReport",),
        "ttc.scoring.coq": ("CoqProof",),
        "ttc.scoring.lean": ("LeanProof",),
        "ttc.scoring.smt": ("SMTCheck",),
        "ttc.scoring.pass_k": ("coverage", "pass_at_k", "pass_at_k_curve"),
        "ttc.scoring.extract": (
            "extract_answer",
            "extract_boxed",
            "gsm8k_reference",
            "normalize_answer",
        ),
        "ttc.scoring.prm": ("ArithmeticPRM", "ProcessRewardModel", "aggregate"),
        "ttc.scoring.prm_hf": ("MathShepherdPRM", "QwenPRM", "RLHFlowPRM", "TransformersPRM"),
        "ttc.scoring.prm_vllm": ("VLLMPoolingPRM", "VLLMStepwisePRM"),
        "ttc.scoring.prm_trained": ("HiddenStatePRM", "StepwisePRM"),
        "ttc.scoring.selectors": ("Argmax", "FirstVerified", "MajorityVote", "WeightedMajority"),
        "ttc.scoring.step_judge": ("StepJudge",),
        "ttc.scoring.unit_tests": ("UnitTestReport", "UnitTests", "extract_code"),
        "ttc.scoring.verifiers": (
            "FunctionScorer",
            "FunctionVerifier",
            "GSM8KAnswer",
            "MathAnswer",
            "Regex",
            "as_scorer",
            "as_verifier",
        ),
    },
)

if TYPE_CHECKING:
    from ttc.scoring._checker import CheckReport as CheckReport
    from ttc.scoring.base import Scorer as Scorer
    from ttc.scoring.base import Selection as Selection
    from ttc.scoring.base import Selector as Selector
    from ttc.scoring.base import Verifier as Verifier
    from ttc.scoring.coq import CoqProof as CoqProof
    from ttc.scoring.extract import extract_answer as extract_answer
    from ttc.scoring.extract import extract_boxed as extract_boxed
    from ttc.scoring.extract import gsm8k_reference as gsm8k_reference
    from ttc.scoring.extract import normalize_answer as normalize_answer
    from ttc.scoring.lean import LeanProof as LeanProof
    from ttc.scoring.pass_k import coverage as coverage
    from ttc.scoring.pass_k import pass_at_k as pass_at_k
    from ttc.scoring.pass_k import pass_at_k_curve as pass_at_k_curve
    from ttc.scoring.prm import ArithmeticPRM as ArithmeticPRM
    from ttc.scoring.prm import ProcessRewardModel as ProcessRewardModel
    from ttc.scoring.prm import aggregate as aggregate
    from ttc.scoring.prm_hf import MathShepherdPRM as MathShepherdPRM
    from ttc.scoring.prm_hf import QwenPRM as QwenPRM
    from ttc.scoring.prm_hf import RLHFlowPRM as RLHFlowPRM
    from ttc.scoring.prm_hf import TransformersPRM as TransformersPRM
    from ttc.scoring.prm_trained import HiddenStatePRM as HiddenStatePRM
    from ttc.scoring.prm_trained import StepwisePRM as StepwisePRM
    from ttc.scoring.prm_vllm import VLLMPoolingPRM as VLLMPoolingPRM
    from ttc.scoring.prm_vllm import VLLMStepwisePRM as VLLMStepwisePRM
    from ttc.scoring.selectors import Argmax as Argmax
    from ttc.scoring.selectors import FirstVerified as FirstVerified
    from ttc.scoring.selectors import MajorityVote as MajorityVote
    from ttc.scoring.selectors import WeightedMajority as WeightedMajority
    from ttc.scoring.smt import SMTCheck as SMTCheck
    from ttc.scoring.step_judge import StepJudge as StepJudge
    from ttc.scoring.unit_tests import UnitTestReport as UnitTestReport
    from ttc.scoring.unit_tests import UnitTests as UnitTests
    from ttc.scoring.unit_tests import extract_code as extract_code
    from ttc.scoring.verifiers import FunctionScorer as FunctionScorer
    from ttc.scoring.verifiers import FunctionVerifier as FunctionVerifier
    from ttc.scoring.verifiers import GSM8KAnswer as GSM8KAnswer
    from ttc.scoring.verifiers import MathAnswer as MathAnswer
    from ttc.scoring.verifiers import Regex as Regex
    from ttc.scoring.verifiers import as_scorer as as_scorer
    from ttc.scoring.verifiers import as_verifier as as_verifier
