"""Evaluation metrics for repeated sampling."""

from ttc.eval.metrics import coverage, pass_at_k, pass_at_k_curve

__all__ = ["coverage", "pass_at_k", "pass_at_k_curve"]
