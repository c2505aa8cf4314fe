"""Strategies: small objects with ``async run(prompt) -> Result`` that compose.

Names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

export(
    globals(),
    {
        "ttc.strategies.base": ("Strategy",),
        "ttc.strategies.repeated_sample": ("RepeatedSample",),
        "ttc.strategies.best_of_n": ("BestOfN", "SelfConsistency"),
        "ttc.strategies.adaptive_consistency": ("AdaptiveConsistency",),
        "ttc.strategies.allocation": ("AdaptiveAllocation",),
        "ttc.strategies.compute_optimal": ("ComputeOptimal", "Policy", "Bin"),
        "ttc.strategies.beam_prm": ("BeamPRM",),
        "ttc.strategies.lookahead": ("Lookahead",),
        "ttc.strategies.dvts": ("DVTS",),
        "ttc.strategies.steps": ("StepFormat",),
    },
)

if TYPE_CHECKING:
    from ttc.strategies.adaptive_consistency import AdaptiveConsistency as AdaptiveConsistency
    from ttc.strategies.allocation import AdaptiveAllocation as AdaptiveAllocation
    from ttc.strategies.base import Strategy as Strategy
    from ttc.strategies.beam_prm import BeamPRM as BeamPRM
    from ttc.strategies.best_of_n import BestOfN as BestOfN
    from ttc.strategies.best_of_n import SelfConsistency as SelfConsistency
    from ttc.strategies.compute_optimal import Bin as Bin
    from ttc.strategies.compute_optimal import ComputeOptimal as ComputeOptimal
    from ttc.strategies.compute_optimal import Policy as Policy
    from ttc.strategies.dvts import DVTS as DVTS
    from ttc.strategies.lookahead import Lookahead as Lookahead
    from ttc.strategies.repeated_sample import RepeatedSample as RepeatedSample
    from ttc.strategies.steps import StepFormat as StepFormat
