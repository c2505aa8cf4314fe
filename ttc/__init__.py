"""ttc: spend more inference on a question to get a better answer.

    from ttc import Budget, SelfConsistency
    from ttc.adapters import OpenAI

    model = OpenAI("gpt-4o-mini", budget=Budget(usd=0.50))
    result = await SelfConsistency(model, n=16).run("What is 17 * 23?")

Names are loaded on first use, so ``import ttc`` stays cheap and imports no heavy dependency.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # strategies
    "Strategy": "ttc.strategies.base",
    "RepeatedSample": "ttc.strategies.repeated_sample",
    "BestOfN": "ttc.strategies.best_of_n",
    "SelfConsistency": "ttc.strategies.best_of_n",
    "AdaptiveConsistency": "ttc.strategies.adaptive_consistency",
    "AdaptiveAllocation": "ttc.strategies.allocation",
    "ComputeOptimal": "ttc.strategies.compute_optimal",
    "Policy": "ttc.strategies.compute_optimal",
    "BeamPRM": "ttc.strategies.beam_prm",
    "Lookahead": "ttc.strategies.lookahead",
    "DVTS": "ttc.strategies.dvts",
    # runtime
    "Model": "ttc.runtime.model",
    "Capabilities": "ttc.runtime.model",
    "Budget": "ttc.runtime.budget",
    "Price": "ttc.runtime.pricing",
    "register_price": "ttc.runtime.pricing",
    "RetryPolicy": "ttc.runtime.retry",
    "MemoryCache": "ttc.runtime.cache",
    "SQLiteCache": "ttc.runtime.cache",
    "run_scope": "ttc.runtime.context",
    "run_sync": "ttc.runtime.sync",
    "Fallback": "ttc.runtime.fallback",
    "Router": "ttc.runtime.fallback",
    "instrument": "ttc.runtime.tracing",
    "uninstrument": "ttc.runtime.tracing",
    # types
    "Message": "ttc.types",
    "Prompt": "ttc.types",
    "SamplingParams": "ttc.types",
    "GenerateRequest": "ttc.types",
    "Completion": "ttc.types",
    "Usage": "ttc.types",
    "Candidate": "ttc.types",
    "Result": "ttc.types",
    # metrics
    "pass_at_k": "ttc.eval.metrics",
    # errors
    "TTCError": "ttc.errors",
    "ConfigError": "ttc.errors",
    "PromptError": "ttc.errors",
    "BudgetExceeded": "ttc.errors",
    "ProviderError": "ttc.errors",
    "GenerationError": "ttc.errors",
    "MissingDependencyError": "ttc.errors",
}

__all__ = [
    "DVTS",
    "AdaptiveAllocation",
    "AdaptiveConsistency",
    "BeamPRM",
    "BestOfN",
    "Budget",
    "BudgetExceeded",
    "Candidate",
    "Capabilities",
    "Completion",
    "ComputeOptimal",
    "ConfigError",
    "Fallback",
    "GenerateRequest",
    "GenerationError",
    "Lookahead",
    "MemoryCache",
    "Message",
    "MissingDependencyError",
    "Model",
    "Policy",
    "Price",
    "Prompt",
    "PromptError",
    "ProviderError",
    "RepeatedSample",
    "Result",
    "RetryPolicy",
    "Router",
    "SQLiteCache",
    "SamplingParams",
    "SelfConsistency",
    "Strategy",
    "TTCError",
    "Usage",
    "instrument",
    "pass_at_k",
    "register_price",
    "run_scope",
    "run_sync",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ttc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from ttc.errors import (
        BudgetExceeded,
        ConfigError,
        GenerationError,
        MissingDependencyError,
        PromptError,
        ProviderError,
        TTCError,
    )
    from ttc.eval.metrics import pass_at_k
    from ttc.runtime.budget import Budget
    from ttc.runtime.cache import MemoryCache, SQLiteCache
    from ttc.runtime.context import run_scope
    from ttc.runtime.fallback import Fallback, Router
    from ttc.runtime.model import Capabilities, Model
    from ttc.runtime.pricing import Price, register_price
    from ttc.runtime.retry import RetryPolicy
    from ttc.runtime.sync import run_sync
    from ttc.runtime.tracing import instrument, uninstrument
    from ttc.strategies.adaptive_consistency import AdaptiveConsistency
    from ttc.strategies.allocation import AdaptiveAllocation
    from ttc.strategies.base import Strategy
    from ttc.strategies.beam_prm import BeamPRM
    from ttc.strategies.best_of_n import BestOfN, SelfConsistency
    from ttc.strategies.compute_optimal import ComputeOptimal, Policy
    from ttc.strategies.dvts import DVTS
    from ttc.strategies.lookahead import Lookahead
    from ttc.strategies.repeated_sample import RepeatedSample
    from ttc.types import (
        Candidate,
        Completion,
        GenerateRequest,
        Message,
        Prompt,
        Result,
        SamplingParams,
        Usage,
    )
