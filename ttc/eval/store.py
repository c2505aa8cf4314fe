"""The results store: one SQLite file a results folder, one row a finished question.

Every question is written (and committed) the moment it finishes, so a crashed or killed run
loses at most the questions in flight, and a rerun skips what is stored. The database is in
WAL mode: a reader (``ttc report`` while an evaluation runs) never blocks the writer, and a
process killed mid-write leaves the file consistent. ``synchronous=NORMAL`` keeps commits cheap;
a committed row survives the process being killed (only a power loss can drop the last ones).

A folder can hold several runs (strategies, models, sample counts), each under its name, so
that reports compare them on one chart. A row keeps the whole ``Result`` as JSON (candidates
with their verdicts, the answer, usage), plus a few columns for quick summaries; ``progress``
says how far each run got (questions of the dataset, what stopped it).

A damaged file (a disk or copy error) raises ``DamagedStoreError`` naming it; ttc never writes
to it. ``salvage`` copies every row that can still be read into a new store (``ttc salvage``),
and ``ttc report`` reports what can be read.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ttc.errors import ConfigError
from ttc.types import Result, Usage

__all__ = [
    "DB_NAME",
    "DamagedStoreError",
    "QuestionRecord",
    "ResultsStore",
    "RunInfo",
    "RunProgress",
    "SalvageReport",
    "salvage",
]

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
CREATE TABLE IF NOT EXISTS progress (
    run TEXT PRIMARY KEY,
    total INTEGER NOT NULL,
    stopped_by TEXT,
    note TEXT,
    at REAL NOT NULL
);
"""

#: SQLite's names for a file that is not (or no longer) a sound database.
_DAMAGE = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR")


class DamagedStoreError(ConfigError):
    """The results file is damaged (a disk or copy error): the message names it and says how
    to copy what can be read into a new store. ttc does not write to a damaged file."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path} is damaged ({detail}); it was left untouched. Copy every row that can "
            f"still be read into a new folder with: ttc salvage {path.parent} NEW_FOLDER "
            "(then use --out NEW_FOLDER: ttc eval reruns only the questions that were lost)"
        )
        self.path = path
        self.detail = detail


Upgrade = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Reads a configuration stored by an older version in today's shape."""


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as it reads back from the store (JSON)."""
    loaded: dict[str, Any] = json.loads(json.dumps(dict(config), default=str))
    return loaded


def _differ(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The settings two configurations disagree on, sorted."""
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


def _sqlite_header(db: Path) -> bool:
    """Whether ``db`` starts as an SQLite file does (damaged, rather than something else)."""
    try:
        with db.open("rb") as handle:
            return handle.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _damage(exc: sqlite3.Error) -> bool:
    """Whether a sqlite error means a damaged file (rather than, say, a busy one)."""
    if getattr(exc, "sqlite_errorname", None) in _DAMAGE:
        return True
    text = str(exc).lower()
    return any(w in text for w in ("malformed", "not a database", "could not decode", "corrupt"))


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
class RunProgress:
    """How far a run got the last time ``ttc eval`` ran it: the questions of its dataset,
    and what stopped it (``"budget"``, ``"error"``; ``None``: it ended, or it was killed or
    is still running). ``note`` says which limit or error."""

    total: int
    stopped_by: str | None
    note: str | None


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
    once. Use as a context manager, or call ``close``. ``readonly`` opens an existing file
    without writing anything to it (reports); ``check`` verifies the file's structure first
    (before a run writes to it). A damaged file raises ``DamagedStoreError``.
    """

    def __init__(
        self, path: str | Path, *, create: bool = True, readonly: bool = False, check: bool = False
    ) -> None:
        target = Path(path).expanduser()
        is_file = target.suffix in (".sqlite", ".db") or target.is_file()
        db = target if is_file else target / DB_NAME
        if (readonly or not create) and not db.is_file():
            raise ConfigError(f"no results at {target} (expected {db})")
        self.path = db
        self.folder = db.parent
        self.readonly = readonly
        if readonly:
            try:
                uri = db.resolve().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
                self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            return
        db.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(db, isolation_level=None, timeout=30.0)
            if check and db.stat().st_size:
                verdict = self._db.execute("PRAGMA quick_check").fetchall()
                if verdict != [("ok",)]:
                    lines = [
                        line
                        for r in verdict
                        for line in str(r[0]).splitlines()
                        if line and not line.startswith("***")
                    ]
                    raise DamagedStoreError(db, "; ".join(lines[:2]))
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
            self._close_quietly()
            if _damage(exc) and _sqlite_header(db):
                raise DamagedStoreError(db, str(exc)) from None
            raise ConfigError(f"{db} is not a ttc results database: {exc}") from None
        except DamagedStoreError:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        db: sqlite3.Connection | None = getattr(self, "_db", None)
        if db is not None:
            db.close()

    def _error(self, exc: sqlite3.Error) -> ConfigError:
        """A sqlite error as one clear ttc error naming the file."""
        if _damage(exc):
            if not _sqlite_header(self.path):
                return ConfigError(f"{self.path} is not a ttc results database: {exc}")
            return DamagedStoreError(self.path, str(exc))
        return ConfigError(f"{self.path}: {exc}")

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Every row of a query; a sqlite error becomes ``DamagedStoreError``/``ConfigError``."""
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

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
        (else ``ConfigError`` says which setting differs: pick another name; ``upgrade_run``
        first lets a run stored by an older version resume). Without it, the run's stored
        questions are deleted first.
        """
        if not name or not name.strip():
            raise ConfigError("a run needs a non-empty name")
        config_json = json.dumps(dict(config), sort_keys=True, default=str)
        rows = self._rows("SELECT config FROM runs WHERE name = ?", (name,))
        row = rows[0] if rows else None
        if row is not None and resume:
            stored = json.loads(row[0])
            wanted = json.loads(config_json)
            differ = _differ(stored, wanted)
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
            self._db.execute("DELETE FROM progress WHERE run = ?", (name,))
            self._db.execute(
                "INSERT OR REPLACE INTO runs (name, config, created) VALUES (?, ?, ?)",
                (name, config_json, time.time()),
            )
        return 0

    def matches(self, name: str, config: Mapping[str, Any], upgrade: Upgrade | None = None) -> bool:
        """Whether run ``name`` is stored with ``config`` (the stored one read through
        ``upgrade``, if given)."""
        rows = self._rows("SELECT config FROM runs WHERE name = ?", (name,))
        if not rows:
            return False
        stored = json.loads(rows[0][0])
        if upgrade is not None:
            stored = upgrade(stored)
        return not _differ(_plain(stored), _plain(config))

    def upgrade_run(self, name: str, config: Mapping[str, Any], upgrade: Upgrade) -> bool:
        """Let run ``name``, stored by an older version, resume with today's ``config``: if
        its stored configuration differs but matches once read through ``upgrade`` (e.g.
        ``ttc.strategies.registry.upgrade_config``: parameters listed since, at their
        defaults), store ``config`` in its place. Returns whether it did."""
        if self.matches(name, config) or not self.matches(name, config, upgrade):
            return False
        config_json = json.dumps(dict(config), sort_keys=True, default=str)
        with self._transaction():
            self._db.execute("UPDATE runs SET config = ? WHERE name = ?", (config_json, name))
        return True

    def runs(self) -> list[RunInfo]:
        """Every run in the folder, oldest first."""
        rows = self._rows(
            "SELECT name, config, created,"
            " (SELECT COUNT(*) FROM results r WHERE r.run = runs.name),"
            " (SELECT COUNT(*) FROM failures f WHERE f.run = runs.name)"
            " FROM runs ORDER BY created, name"
        )
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
        return int(self._rows("SELECT COUNT(*) FROM results WHERE run = ?", (run,))[0][0])

    def fingerprints(self, run: str) -> dict[str, str]:
        """Stored question ids of ``run`` and the fingerprint of the question each was for."""
        rows = self._rows("SELECT id, fingerprint FROM results WHERE run = ?", (run,))
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
        self._rows(
            "INSERT OR REPLACE INTO failures (run, id, error, at) VALUES (?, ?, ?, ?)",
            (run, question_id, error, time.time()),
        )

    def failures(self, run: str) -> dict[str, str]:
        """Questions of ``run`` whose last attempt failed, with the error."""
        rows = self._rows("SELECT id, error FROM failures WHERE run = ?", (run,))
        return {str(r[0]): str(r[1]) for r in rows}

    def records(self, run: str) -> list[QuestionRecord]:
        """Every stored question of ``run``, in dataset order."""
        rows = self._rows(
            "SELECT id, CAST(record AS BLOB) FROM results WHERE run = ? ORDER BY position, id",
            (run,),
        )
        out = []
        for qid, raw in rows:
            record = _record(raw)
            if record is None:
                raise DamagedStoreError(self.path, f"the row of question {qid!r} is unreadable")
            out.append(record)
        return out

    def usage(self, run: str) -> Usage:
        """What the stored questions of ``run`` cost, all together."""
        row = self._rows(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(requests), 0), COALESCE(SUM(cost_usd), 0.0)"
            " FROM results WHERE run = ?",
            (run,),
        )[0]
        return Usage(
            prompt_tokens=int(row[0]),
            completion_tokens=int(row[1]),
            requests=int(row[2]),
            cost_usd=float(row[3]),
        )

    def verdicts(self, run: str) -> dict[str, bool]:
        """Whether each stored question's selected answer is correct, by id."""
        rows = self._rows("SELECT id, correct FROM results WHERE run = ?", (run,))
        return {str(r[0]): bool(r[1]) for r in rows}

    def accuracy(self, run: str) -> tuple[int, int]:
        """``(correct, stored)`` over the stored questions of ``run``."""
        row = self._rows(
            "SELECT COALESCE(SUM(correct), 0), COUNT(*) FROM results WHERE run = ?", (run,)
        )[0]
        return int(row[0]), int(row[1])

    def set_progress(
        self, run: str, total: int, stopped_by: str | None = None, note: str | None = None
    ) -> None:
        """Note how far ``run`` got: ``total`` questions in its dataset, what stopped it."""
        self._rows(
            "INSERT OR REPLACE INTO progress (run, total, stopped_by, note, at)"
            " VALUES (?, ?, ?, ?, ?)",
            (run, total, stopped_by, note, time.time()),
        )

    def progress(self, run: str) -> RunProgress | None:
        """How far ``run`` got (``None`` for a run stored before ttc noted it)."""
        try:
            rows = self._rows("SELECT total, stopped_by, note FROM progress WHERE run = ?", (run,))
        except DamagedStoreError:
            raise
        except ConfigError:  # a store written before the table existed, opened read-only
            return None
        return RunProgress(int(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection;
    a sqlite error inside becomes ``DamagedStoreError``/``ConfigError``."""

    def __init__(self, store: ResultsStore) -> None:
        self._store = store
        self._db = store._db

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._store._error(exc) from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        except sqlite3.Error as error:
            if exc_type is None:
                raise self._store._error(error) from None
        if isinstance(exc, sqlite3.Error):
            raise self._store._error(exc) from None


def _record(raw: object) -> QuestionRecord | None:
    """A stored row's record, or ``None`` when its bytes are damaged."""
    if not isinstance(raw, bytes):
        return None
    try:
        return QuestionRecord.model_validate_json(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and pydantic's ValidationError included
        return None


# ---------------------------------------------------------------------- salvage


@dataclass
class SalvageReport:
    """What ``salvage`` copied (rows by table) and what it could not read (``lost``)."""

    source: Path
    target: Path
    runs: int = 0
    results: int = 0
    failures: int = 0
    lost: list[str] = field(default_factory=list)


_COLUMNS = (
    "run, id, position, fingerprint, level, correct, samples, num_correct, prompt_tokens,"
    " completion_tokens, requests, cost_usd, {record}, finished"
)
#: The results columns, the record as bytes: sqlite does not decode damaged text for us.
_READ_COLUMNS = _COLUMNS.format(record="CAST(record AS BLOB)")
_INSERT_RESULT = (
    f"INSERT OR REPLACE INTO results ({_COLUMNS.format(record='record')})"
    f" VALUES ({', '.join('?' * 14)})"
)


def salvage(source: str | Path, target: str | Path) -> SalvageReport:
    """Copy every row of a (damaged) results store that can still be read into a new store.

    ``source`` is opened read-only and never changed; ``target`` (a folder or a file) must
    not hold a store yet. Rows are read one at a time in rowid order, stepping over damaged
    pages, and each question's record is checked before it is copied; the report lists what
    could not be read. A question that was lost is simply missing from the new store, so
    ``ttc eval --out TARGET`` answers it again.
    """
    src = Path(source).expanduser()
    src_db = src if src.is_file() else src / DB_NAME
    if not src_db.is_file():
        raise ConfigError(f"no results at {src} (expected {src_db})")
    dest = Path(target).expanduser()
    dest_db = dest if dest.suffix in (".sqlite", ".db") else dest / DB_NAME
    if dest_db.exists():
        raise ConfigError(f"{dest_db} already exists: salvage into a new folder")
    try:
        db = sqlite3.connect(src_db.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DamagedStoreError(src_db, str(exc)) from None
    report = SalvageReport(src_db, dest_db)
    try:
        runs = {
            str(name): (str(config), float(created))
            for name, config, created in _walk(db, "runs", "name, config, created", report.lost)
            if _json_object(config)
        }
        results = [
            row
            for row in _walk(db, "results", _READ_COLUMNS, report.lost)
            if _keep_result(row, report.lost)
        ]
        failures = list(_walk(db, "failures", "run, id, error, at", report.lost))
        progress = list(_walk(db, "progress", "run, total, stopped_by, note, at", report.lost))
    finally:
        db.close()
    for run in sorted({str(r[0]) for r in results} - set(runs)):
        report.lost.append(f"the configuration of run {run!r} (its questions are kept)")
        runs[run] = ("{}", time.time())
    with ResultsStore(dest) as store, store._transaction():
        for name, (config, created) in runs.items():
            store._db.execute(
                "INSERT INTO runs (name, config, created) VALUES (?, ?, ?)", (name, config, created)
            )
        for row in results:
            values = (*row[:12], bytes(row[12]).decode("utf-8"), row[13])
            store._db.execute(_INSERT_RESULT, values)
        for row in failures:
            store._db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)", row)
        for row in progress:
            store._db.execute("INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?, ?)", row)
    report.runs, report.results, report.failures = len(runs), len(results), len(failures)
    return report


def _json_object(text: object) -> bool:
    try:
        return isinstance(text, str) and isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _keep_result(row: tuple[Any, ...], lost: list[str]) -> bool:
    record = _record(row[12])
    if record is None or record.id != row[1]:
        lost.append(f"question {row[1]!r} of run {row[0]!r} (its row is damaged)")
        return False
    return True


def _walk(
    db: sqlite3.Connection, table: str, columns: str, lost: list[str]
) -> Iterator[tuple[Any, ...]]:
    """Rows of ``table`` in rowid order, one query a row, stepping over what cannot be read
    (a note in ``lost`` for each stretch)."""
    sql = f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT 1"
    after = -(2**63)

    def probe(rowid: int) -> bool:
        try:
            db.execute(sql, (rowid,)).fetchone()
        except sqlite3.Error:
            return False
        return True

    while True:
        try:
            row = db.execute(sql, (after,)).fetchone()
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                if table != "progress":  # a store from before progress was noted has none
                    lost.append(f"the whole {table} table ({exc})")
                return
            # Find the next rowid whose lookup works: grow a step until one does, then
            # narrow down to the first.
            step = 1
            while step < 2**62 and not probe(after + step):
                step *= 2
            if step >= 2**62:
                rows = "every row" if after == -(2**63) else f"every row after rowid {after}"
                lost.append(f"{table}: {rows} ({exc})")
                return
            low, high = after + step // 2, after + step
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (low, mid) if probe(mid) else (mid, high)
            lost.append(f"{table}: rows {after + 1} to {high} ({exc})")
            after = high
            continue
        if row is None:
            return
        after = int(row[0])
        yield tuple(row[1:])
