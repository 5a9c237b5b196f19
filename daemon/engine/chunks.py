"""Chunked encoding: the plan written once into a ``chunks`` table, any free worker taking the
next chunk, a chunk done only when its output holds exactly its frames, then a frame-exact
join in index order with no re-encode (the way Av1an does it).

A chunk is a self-contained unit of work: its two commands (vspipe over its frame range, the
encoder writing video only with closed GOPs), the file it writes and the frames it must hold.
Whoever runs it (the job's own worker, another local worker, a cluster node) needs nothing
else. The table lives in the daemon's ``queue.db`` or, for ``finishline process``, in the
work folder, so a crash or a kill loses at most the chunks in flight and a restart redoes
only those.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from daemon.core.errors import AppError, EncodeError
from daemon.core.files import atomic_write
from daemon.core.sqlite import immediate
from daemon.core.tools import find_tool, media_arg, pid_alive, run_capture, tail
from vs_scripts.plan.chunks import next_chunk

CHUNKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    plan_key TEXT NOT NULL,
    task TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    frame INTEGER NOT NULL DEFAULT 0,
    fps REAL NOT NULL DEFAULT 0,
    error TEXT,
    updated REAL NOT NULL,
    PRIMARY KEY (job, idx)
);
CREATE INDEX IF NOT EXISTS chunks_claim ON chunks(state, job, idx);
"""

CHUNK_STATES = ("queued", "running", "done", "failed")


@dataclass(frozen=True, slots=True)
class ChunkTask:
    """Everything needed to produce one chunk, anywhere."""

    index: int
    start: int
    end: int
    vspipe: list[str]
    encoder: list[str]  # writes ``partial``; renamed to ``output`` once its frames are right
    partial: str
    output: str

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ChunkTask:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class ChunkRow:
    job: str
    index: int
    start: int
    end: int
    state: str
    worker: str | None
    attempts: int
    frame: int
    fps: float
    error: str | None
    task: ChunkTask = field(repr=False)

    @property
    def frames(self) -> int:
        return self.end - self.start


#: a finished job's chunks, kept in its work folder once their rows are forgotten
CHUNK_RECORD = "chunks.json"


def write_chunk_record(folder: Path, job: str, rows: Sequence[ChunkRow]) -> None:
    """Keep what ``queue show`` lists of a job's chunks (range, state, tries, worker) after
    the job, when the chunks table no longer has them."""
    keep = ("index", "start", "end", "state", "worker", "attempts", "error")
    record = {"job": job, "chunks": [{k: getattr(r, k) for k in keep} for r in rows]}
    atomic_write(folder / CHUNK_RECORD, json.dumps(record, indent=1) + "\n")


def read_chunk_record(folder: Path, job: str) -> list[ChunkRow]:
    """The rows :func:`write_chunk_record` kept for ``job`` (none when there is no readable
    record of it: the folder is the source's and preset's, and a later job of the same clip
    writes its own)."""
    try:
        record = json.loads((folder / CHUNK_RECORD).read_text())
        if record.get("job") != job:
            return []
        kept = record["chunks"]
        return [
            ChunkRow(
                job, int(d["index"]), int(d["start"]), int(d["end"]), str(d["state"]),
                d.get("worker"), int(d["attempts"]), 0, 0.0, d.get("error"),
                ChunkTask(int(d["index"]), int(d["start"]), int(d["end"]), [], [], "", ""),
            )
            for d in kept
        ]  # fmt: skip
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


class ChunkFailed(AppError):
    """A chunk failed for good (after its attempts); the job fails with its report."""

    title = "chunk failed"

    def __init__(self, row: ChunkRow, report: str) -> None:
        self.row = row
        self.text = report
        super().__init__(
            f"chunk {row.index} (frames {row.start}-{row.end - 1}) failed after "
            f"{row.attempts} attempt(s): {(row.error or 'no error recorded').splitlines()[0]}"
        )  # the commands and stderr tails are in report()

    def report(self) -> str:
        return self.text


class ChunkStore:
    """The chunks table (one connection per store; every write is one statement or one
    ``BEGIN IMMEDIATE`` transaction, so several processes may share the file)."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._db.execute("PRAGMA journal_mode=WAL")
        with self._tx() as db:
            for statement in CHUNKS_SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db, self._lock)

    # -- the plan ---------------------------------------------------------------------------

    def plan(self, job: str, plan_key: str, tasks: Sequence[ChunkTask]) -> list[ChunkRow]:
        """Write the plan once. The same plan (same ``plan_key``: the script, what its input
        files hold, each chunk's range and commands but the encoder's thread count) is kept
        with its progress, its queued chunks taking ``tasks``' commands (this worker's thread
        count); a different one replaces it."""
        now = time.time()
        with self._tx() as db:
            keys = {r[0] for r in db.execute("SELECT plan_key FROM chunks WHERE job=?", (job,))}
            if keys == {plan_key}:
                db.executemany(
                    "UPDATE chunks SET task=? WHERE job=? AND idx=? AND state='queued'",
                    [(t.to_json(), job, t.index) for t in tasks],
                )
            else:
                db.execute("DELETE FROM chunks WHERE job=?", (job,))
                db.executemany(
                    "INSERT INTO chunks(job, idx, start, end, plan_key, task, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(job, t.index, t.start, t.end, plan_key, t.to_json(), now) for t in tasks],
                )
        return self.rows(job)

    def rows(self, job: str) -> list[ChunkRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM chunks WHERE job=? ORDER BY idx", (job,)
            ).fetchall()
        return [chunk_row(r) for r in rows]

    def forget(self, job: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM chunks WHERE job=?", (job,))

    # -- workers ----------------------------------------------------------------------------

    def claim(
        self, worker: str, *, job: str | None = None, after: tuple[str, int] | None = None
    ) -> ChunkRow | None:
        """Atomically take a queued chunk of ``job`` (or of the first job that has one, the
        job of ``after`` first): the one :func:`next_chunk` picks, ``after`` being the job and
        index of the chunk this worker's host ran last."""
        with self._tx() as db:
            if job is None:
                # the oldest job first: a daemon's keys are job-N, and job-9 is before job-10
                queued = (
                    "SELECT DISTINCT job FROM chunks WHERE state='queued' ORDER BY length(job), job"
                )
                jobs = [r[0] for r in db.execute(queued)]
                if not jobs:
                    return None
                job = after[0] if after is not None and after[0] in jobs else jobs[0]
            rows = db.execute(
                "SELECT idx, state FROM chunks WHERE job=? ORDER BY idx", (job,)
            ).fetchall()
            indices, states = zip(*rows, strict=True) if rows else ((), ())
            last = after[1] if after is not None and after[0] == job else None
            pick = next_chunk(states, indices.index(last) if last in indices else None)
            if pick is None:
                return None
            index = indices[pick]
            row = db.execute(
                "UPDATE chunks SET state='running', worker=?, frame=0, fps=0, updated=? "
                "WHERE job=? AND idx=? AND state='queued' RETURNING *",
                (worker, time.time(), job, index),
            ).fetchone()
        return chunk_row(row) if row else None

    def progress(self, row: ChunkRow, frame: int, fps: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE chunks SET frame=?, fps=?, updated=? WHERE job=? AND idx=? "
                "AND state='running'",
                (frame, fps, time.time(), row.job, row.index),
            )

    def holds(self, row: ChunkRow) -> bool:
        """Whether ``row``'s worker still runs its chunk (not once its job was cancelled or
        failed and forgot its chunks, or the chunk was put back)."""
        with self._lock:
            found = self._db.execute(
                "SELECT 1 FROM chunks WHERE job=? AND idx=? AND state='running' AND worker IS ?",
                (row.job, row.index, row.worker),
            ).fetchone()
        return found is not None

    def done(self, row: ChunkRow) -> None:
        """``row``'s chunk is done, if this worker still holds it (not once it was put back,
        or its job forgotten or planned anew)."""
        with self._lock:
            self._db.execute(
                "UPDATE chunks SET state='done', frame=end-start, fps=0, error=NULL, updated=? "
                "WHERE job=? AND idx=? AND state='running' AND worker IS ?",
                (time.time(), row.job, row.index, row.worker),
            )

    def failed(self, row: ChunkRow, error: str, *, max_attempts: int) -> bool:
        """Record a failed attempt (if this worker still holds the chunk): back to the queue,
        or failed for good after ``max_attempts`` (returns True then)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE chunks SET attempts=attempts+1, error=?, worker=NULL, frame=0, fps=0, "
                "state=CASE WHEN attempts+1 >= ? THEN 'failed' ELSE 'queued' END, updated=? "
                "WHERE job=? AND idx=? AND state='running' AND worker IS ? RETURNING state",
                (error, max_attempts, time.time(), row.job, row.index, row.worker),
            ).fetchone()
        return bool(cur and cur[0] == "failed")

    def requeue(self, row: ChunkRow) -> None:
        """Put back a chunk this worker stopped (a cancel), no attempt counted: this chunk
        only, not another worker's whose name starts the same (``w1`` and ``w10``)."""
        with self._lock:
            self._db.execute(
                "UPDATE chunks SET state='queued', worker=NULL, frame=0, fps=0, updated=? "
                "WHERE job=? AND idx=? AND state='running' AND worker IS ?",
                (time.time(), row.job, row.index, row.worker),
            )

    def release(self, *, worker_prefix: str = "", max_attempts: int | None = None) -> int:
        """Chunks left running by a killed worker or daemon (``worker_prefix``: those whose
        holder's name starts so) go back to the queue; returns how many. With
        ``max_attempts`` the lost run counts as an attempt, and a chunk that has had them all
        (one that brings its worker down each time) fails for good instead."""
        counted = max_attempts is not None
        with self._lock:
            cur = self._db.execute(
                "UPDATE chunks SET worker=NULL, frame=0, fps=0, "
                f"attempts=attempts+{int(counted)}, updated=?, state=CASE "
                "WHEN ? AND attempts+1 >= ? THEN 'failed' ELSE 'queued' END, "
                "error=CASE WHEN ? AND attempts+1 >= ? "
                "THEN ? || COALESCE(char(10) || 'the attempt before: ' || error, '') "
                "ELSE error END "
                "WHERE state='running' AND substr(COALESCE(worker, ''), 1, ?) = ?",
                (
                    time.time(),
                    counted, max_attempts or 0,
                    counted, max_attempts or 0, LOST_ERROR.format(n=max_attempts),
                    len(worker_prefix), worker_prefix,
                ),
            )  # fmt: skip
        return cur.rowcount

    def release_dead(self, *, max_attempts: int = 3) -> int:
        """Chunks held by a worker of this host whose process is gone (``HOST:PID:...``
        names) go back to the queue, counting the attempt (see :meth:`release`); returns
        how many."""
        host = socket.gethostname()
        with self._lock:
            names = [r[0] for r in self._db.execute(
                "SELECT DISTINCT worker FROM chunks WHERE state='running' AND worker IS NOT NULL"
            )]  # fmt: skip
        released = 0
        for name in names:
            parts = name.split(":")
            mine = len(parts) >= 2 and parts[0] == host and parts[1].isdigit()
            if mine and not pid_alive(int(parts[1])):
                prefix = f"{parts[0]}:{parts[1]}:"
                released += self.release(worker_prefix=prefix, max_attempts=max_attempts)
        return released


#: the report of a chunk whose last attempt ended with its worker gone
LOST_ERROR = (
    "the last of its {n} attempts ended with its worker or the daemon gone (killed, or out "
    "of memory: see the kernel log, `dmesg`)"
)


def worker_name(role: str) -> str:
    """``HOST:PID:ROLE``: a chunk's holder, recognisable when its process is gone."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def chunk_row(r: sqlite3.Row) -> ChunkRow:
    return ChunkRow(
        r["job"],
        r["idx"],
        r["start"],
        r["end"],
        r["state"],
        r["worker"],
        r["attempts"],
        r["frame"],
        r["fps"],
        r["error"],
        ChunkTask.from_json(r["task"]),
    )


# -- running one chunk --------------------------------------------------------------------------


PipeRunner = Callable[[Sequence[str], Sequence[str], int, Callable[[int, float], None]], None]


def run_chunk(
    task: ChunkTask, run_pipe: PipeRunner, *, on_progress: Callable[[int, float], None]
) -> None:
    """vspipe over the chunk's range into the encoder, then the frame-mismatch check; the
    output appears under its final name only when it holds exactly the chunk's frames."""
    partial, output = Path(task.partial), Path(task.output)
    if output.exists() and count_frames(output) == task.frames:
        return  # done by an earlier run (its row was lost with a crash)
    output.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    try:
        run_pipe(task.vspipe, task.encoder, task.frames, on_progress)
        got = count_frames(partial)
        if got != task.frames:
            raise EncodeError(
                "chunk",
                [task.vspipe, task.encoder],
                [0, 0],
                [
                    "",
                    f"FRAME MISMATCH: chunk {task.index} holds {got} frames, expected "
                    f"{task.frames} (frames {task.start}-{task.end - 1})",
                ],
            )
        os.replace(partial, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def count_frames(path: Path) -> int:
    """Video packets in ``path``: from a QuickTime file's sample table when it has one (the
    encoder writes it last, so a cut-off file has none), else ffprobe reading every packet
    (exact, no decoding). The table is read here, not by ffprobe: a chunk's output is checked
    once per chunk and an ffprobe start costs 0.07 s of CPU, more than reading the table."""
    samples = mov_video_samples(path)
    if samples is not None:
        return samples
    out = _video_packets(path, "stream=nb_read_packets", "-count_packets")
    try:
        return int(out.strip().split(",")[0])
    except ValueError:
        return -1


def _video_packets(path: Path, entries: str, *options: str) -> str:
    """ffprobe's ``entries`` of the first video stream of ``path`` read from its packets (no
    decoding), as CSV lines without section names."""
    res = run_capture(
        [find_tool("ffprobe"), "-v", "error", "-select_streams", "v:0", *options,
         "-show_entries", entries, "-of", "csv=p=0", media_arg(path)],
        timeout=600,
    )  # fmt: skip
    return res.stdout


def mov_video_samples(path: Path) -> int | None:
    """The sample count of the one video track of a complete, unfragmented QuickTime/MP4 file
    (its ``stsz`` box: one sample per packet), or None for anything else (no ``moov`` yet,
    fragments, several video tracks, another container), which ffprobe then counts."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            boxes = list(_boxes(f, 0, size))
            if not boxes or boxes[0][0] != b"ftyp" or boxes[-1][2] != size:
                return None  # not QuickTime, or cut off after its moov (a faststart file)
            moov = [(start, end) for kind, start, end in boxes if kind == b"moov"]
            if len(moov) != 1:
                return None
            f.seek(moov[0][0])
            data = f.read(moov[0][1] - moov[0][0])
    except OSError:
        return None
    counts = []
    for kind, start, end in _boxes_in(data, 0, len(data)):
        if kind == b"mvex":
            return None  # fragmented: the samples are in the fragments
        if kind != b"trak":
            continue
        mdia = _child(data, start, end, b"mdia")
        hdlr = mdia and _child(data, *mdia, b"hdlr")
        if not hdlr or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        stsz = _path(data, mdia, (b"minf", b"stbl", b"stsz"))
        if stsz is None or stsz[1] - stsz[0] < 12:
            return None
        counts.append(int.from_bytes(data[stsz[0] + 8 : stsz[0] + 12], "big"))
    return counts[0] if len(counts) == 1 else None


def _boxes(f: BinaryIO, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in a file, read by seeking."""
    while pos + 8 <= end:
        f.seek(pos)
        head = f.read(16)
        size, kind, skip = int.from_bytes(head[:4], "big"), head[4:8], 8
        if size == 1 and len(head) == 16:
            size, skip = int.from_bytes(head[8:16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < skip or pos + size > end:
            return  # cut off: no trustworthy box from here on
        yield kind, pos + skip, pos + size
        pos += size


def _boxes_in(data: bytes, pos: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in ``data[pos:end]``."""
    while pos + 8 <= end:
        size, kind, skip = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8], 8
        if size == 1 and pos + 16 <= end:
            size, skip = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < skip or pos + size > end:
            return
        yield kind, pos + skip, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    found = [(s, e) for k, s, e in _boxes_in(data, start, end) if k == kind]
    return found[0] if len(found) == 1 else None


def _path(data: bytes, box: tuple[int, int], kinds: Sequence[bytes]) -> tuple[int, int] | None:
    found: tuple[int, int] | None = box
    for kind in kinds:
        found = found and _child(data, *found, kind)
    return found


def join_chunks(parts: Sequence[tuple[Path, int]], target: Path, *, fps: Fraction) -> None:
    """Concatenate chunk files (path, frames) in index order, stream copy (no re-encode), each
    placed at exactly its frames' duration (the concat demuxer would otherwise take each
    file's container duration, which B-frame delay and rounding bend: measured 11.994 fps for
    12), and check the joined file holds every frame."""
    listing = target.with_name(target.name + ".txt")
    lines = []
    for path, frames in parts:
        quoted = str(path.absolute()).replace("'", "'\\''")
        lines += [f"file '{quoted}'", f"duration {frames * fps.denominator / fps.numerator:.9f}"]
    listing.write_text("\n".join(lines) + "\n")
    ffmpeg = find_tool("ffmpeg")
    fmt = "matroska" if target.suffix == ".mkv" else "mov"
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
           "-i", str(listing), "-map", "0:v", "-c", "copy"]  # fmt: skip
    if fmt == "matroska":
        # Matroska keeps milliseconds: a chunk starting between two (frame 8 at 12 fps) would
        # add its rounded start to its frames' rounded times, 1 ms off the unchunked file's.
        # Its only codec here, FFV1, is intra-only, so packet N is frame N: time it exactly.
        cmd += ["-bsf:v", f"setts=ts=N*{fps.denominator}/({fps.numerator}*TB)"]
    cmd += ["-f", fmt, str(target)]
    try:
        res = run_capture(cmd, timeout=3600)
    finally:
        with contextlib.suppress(FileNotFoundError):
            listing.unlink()
    if res.returncode != 0:
        raise EncodeError("join", [cmd], [res.returncode], [tail(res.stderr)])
    expected = sum(frames for _, frames in parts)
    got = count_frames(target)
    if got != expected:
        raise EncodeError(
            "join", [cmd], [0], [f"joined file holds {got} frames, expected {expected}"]
        )
