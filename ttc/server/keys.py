"""API keys and their budgets: a ledger in SQLite (one host) or PostgreSQL (several servers).

A key is ``ttc-`` and 43 random URL-safe characters; only its SHA-256 is stored (a key has 256
bits of entropy, so a fast hash is safe, and lookups stay one indexed read). Each key may have
limits on tokens, USD and requests per period (``day``, ``month`` or ``total``, in UTC).

Budgets work like ttc's own: a request *reserves* before anything is sent (one request, and up
to ``request_tokens`` / ``request_usd`` of what the key has left), runs under a run budget of
exactly what it reserved (so ttc's runtime can never spend more), then *settles* to what its
calls really cost. Check-and-reserve is one database transaction that locks the key's row, so
no two requests, in one process or in several sharing the database, can both pass a limit
that only one of them fits. A server killed between the two keeps the reservation as spent:
the ledger errs towards the limit, never past it.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from ttc.config import KeyLimits
from ttc.errors import ConfigError, TTCError
from ttc.runtime.budget import Budget, Charge

__all__ = [
    "Hold",
    "KeyBudgetExceeded",
    "KeyInfo",
    "KeyStore",
    "SQLiteKeyStore",
    "hash_key",
    "new_key",
    "open_key_store",
    "period_bucket",
]

KEY_PREFIX = "ttc-"


def new_key() -> str:
    """A fresh API key (shown once, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    """What the ledger stores for a key."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def period_bucket(period: str, now: float | None = None) -> str:
    """The ledger row a spend in ``period`` goes to: ``day:2026-12-03``, ``month:2026-12``
    or ``total`` (UTC)."""
    if period == "total":
        return "total"
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return f"day:{moment:%Y-%m-%d}" if period == "day" else f"month:{moment:%Y-%m}"


@dataclass(frozen=True)
class KeyInfo:
    """A key as the ledger knows it (never the secret)."""

    id: int
    name: str
    limits: KeyLimits
    created: float
    revoked: bool = False


@dataclass(frozen=True)
class Hold:
    """A reservation: what it holds, in which period's row, and the run budget it allows."""

    key: KeyInfo
    bucket: str
    reserved: Charge

    def budget(self) -> Budget | None:
        """The run budget that keeps the request within what it reserved."""
        limits = self.key.limits
        if limits.tokens is None and limits.usd is None:
            return None
        return Budget(
            tokens=self.reserved.tokens if limits.tokens is not None else None,
            usd=self.reserved.usd if limits.usd is not None else None,
        )


class KeyBudgetExceeded(TTCError):
    """A key has no budget left for another request (the server answers 429)."""

    def __init__(
        self, key: KeyInfo, limit: str, spent: float, bucket: str, pending: bool = False
    ) -> None:
        value = getattr(key.limits, limit)
        period = {"total": "in total", "day": "today", "month": "this month"}[key.limits.period]
        resets = (
            ""
            if bucket == "total"
            else f"; it resets at the start of the next {key.limits.period} (UTC)"
        )
        super().__init__(
            f"API key {key.name!r} is over its {limit} budget {period}: "
            f"{spent:g} of {value:g} used or reserved{resets}"
        )
        self.key = key
        self.limit = limit
        #: Whether requests in flight hold part of the limit: their settlements may give
        #: back enough (the server then waits rather than refusing at once).
        self.pending = pending


def grant(key: KeyInfo, spent: Charge, reserved: Charge, caps: Charge, bucket: str) -> Charge:
    """What a request may reserve given the key's limits and what its period has used
    (``spent``, reservations included; ``reserved``, those alone): one request, and up to
    ``caps`` of the tokens and USD left; ``KeyBudgetExceeded`` when nothing is left of a
    limit."""
    limits = key.limits

    def over(limit: str) -> KeyBudgetExceeded:
        held = getattr(reserved, limit) > 0
        return KeyBudgetExceeded(key, limit, getattr(spent, limit), bucket, pending=held)

    if limits.requests is not None and spent.requests + 1 > limits.requests:
        raise over("requests")
    tokens = 0
    if limits.tokens is not None:
        left = limits.tokens - spent.tokens
        if left <= 0:
            raise over("tokens")
        tokens = min(left, caps.tokens)
    usd = 0.0
    if limits.usd is not None:
        left_usd = limits.usd - spent.usd
        if left_usd <= 1e-12:
            raise over("usd")
        usd = min(left_usd, caps.usd)
    return Charge(tokens=tokens, usd=usd, requests=1)


class KeyStore(ABC):
    """The keys and what each has spent. Every method is safe to call concurrently."""

    @abstractmethod
    async def create(self, name: str, limits: KeyLimits | None = None) -> tuple[KeyInfo, str]:
        """A new key named ``name`` (unique): its record and the secret, shown once."""

    @abstractmethod
    async def lookup(self, secret: str) -> KeyInfo | None:
        """The key whose secret this is, unless unknown or revoked."""

    @abstractmethod
    async def get(self, name: str) -> KeyInfo | None:
        """The key named ``name`` (revoked ones included)."""

    @abstractmethod
    async def list(self) -> list[KeyInfo]:
        """Every key, oldest first."""

    @abstractmethod
    async def revoke(self, name: str) -> bool:
        """Revoke the key ``name``; whether there was one to revoke."""

    @abstractmethod
    async def reserve(self, key: KeyInfo, caps: Charge) -> Hold:
        """Reserve what one request may spend (see ``grant``), atomically."""

    @abstractmethod
    async def settle(self, hold: Hold, actual: Charge) -> Charge:
        """Replace the reservation by what the request really cost; returns what the key's
        period (the reservation's) has spent and reserved now."""

    @abstractmethod
    async def spent(self, key: KeyInfo) -> Charge:
        """Spent and reserved in the key's current period."""

    @abstractmethod
    async def check(self) -> None:
        """Raise if the database cannot be reached (readiness)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the database."""

    def remaining(self, key: KeyInfo, spent: Charge) -> dict[str, float]:
        """What the key has left of each limit it has."""
        out: dict[str, float] = {}
        for limit in ("tokens", "usd", "requests"):
            value = getattr(key.limits, limit)
            if value is not None:
                out[limit] = max(0.0, float(value) - float(getattr(spent, limit)))
        return out


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ConfigError(f"key name: a non-empty name is required, got {name!r}")
    return name.strip()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS spend (
    key_id INTEGER NOT NULL REFERENCES keys(id),
    bucket TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    r_tokens INTEGER NOT NULL DEFAULT 0,
    r_usd REAL NOT NULL DEFAULT 0,
    r_requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, bucket)
);
"""


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=int(row[0]),
        name=str(row[1]),
        limits=KeyLimits.model_validate_json(row[2]),
        created=float(row[3]),
        revoked=bool(row[4]),
    )


#: Seconds a ledger call waits for another process's write lock on a SQLite ledger.
BUSY_WAIT = 30.0


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteKeyStore(KeyStore):
    """The ledger in one SQLite file (WAL): survives restarts; several processes on one host
    may share it (``BEGIN IMMEDIATE`` serializes their reservations)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Durable across a crash or restart of the server (WAL); a power loss may lose the
            # last transactions' writes, which is a few milliseconds of spending.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            # Busy at once (see _run): another process's write lock is waited for off the loop.
            self._db.execute("PRAGMA busy_timeout=0")

    async def _run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the connection. Uncontended (the common case) it runs right here,
        without a thread hop (a WAL transaction takes tens of microseconds); when another
        call holds the connection, or another process the database's write lock, a worker
        thread waits for it (up to ``BUSY_WAIT`` seconds)."""
        if self._lock.acquire(blocking=False):
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            finally:
                self._lock.release()
        return await anyio.to_thread.run_sync(self._call_waiting, fn, args)

    def _call_waiting(self, fn: Any, args: tuple[Any, ...]) -> Any:
        deadline = time.monotonic() + BUSY_WAIT
        delay = 0.001
        while True:
            with self._lock:
                try:
                    return fn(*args)
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _transaction(self, fn: Any, *args: Any) -> Any:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(*args)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return out

    async def create(self, name: str, limits: KeyLimits | None = None) -> tuple[KeyInfo, str]:
        name = _check_name(name)
        secret = new_key()
        limits = limits or KeyLimits()

        def insert() -> KeyInfo:
            try:
                cursor = self._db.execute(
                    "INSERT INTO keys (name, hash, limits, created) VALUES (?, ?, ?, ?)",
                    (name, hash_key(secret), limits.model_dump_json(), time.time()),
                )
            except sqlite3.IntegrityError:
                raise ConfigError(f"key name: a key named {name!r} exists already") from None
            row = self._db.execute(
                "SELECT id, name, limits, created, revoked FROM keys WHERE id = ?",
                (cursor.lastrowid,),
            ).fetchone()
            return _info(row)

        return await self._run(insert), secret

    async def lookup(self, secret: str) -> KeyInfo | None:
        row = await self._run(
            lambda: self._db.execute(
                "SELECT id, name, limits, created, revoked FROM keys WHERE hash = ?",
                (hash_key(secret),),
            ).fetchone()
        )
        if row is None or row[4]:
            return None
        return _info(row)

    async def get(self, name: str) -> KeyInfo | None:
        row = await self._run(
            lambda: self._db.execute(
                "SELECT id, name, limits, created, revoked FROM keys WHERE name = ?", (name,)
            ).fetchone()
        )
        return _info(row) if row is not None else None

    async def list(self) -> list[KeyInfo]:
        rows = await self._run(
            lambda: self._db.execute(
                "SELECT id, name, limits, created, revoked FROM keys ORDER BY id"
            ).fetchall()
        )
        return [_info(row) for row in rows]

    async def revoke(self, name: str) -> bool:
        cursor = await self._run(
            lambda: self._db.execute("UPDATE keys SET revoked = 1 WHERE name = ?", (name,))
        )
        return bool(cursor.rowcount)

    async def reserve(self, key: KeyInfo, caps: Charge) -> Hold:
        bucket = period_bucket(key.limits.period)

        def take() -> Hold:
            self._db.execute(
                "INSERT OR IGNORE INTO spend (key_id, bucket) VALUES (?, ?)", (key.id, bucket)
            )
            row = self._db.execute(
                "SELECT tokens, usd, requests, r_tokens, r_usd, r_requests FROM spend "
                "WHERE key_id = ? AND bucket = ?",
                (key.id, bucket),
            ).fetchone()
            spent = Charge(int(row[0]), float(row[1]), int(row[2]))
            reserved = Charge(int(row[3]), float(row[4]), int(row[5]))
            amount = grant(key, spent, reserved, caps, bucket)
            self._db.execute(
                "UPDATE spend SET tokens = tokens + ?, usd = usd + ?, requests = requests + ?, "
                "r_tokens = r_tokens + ?, r_usd = r_usd + ?, r_requests = r_requests + ? "
                "WHERE key_id = ? AND bucket = ?",
                (*_row(amount), *_row(amount), key.id, bucket),
            )
            return Hold(key, bucket, amount)

        hold: Hold = await self._run(self._transaction, take)
        return hold

    async def settle(self, hold: Hold, actual: Charge) -> Charge:
        delta = _delta(hold, actual)

        def update() -> Charge:
            self._db.execute(
                "UPDATE spend SET tokens = tokens + ?, usd = usd + ?, requests = requests + ?, "
                "r_tokens = r_tokens - ?, r_usd = r_usd - ?, r_requests = r_requests - ? "
                "WHERE key_id = ? AND bucket = ?",
                (*delta, *_row(hold.reserved), hold.key.id, hold.bucket),
            )
            row = self._db.execute(
                "SELECT tokens, usd, requests FROM spend WHERE key_id = ? AND bucket = ?",
                (hold.key.id, hold.bucket),
            ).fetchone()
            return Charge(int(row[0]), float(row[1]), int(row[2]))

        spent: Charge = await self._run(update)
        return spent

    async def spent(self, key: KeyInfo) -> Charge:
        bucket = period_bucket(key.limits.period)
        row = await self._run(
            lambda: self._db.execute(
                "SELECT tokens, usd, requests FROM spend WHERE key_id = ? AND bucket = ?",
                (key.id, bucket),
            ).fetchone()
        )
        return Charge(int(row[0]), float(row[1]), int(row[2])) if row else Charge()

    async def check(self) -> None:
        await self._run(lambda: self._db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(charge: Charge) -> tuple[int, float, int]:
    """The tokens, USD and requests a key's row keeps (a ``Charge`` holds more)."""
    return charge.tokens, charge.usd, charge.requests


def _delta(hold: Hold, actual: Charge) -> tuple[int, float, int]:
    """What settling adds to the row: the actual cost minus the reservation."""
    return (
        actual.tokens - hold.reserved.tokens,
        actual.usd - hold.reserved.usd,
        actual.requests - hold.reserved.requests,
    )


def open_key_store(database: str) -> KeyStore:
    """The ledger at ``database``: a ``postgresql://`` DSN (the ``server`` extra's asyncpg),
    else a SQLite file path (``sqlite:///path`` also accepted)."""
    if database.startswith(("postgres://", "postgresql://")):
        from ttc.server.keys_pg import PostgresKeyStore

        return PostgresKeyStore(database)
    path = database.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        raise ConfigError("server.keys_db: a SQLite file path or a postgresql:// DSN is required")
    return SQLiteKeyStore(path)
