"""The runtime around every adapter: budgets, pricing, retries, rate limits, caches, run
scopes."""

from ttc.runtime.budget import Budget, Charge, Ledger
from ttc.runtime.cache import MemoryCache, ResponseCache, SQLiteCache
from ttc.runtime.context import RunContext, current_run, run_scope
from ttc.runtime.model import Capabilities, Model, RawResponse
from ttc.runtime.pricing import Price, lookup_price, register_price
from ttc.runtime.ratelimit import RateLimiter, RateLimitInfo, parse_rate_limit_headers
from ttc.runtime.retry import RetryPolicy
from ttc.runtime.sync import run_sync

__all__ = [
    "Budget",
    "Capabilities",
    "Charge",
    "Ledger",
    "MemoryCache",
    "Model",
    "Price",
    "RateLimitInfo",
    "RateLimiter",
    "RawResponse",
    "ResponseCache",
    "RetryPolicy",
    "RunContext",
    "SQLiteCache",
    "current_run",
    "lookup_price",
    "parse_rate_limit_headers",
    "register_price",
    "run_scope",
    "run_sync",
]
