"""ttc: spend more inference on a question to get a better answer.

    from ttc import Budget, SelfConsistency
    from ttc.adapters import OpenAI

    model = OpenAI("gpt-4o-mini", budget=Budget(usd=0.50))
    result = await SelfConsistency(model, n=16).run("What is 17 * 23?")

The names most programs need, re-exported from their homes (``ttc.strategies``,
``ttc.runtime``, ``ttc.types``, ``ttc.errors``, ``ttc.eval``) and loaded on first use, so
``import ttc`` stays cheap and imports no heavy dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

__version__ = "0.1.0"

export(
    globals(),
    {
        "ttc.strategies": (
            "Strategy",
            "RepeatedSample",
            "BestOfN",
            "SelfConsistency",
            "AdaptiveConsistency",
            "AdaptiveAllocation",
            "ComputeOptimal",
            "Policy",
            "BeamPRM",
            "Lookahead",
            "DVTS",
        ),
        "ttc.runtime": (
            "Model",
            "Capabilities",
            "Budget",
            "Price",
            "register_price",
            "RetryPolicy",
            "MemoryCache",
            "SQLiteCache",
            "run_scope",
            "run_sync",
            "Fallback",
            "Router",
            "instrument",
            "uninstrument",
        ),
        "ttc.types": (
            "Message",
            "Prompt",
            "SamplingParams",
            "GenerateRequest",
            "Completion",
            "Usage",
            "Candidate",
            "Result",
            "BudgetStop",
            "Routing",
        ),
        "ttc.scoring": ("pass_at_k",),
        "ttc.errors": (
            "TTCError",
            "ConfigError",
            "PromptError",
            "BudgetExceeded",
            "ProviderError",
            "GenerationError",
            "MissingDependencyError",
        ),
    },
)

if TYPE_CHECKING:
    from ttc.errors import BudgetExceeded as BudgetExceeded
    from ttc.errors import ConfigError as ConfigError
    from ttc.errors import GenerationError as GenerationError
    from ttc.errors import MissingDependencyError as MissingDependencyError
    from ttc.errors import PromptError as PromptError
    from ttc.errors import ProviderError as ProviderError
    from ttc.errors import TTCError as TTCError
    from ttc.runtime import Budget as Budget
    from ttc.runtime import Capabilities as Capabilities
    from ttc.runtime import Fallback as Fallback
    from ttc.runtime import MemoryCache as MemoryCache
    from ttc.runtime import Model as Model
    from ttc.runtime import Price as Price
    from ttc.runtime import RetryPolicy as RetryPolicy
    from ttc.runtime import Router as Router
    from ttc.runtime import SQLiteCache as SQLiteCache
    from ttc.runtime import instrument as instrument
    from ttc.runtime import register_price as register_price
    from ttc.runtime import run_scope as run_scope
    from ttc.runtime import run_sync as run_sync
    from ttc.runtime import uninstrument as uninstrument
    from ttc.scoring import pass_at_k as pass_at_k
    from ttc.strategies import DVTS as DVTS
    from ttc.strategies import AdaptiveAllocation as AdaptiveAllocation
    from ttc.strategies import AdaptiveConsistency as AdaptiveConsistency
    from ttc.strategies import BeamPRM as BeamPRM
    from ttc.strategies import BestOfN as BestOfN
    from ttc.strategies import ComputeOptimal as ComputeOptimal
    from ttc.strategies import Lookahead as Lookahead
    from ttc.strategies import Policy as Policy
    from ttc.strategies import RepeatedSample as RepeatedSample
    from ttc.strategies import SelfConsistency as SelfConsistency
    from ttc.strategies import Strategy as Strategy
    from ttc.types import BudgetStop as BudgetStop
    from ttc.types import Candidate as Candidate
    from ttc.types import Completion as Completion
    from ttc.types import GenerateRequest as GenerateRequest
    from ttc.types import Message as Message
    from ttc.types import Prompt as Prompt
    from ttc.types import Result as Result
    from ttc.types import Routing as Routing
    from ttc.types import SamplingParams as SamplingParams
    from ttc.types import Usage as Usage
