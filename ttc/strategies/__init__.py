"""Strategies: small objects with ``async run(prompt) -> Result`` that compose."""

from ttc.strategies.adaptive_consistency import AdaptiveConsistency
from ttc.strategies.allocation import AdaptiveAllocation
from ttc.strategies.base import Strategy
from ttc.strategies.beam_prm import BeamPRM
from ttc.strategies.best_of_n import BestOfN, SelfConsistency
from ttc.strategies.compute_optimal import Bin, ComputeOptimal, Policy
from ttc.strategies.dvts import DVTS
from ttc.strategies.lookahead import Lookahead
from ttc.strategies.repeated_sample import RepeatedSample
from ttc.strategies.steps import StepFormat

__all__ = [
    "DVTS",
    "AdaptiveAllocation",
    "AdaptiveConsistency",
    "BeamPRM",
    "BestOfN",
    "Bin",
    "ComputeOptimal",
    "Lookahead",
    "Policy",
    "RepeatedSample",
    "SelfConsistency",
    "StepFormat",
    "Strategy",
]
