"""Strategies: small objects with ``async run(prompt) -> Result`` that compose."""

from ttc.strategies.base import Strategy
from ttc.strategies.best_of_n import BestOfN, SelfConsistency
from ttc.strategies.repeated_sample import RepeatedSample

__all__ = ["BestOfN", "RepeatedSample", "SelfConsistency", "Strategy"]
