"""Response caches: a repeated request answered from memory or disk instead of the provider.

A cache is given to a model (``Groq(..., cache=MemoryCache())``) and consulted by the runtime
before anything is reserved or sent; a hit costs no request, no tokens and no budget. Only
requests whose answer is reproducible are cached by default: greedy ones (temperature 0) and
seeded ones (each fanned-out sample has its own seed, so each is its own entry). Caching
unseeded samples would hand the same "random" samples back to every later request and quietly
break repeated sampling, so it needs ``sampled=True`` (to replay an experiment exactly, say).

The key is a hash of everything that shapes the answer: the model's identity (provider, model,
and for HTTP adapters the server and endpoint and any extra request fields), the prompt, every
sampling parameter and ``n``. Only complete answers are stored (as many choices as asked for).
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from ttc.errors import ConfigError
from ttc.types import Completion, GenerateRequest
from ttc.validation import check_int

__all__ = ["MemoryCache", "ResponseCache", "SQLiteCache"]

_COMPLETIONS = TypeAdapter(list[Completion])


class ResponseCache(ABC):
    """Where a model keeps the answers of requests it has already paid for.

    Args:
        sampled: also cache requests sampled without a seed (off: see the module's docs).

    ``hits`` and ``misses`` count lookups of cacheable requests.
    """

    def __init__(self, *, sampled: bool = False) -> None:
        self.sampled = sampled
        self.hits = 0
        self.misses = 0

    def key(self, identity: str, request: GenerateRequest, first_sample: int = 0) -> str | None:
        """The entry ``request`` to the model ``identity`` is stored under; ``None`` when the
        request is not cacheable. ``first_sample``: the index of the request's first sample in
        its ``generate`` call, which tells apart the identical requests of a fan-out when they
        are sampled without a seed (seeded ones differ by their seeds already)."""
        params = request.params
        unseeded = params.temperature != 0 and params.seed is None
        if unseeded and not self.sampled:
            return None
        prompt = (
            request.prompt
            if isinstance(request.prompt, str)
            else [m.model_dump(mode="json") for m in request.prompt]
        )
        material = {
            "model": identity,
            "prompt": prompt,
            "params": params.model_dump(mode="json"),
            "n": request.n,
        }
        if unseeded:
            material["sample"] = first_sample
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def lookup(self, key: str) -> list[Completion] | None:
        """The stored completions under ``key``, counting the hit or miss."""
        found = self.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    @abstractmethod
    def get(self, key: str) -> list[Completion] | None:
        """The completions stored under ``key``, or ``None``."""

    @abstractmethod
    def put(self, key: str, completions: list[Completion]) -> None:
        """Store ``completions`` under ``key``."""


class MemoryCache(ResponseCache):
    """A cache in this process: the ``max_entries`` most recently used answers."""

    def __init__(self, max_entries: int = 10_000, *, sampled: bool = False) -> None:
        super().__init__(sampled=sampled)
        self.max_entries: int = check_int("max_entries", max_entries, ge=1)
        self._entries: OrderedDict[str, list[Completion]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> list[Completion] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return list(found)
        return None

    def put(self, key: str, completions: list[Completion]) -> None:
        self._entries[key] = list(completions)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class SQLiteCache(ResponseCache):
    """A cache in an SQLite file, shared by runs and processes (an evaluation rerun after a
    crash, or with another selector, pays only for what it had not asked yet).

    Lookups and writes take well under a millisecond and run on the caller's thread.
    """

    def __init__(self, path: str | Path, *, sampled: bool = False) -> None:
        super().__init__(sampled=sampled)
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise ConfigError(f"path: {str(self.path)!r} is a folder; name a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        import sqlite3  # here: importing the runtime should not load it

        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, completions TEXT)"
        )

    def __repr__(self) -> str:
        return f"SQLiteCache({str(self.path)!r})"

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(count)

    def get(self, key: str) -> list[Completion] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT completions FROM responses WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        try:
            return _COMPLETIONS.validate_json(row[0])
        except ValidationError:  # written by another version: ask the provider again
            return None

    def put(self, key: str, completions: list[Completion]) -> None:
        value = _COMPLETIONS.dump_json(completions).decode()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, completions) VALUES (?, ?)", (key, value)
            )

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()
