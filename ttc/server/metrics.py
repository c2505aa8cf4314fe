"""Prometheus metrics of one server (its own registry, so several apps in one process, as in
tests, keep their counts apart)."""

from __future__ import annotations

from ttc.errors import MissingDependencyError

__all__ = ["Metrics"]


class Metrics:
    """Requests, latency, tokens, cost, strategy runs, upstream calls and budget left per key."""

    def __init__(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError:  # pragma: no cover - the server extra installs it
            raise MissingDependencyError("prometheus_client", "server", "ttc serve") from None
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "ttc_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.latency = prom.Histogram(
            "ttc_request_seconds",
            "Seconds from a request's arrival to its last byte",
            ["endpoint"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.tokens = prom.Counter(
            "ttc_tokens", "Tokens of every upstream call", ["kind"], registry=r
        )
        self.cost = prom.Counter("ttc_cost_usd", "USD of every upstream call", registry=r)
        self.upstream = prom.Counter(
            "ttc_upstream_requests", "Requests sent to models, scorers and PRMs", registry=r
        )
        self.strategies = prom.Counter(
            "ttc_strategy_runs", "Requests served, by strategy", ["strategy"], registry=r
        )
        self.in_flight = prom.Gauge("ttc_requests_in_flight", "Requests being served", registry=r)
        self.remaining = prom.Gauge(
            "ttc_key_budget_remaining",
            "What an API key has left in its current period",
            ["key", "limit"],
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
