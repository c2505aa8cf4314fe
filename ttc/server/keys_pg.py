"""The keys' ledger in PostgreSQL, shared by several server processes (asyncpg, the ``server``
extra). A reservation locks the key's period row (``SELECT ... FOR UPDATE``) for its check and
update, so reservations of every process are serialized per key and never pass a limit."""

from __future__ import annotations

import time
from typing import Any

import anyio

from ttc.config import KeyLimits
from ttc.errors import ConfigError, MissingDependencyError
from ttc.runtime.budget import Charge
from ttc.server.keys import (
    Hold,
    KeyInfo,
    KeyStore,
    _check_name,
    _delta,
    grant,
    hash_key,
    new_key,
    period_bucket,
)

__all__ = ["PostgresKeyStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ttc_keys (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS ttc_spend (
    key_id BIGINT NOT NULL REFERENCES ttc_keys(id),
    bucket TEXT NOT NULL,
    tokens BIGINT NOT NULL DEFAULT 0,
    usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    r_tokens BIGINT NOT NULL DEFAULT 0,
    r_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    r_requests BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, bucket)
);
"""
_COLUMNS = "id, name, limits, created, revoked"
# Serializes schema creation when several servers start at once.
_SCHEMA_LOCK = 7_170_017


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=int(row["id"]),
        name=str(row["name"]),
        limits=KeyLimits.model_validate_json(row["limits"]),
        created=float(row["created"]),
        revoked=bool(row["revoked"]),
    )


class PostgresKeyStore(KeyStore):
    """The ledger in PostgreSQL at ``dsn``; the pool opens on first use."""

    def __init__(self, dsn: str, *, pool_size: int = 10) -> None:
        try:
            import asyncpg
        except ImportError:
            raise MissingDependencyError(
                "asyncpg", "server", "a PostgreSQL keys database"
            ) from None
        self._asyncpg = asyncpg
        self.dsn = dsn
        self.pool_size = pool_size
        self._pool: Any = None
        self._opening = anyio.Lock()

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    pool = await self._asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=self.pool_size
                    )
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                        await conn.execute(_SCHEMA)
                    self._pool = pool
        return self._pool

    async def create(self, name: str, limits: KeyLimits | None = None) -> tuple[KeyInfo, str]:
        name = _check_name(name)
        secret = new_key()
        limits = limits or KeyLimits()
        pool = await self._get_pool()
        try:
            row = await pool.fetchrow(
                f"INSERT INTO ttc_keys (name, hash, limits, created) VALUES ($1, $2, $3, $4) "
                f"RETURNING {_COLUMNS}",
                name,
                hash_key(secret),
                limits.model_dump_json(),
                time.time(),
            )
        except self._asyncpg.UniqueViolationError:
            raise ConfigError(f"key name: a key named {name!r} exists already") from None
        return _info(row), secret

    async def lookup(self, secret: str) -> KeyInfo | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM ttc_keys WHERE hash = $1", hash_key(secret)
        )
        if row is None or row["revoked"]:
            return None
        return _info(row)

    async def get(self, name: str) -> KeyInfo | None:
        pool = await self._get_pool()
        row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM ttc_keys WHERE name = $1", name)
        return _info(row) if row is not None else None

    async def list(self) -> list[KeyInfo]:
        pool = await self._get_pool()
        rows = await pool.fetch(f"SELECT {_COLUMNS} FROM ttc_keys ORDER BY id")
        return [_info(row) for row in rows]

    async def revoke(self, name: str) -> bool:
        pool = await self._get_pool()
        status = await pool.execute("UPDATE ttc_keys SET revoked = TRUE WHERE name = $1", name)
        return bool(status.endswith(" 1"))

    async def reserve(self, key: KeyInfo, caps: Charge) -> Hold:
        bucket = period_bucket(key.limits.period)
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO ttc_spend (key_id, bucket) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                key.id,
                bucket,
            )
            row = await conn.fetchrow(
                "SELECT tokens, usd, requests, r_tokens, r_usd, r_requests FROM ttc_spend "
                "WHERE key_id = $1 AND bucket = $2 FOR UPDATE",
                key.id,
                bucket,
            )
            spent = Charge(int(row["tokens"]), float(row["usd"]), int(row["requests"]))
            reserved = Charge(int(row["r_tokens"]), float(row["r_usd"]), int(row["r_requests"]))
            amount = grant(key, spent, reserved, caps, bucket)
            await conn.execute(
                "UPDATE ttc_spend SET tokens = tokens + $1, usd = usd + $2, "
                "requests = requests + $3, r_tokens = r_tokens + $1, r_usd = r_usd + $2, "
                "r_requests = r_requests + $3 WHERE key_id = $4 AND bucket = $5",
                amount.tokens,
                amount.usd,
                amount.requests,
                key.id,
                bucket,
            )
        return Hold(key, bucket, amount)

    async def settle(self, hold: Hold, actual: Charge) -> Charge:
        tokens, usd, requests = _delta(hold, actual)
        pool = await self._get_pool()
        row = await pool.fetchrow(
            "UPDATE ttc_spend SET tokens = tokens + $1, usd = usd + $2, requests = requests + $3, "
            "r_tokens = r_tokens - $6, r_usd = r_usd - $7, r_requests = r_requests - $8 "
            "WHERE key_id = $4 AND bucket = $5 RETURNING tokens, usd, requests",
            tokens,
            usd,
            requests,
            hold.key.id,
            hold.bucket,
            hold.reserved.tokens,
            hold.reserved.usd,
            hold.reserved.requests,
        )
        return Charge(int(row["tokens"]), float(row["usd"]), int(row["requests"]))

    async def spent(self, key: KeyInfo) -> Charge:
        pool = await self._get_pool()
        row = await pool.fetchrow(
            "SELECT tokens, usd, requests FROM ttc_spend WHERE key_id = $1 AND bucket = $2",
            key.id,
            period_bucket(key.limits.period),
        )
        if row is None:
            return Charge()
        return Charge(int(row["tokens"]), float(row["usd"]), int(row["requests"]))

    async def check(self) -> None:
        pool = await self._get_pool()
        await pool.fetchval("SELECT 1")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
