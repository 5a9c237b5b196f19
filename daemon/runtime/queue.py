"""The durable job queue: SQLite in WAL mode, rows kept as history, every transition guarded.

This module is also the daemon's documented control interface: the CLI (``finishline queue``)
and the TUI open the same database and call :meth:`Queue.pause`, :meth:`Queue.cancel`,
:meth:`Queue.retry`, :meth:`Queue.set_priority` and :meth:`Queue.requeue`. Pure state changes
happen at once under the same guards; cancelling a running job sets ``cancel_requested``, which
the worker running it polls (it then kills its children and records CANCELLED).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

from daemon.core.errors import AppError
from daemon.core.sqlite import immediate
from daemon.runtime.reader import (
    SCHEMA,
    SCHEMA_VERSION,
    Batch,
    Job,
    QueueReader,
    QueueUnavailable,
    check_version,
)
from daemon.runtime.states import JobState, TransitionError, check_transition

__all__ = ["Batch", "Job", "Queue", "QueueReader", "QueueUnavailable"]


def _migrate(db: sqlite3.Connection) -> None:
    """Create the tables, or bring an older queue up to :data:`SCHEMA_VERSION` (in one
    transaction; only the daemon does this)."""
    with immediate(db, threading.RLock()):
        for statement in SCHEMA.split(";"):  # CREATE ... IF NOT EXISTS: idempotent
            if statement.strip():
                db.execute(statement)
        _add_columns(db, "batches", MIGRATIONS["batches"])  # from before sequence assembly
        _add_columns(db, "jobs", MIGRATIONS["jobs"])  # from before re-runs and notes (3)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


#: columns later versions added, per table, for a queue.db made by an earlier one
MIGRATIONS = {
    "batches": (
        ("assembly_state", "TEXT NOT NULL DEFAULT ''"),
        ("assembly_output", "TEXT"),
        ("assembly_error", "TEXT"),
    ),
    "jobs": (("replace_output", "INTEGER NOT NULL DEFAULT 0"), ("note", "TEXT")),
}


def _add_columns(db: sqlite3.Connection, table: str, columns: tuple[tuple[str, str], ...]) -> None:
    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    for col, decl in columns:
        if col not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")


class Queue(QueueReader):
    """The read-write queue. The daemon opens it with ``create=True`` (tables made or migrated
    once, when the stored schema is older); control commands open an existing one only."""

    writable = True

    def __init__(self, path: str | Path, *, timeout: float = 30.0, create: bool = True) -> None:
        self._create = create
        super().__init__(path, timeout=timeout)

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if not self.path.exists() and not self._create:
            return super()._connect(timeout)  # raises: no queue there
        if self._create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version > SCHEMA_VERSION or (tables and not self._create):
                check_version(self.path, version, tables)
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            if version < SCHEMA_VERSION:
                _migrate(db)
        except sqlite3.Error as exc:
            raise QueueUnavailable(f"{self.path}: cannot open the queue ({exc}).") from None
        return db

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so read-then-write cannot race."""
        return immediate(self._db, self._lock)

    # -- adding -----------------------------------------------------------------------------

    def add_batch(self, preset: str, name: str, *, assemble: bool = False) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO batches(preset, name, created, assemble) VALUES (?, ?, ?, ?)",
                (preset, name, time.time(), int(assemble)),
            )
            return int(cur.lastrowid or 0)

    def add_job(
        self,
        src: str,
        *,
        name: str,
        preset: str,
        content_hash: str,
        size: int = 0,
        batch_id: int | None = None,
        priority: int = 0,
        max_attempts: int = 3,
    ) -> int:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs(src, name, preset, batch_id, content_hash, size, priority, "
                "max_attempts, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (src, name, preset, batch_id, content_hash, size, priority, max_attempts, now, now),
            )
            return int(cur.lastrowid or 0)

    def find_duplicate(self, content_hash: str, preset: str) -> Job | None:
        """A job for the same content and preset that is queued, running or done."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE content_hash=? AND preset=? "
                "AND state IN ('queued', 'running', 'done') ORDER BY id LIMIT 1",
                (content_hash, preset),
            ).fetchone()
        return Job.from_row(row) if row else None

    # -- the worker side --------------------------------------------------------------------

    def claim_next(self, worker: str) -> Job | None:
        """Atomically take the highest-priority queued job (None when paused or empty)."""
        if self.paused:
            return None
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET state='running', worker=?, started=?, updated=?, stage='starting',"
                " frame=0, total=0, fps=0, eta_s=NULL, error=NULL, note=NULL, cancel_requested=0 "
                "WHERE id=(SELECT id FROM jobs WHERE state='queued' "
                "ORDER BY priority DESC, id LIMIT 1) AND state='queued' RETURNING *",
                (worker, now, now),
            ).fetchone()
        return Job.from_row(row) if row else None

    def transition(self, job_id: int, expected: JobState, new: JobState, **values: object) -> Job:
        """``UPDATE … WHERE id=? AND state=?``; raises :class:`TransitionError` unless exactly
        one row changed."""
        check_transition(expected, new)
        allowed = {
            "output",
            "work_dir",
            "error",
            "report",
            "stage",
            "attempts",
            "worker",
            "finished",
            "priority",
            "cancel_requested",
            "frame",
            "total",
            "fps",
            "eta_s",
            "replace_output",
            "note",
        }
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"cannot set {sorted(bad)} in a transition")
        if new is not JobState.RUNNING and new is not JobState.FAILED:
            # back in the queue or cancelled: no progress from an earlier run is shown
            values = {"frame": 0, "total": 0, "fps": 0.0, "eta_s": None, "note": None, **values}
        sets = ", ".join(f"{k}=:{k}" for k in values)
        sql = (
            f"UPDATE jobs SET state=:new, updated=:now{', ' + sets if sets else ''} "
            "WHERE id=:id AND state=:expected RETURNING *"
        )
        params = {
            "new": str(new),
            "now": time.time(),
            "id": job_id,
            "expected": str(expected),
            **values,
        }
        with self._tx() as db:
            row = db.execute(sql, params).fetchone()
        if row is None:
            current = self.get(job_id)
            state = current.state if current else "missing"
            raise TransitionError(f"job {job_id} is {state}, not {expected}; not changed to {new}")
        return Job.from_row(row)

    def progress(
        self,
        job_id: int,
        *,
        stage: str,
        frame: int = 0,
        total: int = 0,
        fps: float = 0.0,
        eta_s: float | None = None,
        note: str | None = None,
    ) -> None:
        """A running job's stage and progress (``note``: what it waits for, in words)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET stage=?, frame=?, total=?, fps=?, eta_s=?, note=?, updated=? "
                "WHERE id=? AND state='running'",
                (stage, frame, total, fps, eta_s, note, time.time(), job_id),
            )

    def set_src(self, job_id: int, path: Path) -> None:
        """Where the job's source lives now (hot folder, done/ or failed/)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET src=? WHERE id=?", (str(path), job_id))

    def set_worker_device(self, job_id: int | None, worker: str, device: str) -> None:
        """Which device slot ``worker`` runs on (and, for a job's owner, the job)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO workers(name, device, job, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET device=excluded.device, job=excluded.job, "
                "updated=excluded.updated",
                (worker, device, job_id, time.time()),
            )

    def set_report(self, job_id: int, report: str) -> None:
        """The failure report of a job that is already failed (filed after a recovery)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET report=? WHERE id=?", (report, job_id))

    def set_work_dir(self, job_id: int, path: Path) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET work_dir=? WHERE id=?", (str(path), job_id))

    def reserve_output(self, job_id: int, wanted: Path) -> Path:
        """Record the job's output path before any work: ``wanted``, or ``stem-N.ext`` when
        that is an existing file or another job's (so two clips with one name never share,
        and a restart finds its output)."""
        with self._tx() as db:
            for i in range(10_000):
                cand = wanted if i == 0 else wanted.with_name(f"{wanted.stem}-{i}{wanted.suffix}")
                taken = db.execute(
                    "SELECT 1 FROM jobs WHERE output=? AND id<>?", (str(cand), job_id)
                ).fetchone()
                if not taken and not cand.exists():
                    db.execute("UPDATE jobs SET output=? WHERE id=?", (str(cand), job_id))
                    return cand
        raise AppError(f"{wanted}: too many outputs with this name.")

    def recover(self) -> list[Job]:
        """At start-up: jobs left RUNNING by a dead daemon go back to QUEUED with attempts + 1;
        past ``max_attempts`` they become FAILED. Returns the jobs touched."""
        touched = []
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state='running'").fetchall()
            for row in rows:
                job = Job.from_row(row)
                attempts = job.attempts + 1
                if attempts >= job.max_attempts:
                    new, error = (
                        JobState.FAILED,
                        (
                            f"gave up after {attempts} interrupted attempts (the daemon stopped "
                            "while running it each time)"
                        ),
                    )
                else:
                    new, error = JobState.QUEUED, None
                out = db.execute(
                    "UPDATE jobs SET state=?, attempts=?, error=?, worker=NULL, stage='', "
                    "frame=0, total=0, fps=0, eta_s=NULL, note=NULL, "
                    "updated=? WHERE id=? AND state='running' RETURNING *",
                    (str(new), attempts, error, time.time(), job.id),
                ).fetchone()
                touched.append(Job.from_row(out))
            # an assembly cut off by the crash is tried again
            db.execute("UPDATE batches SET assembly_state='' WHERE assembly_state='running'")
        return touched

    def heartbeat(self, pid: int, *, started: float | None = None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO heartbeat(id, pid, beat, started) VALUES (1, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET pid=excluded.pid, beat=excluded.beat, "
                "started=COALESCE(excluded.started, heartbeat.started)",
                (pid, time.time(), started),
            )

    # -- control (CLI and TUI) ---------------------------------------------------------------

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) claiming new jobs; running jobs finish."""
        with self._lock:
            self._db.execute(
                "INSERT INTO settings(key, value) VALUES ('paused', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                ("1" if paused else "0",),
            )

    def cancel(self, job_id: int) -> Job:
        """Queued -> cancelled at once; running -> flagged, the worker kills its children."""
        job = self._require(job_id)
        if job.state is JobState.QUEUED:
            return self.transition(
                job_id,
                JobState.QUEUED,
                JobState.CANCELLED,
                finished=time.time(),
                error="cancelled by the user",
            )
        if job.state is JobState.RUNNING:
            with self._lock:
                self._db.execute(
                    "UPDATE jobs SET cancel_requested=1, updated=? WHERE id=? AND state='running'",
                    (time.time(), job_id),
                )
            return self._require(job_id)
        raise TransitionError(f"job {job_id} is {job.state}; only queued or running jobs cancel")

    def retry(self, job_id: int) -> Job:
        """Failed or cancelled -> queued (the worker looks for the source in failed/ too)."""
        job = self._require(job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise TransitionError(
                f"job {job_id} is {job.state}; only failed or cancelled jobs retry"
            )
        if not Path(job.src).exists():
            raise TransitionError(f"job {job_id} cannot be retried: its source {job.src} is gone")
        return self._back_to_queue(job)

    def requeue(self, job_id: int) -> Job:
        """Run a job again from its source. A done job is re-run from its source in ``done/``
        and its new output replaces the delivered one once verified (the old one stays until
        then); a failed or cancelled job is simply retried."""
        job = self._require(job_id)
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            raise TransitionError(f"job {job_id} is {job.state} already")
        if job.state is JobState.DONE and not Path(job.src).exists():
            raise TransitionError(
                f"job {job_id} cannot run again: its source {job.src} is gone from done/"
            )
        return self._back_to_queue(job, replace_output=job.state is JobState.DONE)

    def _back_to_queue(self, job: Job, *, replace_output: bool = False) -> Job:
        """An ended job queued again as new: attempts, error, report and stage cleared."""
        return self.transition(
            job.id,
            job.state,
            JobState.QUEUED,
            attempts=0,
            error=None,
            report=None,
            stage="",
            finished=None,
            replace_output=int(replace_output),
        )

    def set_priority(self, job_id: int, priority: int) -> Job:
        """Set a job's priority (higher runs first)."""
        self._require(job_id)
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET priority=?, updated=? WHERE id=?", (priority, time.time(), job_id)
            )
        return self._require(job_id)

    def change_priority(self, job_id: int, delta: int) -> Job:
        """Raise or lower a priority by ``delta`` in one statement, so quick presses each
        count (no read-then-write on a stale snapshot)."""
        self._require(job_id)
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET priority=priority+?, updated=? WHERE id=?",
                (delta, time.time(), job_id),
            )
        return self._require(job_id)

    # -- sequence assembly -----------------------------------------------------------------------

    def settled_batches(self, *, quiet_for: float = 0.0) -> list[Batch]:
        """Batches not yet decided (or blocked by a failed clip) whose every job has ended and
        that gained no clip in the last ``quiet_for`` seconds."""
        with self._lock:
            rows = self._db.execute(
                "SELECT b.* FROM batches b WHERE b.assembly_state IN ('', 'blocked') "
                "AND EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id=b.id) "
                "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id=b.id "
                "AND (j.state IN ('queued', 'running') OR j.created > ?)) ORDER BY b.id",
                (time.time() - quiet_for,),
            ).fetchall()
        return [Batch(**dict(r)) for r in rows]

    def claim_assembly(self, batch_id: int) -> bool:
        """Exactly one worker assembles a batch: the one whose update wins."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE batches SET assembly_state='running', assembly_error=NULL WHERE id=? "
                "AND assembly_state IN ('', 'blocked')",
                (batch_id,),
            )
            return cur.rowcount == 1

    def set_assembly(
        self, batch_id: int, state: str, *, output: str | None = None, error: str | None = None
    ) -> None:
        if state not in ("none", "blocked", "running", "done", "failed", ""):
            raise ValueError(f"unknown assembly state {state!r}")
        with self._tx() as db:
            db.execute(
                "UPDATE batches SET assembly_state=?, "
                "assembly_output=COALESCE(?, assembly_output), "
                "assembly_error=? WHERE id=?",
                (state, output, error, batch_id),
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}

    def set_intake_problems(self, problems: dict[str, str]) -> None:
        """Record what the intake leaves alone (see :meth:`QueueReader.intake_problems`)."""
        import json

        with self._lock:
            self._db.execute(
                "INSERT INTO settings(key, value) VALUES ('intake_problems', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (json.dumps(problems, sort_keys=True),),
            )
