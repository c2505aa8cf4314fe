"""The runtime around every adapter: budgets, pricing, retries, rate limits, caches, run
scopes.

Names load on first use. What an adapter's implementation needs beyond these (``RawResponse``,
``Charge``, header parsing) is imported from its module (``ttc.runtime.model``...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ttc._exports import export

export(
    globals(),
    {
        "ttc.runtime.model": ("Model", "Capabilities"),
        "ttc.runtime.budget": ("Budget", "Ledger"),
        "ttc.runtime.pricing": ("Price", "lookup_price", "register_price"),
        "ttc.runtime.retry": ("RetryPolicy",),
        "ttc.runtime.ratelimit": ("RateLimiter", "RateLimitInfo"),
        "ttc.runtime.cache": ("ResponseCache", "MemoryCache", "SQLiteCache"),
        "ttc.runtime.context": ("RunContext", "current_run", "run_scope"),
        "ttc.runtime.sync": ("run_sync",),
        "ttc.runtime.fallback": ("Fallback", "Router"),
        "ttc.runtime.tracing": ("instrument", "uninstrument"),
    },
)

if TYPE_CHECKING:
    from ttc.runtime.budget import Budget as Budget
    from ttc.runtime.budget import Ledger as Ledger
    from ttc.runtime.cache import MemoryCache as MemoryCache
    from ttc.runtime.cache import ResponseCache as ResponseCache
    from ttc.runtime.cache import SQLiteCache as SQLiteCache
    from ttc.runtime.context import RunContext as RunContext
    from ttc.runtime.context import current_run as current_run
    from ttc.runtime.context import run_scope as run_scope
    from ttc.runtime.fallback import Fallback as Fallback
    from ttc.runtime.fallback import Router as Router
    from ttc.runtime.model import Capabilities as Capabilities
    from ttc.runtime.model import Model as Model
    from ttc.runtime.pricing import Price as Price
    from ttc.runtime.pricing import lookup_price as lookup_price
    from ttc.runtime.pricing import register_price as register_price
    from ttc.runtime.ratelimit import RateLimiter as RateLimiter
    from ttc.runtime.ratelimit import RateLimitInfo as RateLimitInfo
    from ttc.runtime.retry import RetryPolicy as RetryPolicy
    from ttc.runtime.sync import run_sync as run_sync
    from ttc.runtime.tracing import instrument as instrument
    from ttc.runtime.tracing import uninstrument as uninstrument
