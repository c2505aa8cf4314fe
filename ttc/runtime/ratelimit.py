"""Requests-per-minute and tokens-per-minute limits, set by the user or learned from headers.

Two token buckets (requests, tokens) that refill continuously, plus a pause that a 429's
``retry-after`` or an exhausted ``x-ratelimit-remaining-*`` header imposes on every request of
the provider, so one rate-limited request does not turn into a stampede of them.
"""

from __future__ import annotations

import math
import re
import time
from typing import NamedTuple

import anyio

from ttc.errors import ConfigError
from ttc.runtime import tracing


class RateLimitInfo(NamedTuple):
    """What a provider's rate-limit headers said (``None`` where a header was absent). Reset
    times are read only for a count that is used up: nothing else needs them. A named tuple:
    one is made per response."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str) -> float | None:
    """Seconds in ``"2m59.56s"``, ``"7.66s"``, ``"120ms"``, ``"1h2m"`` or a bare ``"0.5"``."""
    value = value.strip()
    if value[-1:] == "s" and value[-2:] != "ms" and "m" not in value and "h" not in value:
        value = value[:-1]  # the common "7.66s"
    try:
        return float(value)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            return None
        number, unit = float(match.group(1)), match.group(2)
        total += number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = match.end()
    return total if pos == len(value) and pos > 0 else None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)  # the common spelling: no float on every response
    except ValueError:
        pass
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # not a number, or "inf"
        return None


def _seconds(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


def parse_rate_limit_headers(headers: dict[str, str] | object) -> RateLimitInfo | None:
    """Read OpenAI/Groq-style (``x-ratelimit-remaining-tokens``) or Cerebras-style
    (``x-ratelimit-remaining-tokens-minute``) headers. Daily request limits are reported as
    such; only minute-scale windows matter for pacing.
    """
    get = getattr(headers, "get", None)
    if get is None:
        return None
    suffix = ""  # OpenAI/Groq
    remaining_tokens = get("x-ratelimit-remaining-tokens")
    remaining_requests = get("x-ratelimit-remaining-requests")
    if remaining_tokens is None and remaining_requests is None:
        suffix = "-minute"  # Cerebras: tokens per minute, requests per day
        remaining_tokens = get("x-ratelimit-remaining-tokens-minute")
        remaining_requests = get("x-ratelimit-remaining-requests-day")
        if remaining_tokens is None and remaining_requests is None:
            return None
    requests_suffix = "-day" if suffix else ""
    tokens_left = _int(remaining_tokens)
    requests_left = _int(remaining_requests)
    # Reset times matter only once something is used up: parsed then, not on every response.
    return RateLimitInfo(
        limit_requests=_int(get("x-ratelimit-limit-requests" + requests_suffix)),
        limit_tokens=_int(get("x-ratelimit-limit-tokens" + suffix)),
        remaining_requests=requests_left,
        remaining_tokens=tokens_left,
        reset_requests_s=(
            _seconds(get("x-ratelimit-reset-requests" + requests_suffix))
            if requests_left is not None and requests_left <= 0
            else None
        ),
        reset_tokens_s=(
            _seconds(get("x-ratelimit-reset-tokens" + suffix))
            if tokens_left is not None and tokens_left <= 0
            else None
        ),
    )


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0
        self.updated = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        # A request bigger than the bucket is let through once the bucket is full.
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class RateLimiter:
    """Paces one provider's requests. Without limits and pauses it costs one comparison."""

    def __init__(self, rpm: int | None = None, tpm: int | None = None, max_pause: float = 60.0):
        if rpm is not None and rpm <= 0:
            raise ConfigError("rpm must be a positive number of requests per minute")
        if tpm is not None and tpm <= 0:
            raise ConfigError("tpm must be a positive number of tokens per minute")
        self._requests = _Bucket(rpm) if rpm else None
        self._tokens = _Bucket(tpm) if tpm else None
        self._user_tpm = tpm is not None
        self._paused_until = 0.0
        self._max_pause = max_pause

    @property
    def active(self) -> bool:
        """Whether any limit or pause is in force (else ``acquire`` returns at once)."""
        return (
            self._requests is not None
            or self._tokens is not None
            or self._paused_until > time.monotonic()
        )

    def headroom(self, tokens: int) -> float:
        """How many requests of up to ``tokens`` tokens could go out now without waiting:
        ``inf`` without limits, 0 while paused. A ``Router`` spreads samples by it."""
        now = time.monotonic()
        if self._paused_until > now:
            return 0.0
        room = math.inf
        for bucket, each in ((self._requests, 1), (self._tokens, max(tokens, 1))):
            if bucket is not None:
                bucket.refill(now)
                room = min(room, max(bucket.level, 0.0) / min(each, bucket.capacity))
        return room

    def try_acquire(self, tokens: int) -> bool:
        """Take one request's share now if it is free; ``False`` means ``acquire`` must wait.
        Called on every request: written out rather than looped."""
        requests, token_bucket = self._requests, self._tokens
        if requests is None and token_bucket is None and not self._paused_until:
            return True
        now = time.monotonic()
        if self._paused_until > now:
            return False
        if requests is not None:
            requests.refill(now)
            if requests.wait_for(1) > 0:
                return False
        if token_bucket is not None:
            token_bucket.refill(now)
            if token_bucket.wait_for(tokens) > 0:
                return False
        self._take(tokens)
        return True

    def _take(self, tokens: int) -> None:
        """Take one request's share from the buckets (after checking that it fits)."""
        if self._requests is not None:
            self._requests.level -= 1
        if self._tokens is not None:
            self._tokens.level -= min(tokens, self._tokens.capacity)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of up to ``tokens`` tokens may go out, then take its share.

        No lock: checking and taking happen without an ``await`` in between, so they are
        atomic on the event loop, and the limiter works from any loop (``run_sync``).
        """
        if not self.active:
            return
        began = None
        while True:
            now = time.monotonic()
            wait = self._paused_until - now
            for bucket, amount in ((self._requests, 1), (self._tokens, tokens)):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait_for(amount))
            if wait <= 0:
                self._take(tokens)
                if began is not None and tracing.active is not None:
                    tracing.note_rate_limit_wait(now - began)
                return
            began = now if began is None else began
            await anyio.sleep(wait)

    def refund(self, tokens: int) -> None:
        """Give back tokens taken for a worst case that did not happen."""
        if self._tokens is not None and tokens > 0:
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + tokens)

    def pause(self, seconds: float) -> None:
        """Hold every request of this provider for ``seconds`` (capped at ``max_pause``)."""
        if seconds > 0:
            until = time.monotonic() + min(seconds, self._max_pause)
            self._paused_until = max(self._paused_until, until)

    def observe(self, info: RateLimitInfo) -> None:
        """Learn from a response's headers: adopt the provider's tokens-per-minute limit if
        the user set none, track what is left, and pause when nothing is."""
        now = time.monotonic()
        limit = info.limit_tokens
        changed = self._tokens is None or self._tokens.capacity != limit
        if limit and not self._user_tpm and changed:
            self._tokens = _Bucket(limit)
        if self._tokens is not None and info.remaining_tokens is not None:
            self._tokens.refill(now)
            self._tokens.level = min(self._tokens.level, float(info.remaining_tokens))
        if info.remaining_tokens is not None and info.remaining_tokens <= 0:
            self.pause(info.reset_tokens_s or 1.0)
        if info.remaining_requests is not None and info.remaining_requests <= 0:
            reset = info.reset_requests_s
            if reset is not None and reset <= self._max_pause:
                self.pause(reset)
