"""The results store: one SQLite file a results folder, one row a finished question.

Every question is written (and committed) the moment it finishes, so a crashed or killed run
loses at most the questions in flight, and a rerun skips what is stored. The database is in
WAL mode: a reader (``ttc report`` while an evaluation runs) never blocks the writer, and a
process killed mid-write leaves the file consistent. ``synchronous=NORMAL`` keeps commits cheap;
a committed row survives the process being killed (only a power loss can drop the last ones).

A folder can hold several runs (strategies, models, sample counts), each under its name, so
that reports compare them on one chart. A row keeps the whole ``Result`` as JSON (candidates
with their verdicts, the answer, usage), plus a few columns for quick summaries.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ttc.errors import ConfigError
from ttc.types import Result, Usage

__all__ = ["DB_NAME", "QuestionRecord", "ResultsStore", "RunInfo"]

#: The database's file name inside a results folder.
DB_NAME = "results.sqlite"
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL,
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    level TEXT,
    correct INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    num_correct INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    record TEXT NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (run, id)
);
CREATE TABLE IF NOT EXISTS failures (
    run TEXT NOT NULL,
    id TEXT NOT NULL,
    error TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (run, id)
);
"""


class QuestionRecord(BaseModel):
    """One finished question: where it came from, whether the selected answer is right, and
    the strategy's whole ``Result`` (every candidate with its verdict, votes, usage).

    ``correct`` says whether the selected candidate passed the dataset's verifier; a question
    with no selected answer counts as wrong.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    position: int
    question: str
    reference: str
    level: str | None = None
    subject: str | None = None
    fingerprint: str
    correct: bool
    result: Result

    @property
    def verdicts(self) -> list[bool | None]:
        """Each candidate's verdict, in the order the candidates arrived."""
        return [c.verified for c in self.result.candidates]


@dataclass(frozen=True)
class RunInfo:
    """A run stored in a results folder: its name, the configuration it was made with, and
    how many questions it has finished."""

    name: str
    config: dict[str, Any]
    created: float
    questions: int
    failures: int


class ResultsStore:
    """The SQLite results store of one folder (``DIR/results.sqlite``).

    Open it with a folder (created if missing) or the database file itself. Writes commit at
    once. Use as a context manager, or call ``close``.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        target = Path(path).expanduser()
        is_file = target.suffix in (".sqlite", ".db") or target.is_file()
        db = target if is_file else target / DB_NAME
        if not create and not db.is_file():
            raise ConfigError(f"no results at {target} (expected {db})")
        db.parent.mkdir(parents=True, exist_ok=True)
        self.path = db
        self.folder = db.parent
        try:
            self._db = sqlite3.connect(db, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise ConfigError(
                    f"{db} was written by a newer ttc (results schema {version}); upgrade ttc"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{db} is not a ttc results database: {exc}") from None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (everything is already committed)."""
        self._db.close()

    # ------------------------------------------------------------------ runs

    def open_run(self, name: str, config: Mapping[str, Any], *, resume: bool = True) -> int:
        """Start or continue run ``name``; returns how many questions it has stored.

        With ``resume``, a run stored under the same name must have the same configuration
        (else ``ConfigError`` says which setting differs: pick another name). Without it, the
        run's stored questions are deleted first.
        """
        if not name or not name.strip():
            raise ConfigError("a run needs a non-empty name")
        config_json = json.dumps(dict(config), sort_keys=True, default=str)
        row = self._db.execute("SELECT config FROM runs WHERE name = ?", (name,)).fetchone()
        if row is not None and resume:
            stored = json.loads(row[0])
            wanted = json.loads(config_json)
            differ = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
            if differ:
                key = differ[0]
                raise ConfigError(
                    f"run {name!r} in {self.folder} was made with {key}={stored.get(key)!r}, "
                    f"this one has {key}={wanted.get(key)!r}: give this run another name "
                    "(--name), another folder, or start it over (--no-resume)"
                )
            return self.count(name)
        with self._transaction():
            self._db.execute("DELETE FROM results WHERE run = ?", (name,))
            self._db.execute("DELETE FROM failures WHERE run = ?", (name,))
            self._db.execute(
                "INSERT OR REPLACE INTO runs (name, config, created) VALUES (?, ?, ?)",
                (name, config_json, time.time()),
            )
        return 0

    def runs(self) -> list[RunInfo]:
        """Every run in the folder, oldest first."""
        rows = self._db.execute(
            "SELECT name, config, created,"
            " (SELECT COUNT(*) FROM results r WHERE r.run = runs.name),"
            " (SELECT COUNT(*) FROM failures f WHERE f.run = runs.name)"
            " FROM runs ORDER BY created, name"
        ).fetchall()
        return [RunInfo(r[0], json.loads(r[1]), r[2], r[3], r[4]) for r in rows]

    def run(self, name: str) -> RunInfo:
        """The stored run ``name``; ``ConfigError`` listing the runs if there is none."""
        for info in self.runs():
            if info.name == name:
                return info
        names = ", ".join(i.name for i in self.runs()) or "none"
        raise ConfigError(f"no run named {name!r} in {self.folder} (runs: {names})")

    # ------------------------------------------------------------------ questions

    def count(self, run: str) -> int:
        """How many questions run ``run`` has stored."""
        row = self._db.execute("SELECT COUNT(*) FROM results WHERE run = ?", (run,)).fetchone()
        return int(row[0])

    def fingerprints(self, run: str) -> dict[str, str]:
        """Stored question ids of ``run`` and the fingerprint of the question each was for."""
        rows = self._db.execute("SELECT id, fingerprint FROM results WHERE run = ?", (run,))
        return {str(r[0]): str(r[1]) for r in rows}

    def put(self, run: str, record: QuestionRecord) -> None:
        """Store a finished question (replacing an older row with its id) and commit."""
        result = record.result
        usage = result.usage
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO results (run, id, position, fingerprint, level, correct,"
                " samples, num_correct, prompt_tokens, completion_tokens, requests, cost_usd,"
                " record, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run,
                    record.id,
                    record.position,
                    record.fingerprint,
                    record.level,
                    int(record.correct),
                    len(result.candidates),
                    result.num_correct,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.requests,
                    usage.cost_usd,
                    record.model_dump_json(),
                    time.time(),
                ),
            )
            self._db.execute("DELETE FROM failures WHERE run = ? AND id = ?", (run, record.id))

    def put_failure(self, run: str, question_id: str, error: str) -> None:
        """Note that a question failed for good this time (a rerun tries it again)."""
        self._db.execute(
            "INSERT OR REPLACE INTO failures (run, id, error, at) VALUES (?, ?, ?, ?)",
            (run, question_id, error, time.time()),
        )

    def failures(self, run: str) -> dict[str, str]:
        """Questions of ``run`` whose last attempt failed, with the error."""
        rows = self._db.execute("SELECT id, error FROM failures WHERE run = ?", (run,))
        return {str(r[0]): str(r[1]) for r in rows}

    def records(self, run: str) -> list[QuestionRecord]:
        """Every stored question of ``run``, in dataset order."""
        rows = self._db.execute(
            "SELECT record FROM results WHERE run = ? ORDER BY position, id", (run,)
        )
        return [QuestionRecord.model_validate_json(r[0]) for r in rows]

    def usage(self, run: str) -> Usage:
        """What the stored questions of ``run`` cost, all together."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(requests), 0), COALESCE(SUM(cost_usd), 0.0)"
            " FROM results WHERE run = ?",
            (run,),
        ).fetchone()
        return Usage(
            prompt_tokens=int(row[0]),
            completion_tokens=int(row[1]),
            requests=int(row[2]),
            cost_usd=float(row[3]),
        )

    def verdicts(self, run: str) -> dict[str, bool]:
        """Whether each stored question's selected answer is correct, by id."""
        rows = self._db.execute("SELECT id, correct FROM results WHERE run = ?", (run,))
        return {str(r[0]): bool(r[1]) for r in rows}

    def accuracy(self, run: str) -> tuple[int, int]:
        """``(correct, stored)`` over the stored questions of ``run``."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(correct), 0), COUNT(*) FROM results WHERE run = ?", (run,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
