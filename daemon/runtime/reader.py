"""Reading the queue without changing it: the TUI and ``finishline queue list|show`` use
:class:`QueueReader`, which opens the database read-only. Opening it never creates or alters a
table (so a look at a stopped daemon's queue leaves ``queue.db`` byte-identical), and a
database written by a newer finishline is refused with one sentence.

The row types (:class:`Job`, :class:`Batch`) and the schema live here; the read-write
:class:`~daemon.runtime.queue.Queue` builds on this class.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from daemon.core.errors import AppError
from daemon.engine.chunks import CHUNKS_SCHEMA, ChunkRow, chunk_row, read_chunk_record
from daemon.runtime.states import FINISHED, JobState, TransitionError

#: bumped whenever the tables change; stored in ``PRAGMA user_version``
SCHEMA_VERSION = 4
#: how long a reader waits for a queue file the daemon has made but not yet filled (seconds)
SCHEMA_WAIT = 5.0

SCHEMA = (
    CHUNKS_SCHEMA
    + """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    preset TEXT NOT NULL,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    assemble INTEGER NOT NULL DEFAULT 0,
    assembly_state TEXT NOT NULL DEFAULT '',
    assembly_output TEXT,
    assembly_error TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    src TEXT NOT NULL,
    name TEXT NOT NULL,
    preset TEXT NOT NULL,
    batch_id INTEGER REFERENCES batches(id),
    content_hash TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'queued',
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    worker TEXT,
    stage TEXT NOT NULL DEFAULT '',
    frame INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    fps REAL NOT NULL DEFAULT 0,
    eta_s REAL,
    output TEXT,
    work_dir TEXT,
    error TEXT,
    report TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    replace_output INTEGER NOT NULL DEFAULT 0,
    note TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(state, priority DESC, id);
CREATE INDEX IF NOT EXISTS jobs_hash ON jobs(content_hash, preset);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY, device TEXT NOT NULL, job INTEGER, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER, beat REAL, started REAL
);
"""
)


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    src: str
    name: str
    preset: str
    batch_id: int | None
    content_hash: str
    size: int
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    worker: str | None
    stage: str
    frame: int
    total: int
    fps: float
    eta_s: float | None
    output: str | None
    work_dir: str | None
    error: str | None
    report: str | None
    cancel_requested: int
    created: float
    updated: float
    started: float | None
    finished: float | None
    replace_output: int = 0  # a re-run: the new output replaces the delivered one
    note: str | None = None  # what the job waits for, in words (the TUI and queue show it)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = {f.name: row[f.name] for f in fields(cls)}
        data["state"] = JobState(data["state"])
        return cls(**data)

    @property
    def progress(self) -> float:
        return self.frame / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class Batch:
    id: int
    preset: str
    name: str
    created: float
    assemble: int
    assembly_state: str = ""  # '' (not decided), none, blocked, running, done, failed
    assembly_output: str | None = None
    assembly_error: str | None = None


class QueueUnavailable(AppError):
    title = "no queue"


class QueueReader:
    """A read-only view of ``queue.db`` (one connection, shared by the threads of a process)."""

    writable = False

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = self._connect(timeout)
        self._db.row_factory = sqlite3.Row

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if not self.path.exists():
            raise QueueUnavailable(
                f"no queue at {self.path}; start the daemon first "
                "(`finishline daemon`) or name its root with --root."
            )
        uri = f"{self.path.absolute().as_uri()}?mode=ro"
        # a daemon starting this moment has made the file but not yet its tables: wait briefly
        deadline = time.monotonic() + min(timeout, SCHEMA_WAIT)
        try:
            db = sqlite3.connect(
                uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            while True:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                tables = {
                    r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if tables or version or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        except sqlite3.Error as exc:
            raise QueueUnavailable(f"{self.path}: cannot read the queue ({exc}).") from None
        check_version(self.path, version, tables)
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def daemon_status(self, *, stale_after: float = 10.0) -> tuple[bool, int | None, float | None]:
        """(alive, pid, last beat): alive when the daemon beat within ``stale_after`` s."""
        with self._lock:
            row = self._db.execute("SELECT pid, beat FROM heartbeat WHERE id=1").fetchone()
        if not row:
            return False, None, None
        return (time.time() - row["beat"] < stale_after), row["pid"], row["beat"]

    @property
    def paused(self) -> bool:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key='paused'").fetchone()
        return bool(row and row[0] == "1")

    def cancel_requested(self, job_id: int) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
        return bool(row and row[0])

    def get(self, job_id: int) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def _require(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job is None:
            raise TransitionError(f"no job with id {job_id}")
        return job

    def jobs(self, *, states: tuple[JobState, ...] = (), limit: int = 1000) -> list[Job]:
        sql = "SELECT * FROM jobs"
        params: list[object] = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            params += [str(s) for s in states]
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            return [Job.from_row(r) for r in self._db.execute(sql, params).fetchall()]

    def batch(self, batch_id: int) -> Batch | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM batches WHERE id=?", (batch_id,)).fetchone()
        return Batch(**dict(row)) if row else None

    def batch_jobs(self, batch_id: int) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE batch_id=? ORDER BY name", (batch_id,)
            ).fetchall()
        return [Job.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}

    def active_job_for(self, src: str) -> Job | None:
        """The queued or running job whose source is ``src`` (the intake queues a path once)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE src=? AND state IN ('queued', 'running') "
                "ORDER BY id LIMIT 1",
                (src,),
            ).fetchone()
        return Job.from_row(row) if row else None

    def intake_problems(self) -> dict[str, str]:
        """What the daemon's intake leaves alone, for people (the TUI shows it): a hot folder
        without a valid preset, a file it will not take -> why, in one sentence."""
        import json

        with self._lock:
            row = self._db.execute(
                "SELECT value FROM settings WHERE key='intake_problems'"
            ).fetchone()
        try:
            data = json.loads(row[0]) if row else {}
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def chunks(self, job_id: int) -> list[ChunkRow]:
        """A job's chunks in index order: from the chunks table while it runs, from the
        record kept in its work folder once it has ended (delivered, failed or cancelled;
        empty for a job that has neither, and for a job queued again: its last run's record
        is not what the next run will do)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM chunks WHERE job=? ORDER BY idx", (f"job-{job_id}",)
            ).fetchall()
        if rows:
            return [chunk_row(r) for r in rows]
        job = self.get(job_id)
        if job is None or not job.work_dir or job.state not in FINISHED:
            return []
        return read_chunk_record(Path(job.work_dir), f"job-{job_id}")

    def devices(self) -> dict[str, str]:
        """Worker name -> its device slot, e.g. ``cuda:1 (8 threads)``."""
        with self._lock:
            rows = self._db.execute("SELECT name, device FROM workers").fetchall()
        return {r[0]: r[1] for r in rows}


def check_version(path: Path, version: int, tables: set[str]) -> None:
    """Refuse a database this finishline cannot read, with one sentence."""
    if version > SCHEMA_VERSION:
        raise QueueUnavailable(
            f"{path} was written by a newer finishline (queue schema {version}; this one reads "
            f"up to {SCHEMA_VERSION}); upgrade finishline to read it."
        )
    if "jobs" not in tables:
        raise QueueUnavailable(f"{path} is not a finishline queue (no jobs table).")
