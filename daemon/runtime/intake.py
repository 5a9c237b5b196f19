"""From "a path changed" to "a job is queued": ignore rules, copy-complete checks, duplicate
detection and batching. The watchdog handlers only hand paths to :meth:`Intake.notice`.

Nothing here blocks the daemon's main thread on a file: only regular files inside the hot
folder they were dropped in are taken (a FIFO, a device or a link out of the tree is reported
once and left alone), and hashing runs on a background thread. Nothing raises out of
:meth:`Intake.poll`: one bad file cannot stop intake.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from daemon.runtime.queue import Job, Queue

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".gif",  # taken so the probe can say what to do with it (an animated GIF is refused)
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".m4v",
        ".mxf",
        ".ts",
        ".mts",
        ".m2ts",
        ".y4m",
        ".mpg",
        ".mpeg",
        ".wmv",
        ".flv",
        ".3gp",
    }
)
TEMP_SUFFIXES = (
    ".part",
    ".crdownload",
    ".tmp",
    ".temp",
    ".download",
    ".partial",
    ".!qb",
    ".filepart",
    ".swp",
)
KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


# -- pure rules -----------------------------------------------------------------------------------


def is_ignored(path: Path) -> bool:
    """Temporary and hidden names (a copy in progress, editor swap files, our own reports)."""
    name = path.name
    if name.startswith((".", "~")) or name.endswith("~"):
        return True
    lower = name.lower()
    if lower.endswith(TEMP_SUFFIXES) or lower.endswith(".error.txt"):
        return True
    return path.suffix.lower() not in VIDEO_EXTENSIONS


def shown(path: Path | str) -> str:
    """A path as text for people: bytes that are not UTF-8 written as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_problem(path: Path) -> str | None:
    """Why a name cannot be stored in the queue (SQLite text is UTF-8), or None."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8; rename it and it is taken"
    return None


def kind_problem(mode: int) -> str | None:
    """Why a file of this kind (``st_mode``) is not taken, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"it is {kind}, not a regular file; only regular files are taken"


def outside_problem(real: Path, folder: Path) -> str | None:
    """Why a link whose target is ``real`` is not taken from ``folder`` (both resolved)."""
    if real.is_relative_to(folder):
        return None
    return f"it links to {shown(real)}, outside its hot folder; copy the file in instead"


# -- I/O ------------------------------------------------------------------------------------------


def refusal(path: Path, folder: Path) -> str | None:
    """Why ``path`` (in the hot folder ``folder``) is left alone, or None when it is a regular
    file (after resolving links) inside that folder. Only stats: never opens the file."""
    problem = name_problem(path)
    if problem:
        return problem
    real = Path(os.path.realpath(path))
    problem = outside_problem(real, Path(os.path.realpath(folder)))
    if problem:
        return problem
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return "it is a link to nothing; only regular files are taken"
    except OSError as exc:
        return f"it cannot be looked at ({exc.strerror}); only regular files are taken"
    return kind_problem(st.st_mode)


class NotRegularFile(OSError):
    """What was opened is not a regular file (replaced since it was looked at)."""


class ChangedWhileHashing(OSError):
    """The file changed while it was read: it is still being written."""


class HashStopped(Exception):
    """The daemon is stopping."""


def content_hash(
    path: Path, *, stop: threading.Event | None = None, chunk: int = 1 << 20
) -> tuple[str, int]:
    """SHA-256 and size of a regular file. Opened with ``O_NONBLOCK`` and checked with
    ``fstat`` before any read (a FIFO or a device never blocks or streams forever); reads at
    most the size it had then, and raises :class:`ChangedWhileHashing` if it changed."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        problem = kind_problem(before.st_mode)
        if problem:
            raise NotRegularFile(problem)
        h = hashlib.sha256()
        left = before.st_size
        while left > 0:
            if stop is not None and stop.is_set():
                raise HashStopped
            block = os.read(fd, min(chunk, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
        after = os.fstat(fd)
        if left or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise ChangedWhileHashing(f"{shown(path)} changed while it was read")
        return h.hexdigest(), before.st_size
    finally:
        os.close(fd)


def files_under(folder: Path) -> Iterator[Path]:
    """Every non-folder entry under ``folder`` (links are not followed into folders; an
    unreadable subfolder is skipped)."""
    for top, _dirs, names in os.walk(folder, followlinks=False):
        for name in sorted(names):
            yield Path(top) / name


@dataclass(slots=True)
class Pending:
    """A file seen in a hot folder and not yet queued: what it looked like when last seen."""

    size: int
    mtime: float
    stable_since: float

    def observe(self, size: int, mtime: float, now: float) -> bool:
        """A fresh look at the file; any change restarts the settle clock (returns True)."""
        if (size, mtime) == (self.size, self.mtime):
            return False
        self.size, self.mtime, self.stable_since = size, mtime, now
        return True

    def touch(self, now: float) -> None:
        """An event for the file (written, closed, moved): the settle clock restarts."""
        self.stable_since = now

    def settled(self, now: float, settle: float) -> bool:
        """Complete: unchanged for ``settle`` seconds since the last change, whatever the close
        events (a copy may close and reopen the file between chunks)."""
        return now - self.stable_since >= settle


class Hasher:
    """Hashes files on one background thread, so the main loop never waits on a read."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-hash")
        self._running: dict[Path, Future[tuple[str, int]]] = {}

    def start(self, path: Path) -> None:
        if path not in self._running:
            self._running[path] = self._pool.submit(content_hash, path, stop=self.stop)

    def busy(self, path: Path) -> bool:
        return path in self._running

    def finished(self, wait_s: float = 0.0) -> list[tuple[Path, Future[tuple[str, int]]]]:
        """The hashes done now (waiting up to ``wait_s`` for the others)."""
        if wait_s > 0 and self._running:
            wait(list(self._running.values()), timeout=wait_s, return_when=ALL_COMPLETED)
        done = [(p, f) for p, f in self._running.items() if f.done()]
        for p, _ in done:
            del self._running[p]
        return done

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


class Intake:
    """Decides when a file in a hot folder is complete, then queues it once."""

    def __init__(
        self,
        queue: Queue,
        hot: Path,
        *,
        settle_seconds: float,
        batch_window: float,
        max_attempts: int,
        presets: Iterable[str],
        on_duplicate: Callable[[Path, str, Job], None] | None = None,
        hash_wait: float = 0.0,
    ) -> None:
        self.queue = queue
        self.hot = hot
        self.settle = settle_seconds
        self.batch_window = batch_window
        self.max_attempts = max_attempts
        self.presets: frozenset[str] = frozenset(presets)
        self.on_duplicate = on_duplicate
        self.hash_wait = hash_wait
        self._pending: dict[Path, Pending] = {}
        self._told_ignored: set[Path] = set()
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, str], tuple[int, float]] = {}
        self._hasher = Hasher()
        self._refused: dict[Path, str] = {}  # left alone, reported once: path -> why
        self._troubled: dict[Path, str] = {}  # failed once, logged once, retried quietly
        self._noted_active: dict[Path, int] = {}  # changed while queued: noted once per job

    # -- called from watchdog threads: cheap, no I/O ---------------------------------------------

    def _note_ignored(self, p: Path) -> None:
        """A file in a hot folder that is not a video by its name: said once, at INFO (hidden
        and temporary names, copies in progress and our own reports stay silent)."""
        name = p.name
        quiet = (
            name.startswith((".", "~"))
            or name.endswith("~")
            or name.lower().endswith((*TEMP_SUFFIXES, ".error.txt", ".duplicate.txt"))
        )
        if quiet or self._preset_of(p) is None or p in self._told_ignored:
            return
        if len(self._told_ignored) < 10_000:
            self._told_ignored.add(p)
        log.info("ignoring %s: %s is not a video file type", shown(p), p.suffix or "no extension")

    def notice(self, path: str | Path) -> None:
        """Something happened to ``path`` just now (created, written, closed, moved, deleted)."""
        p = Path(path)
        if is_ignored(p) or self._preset_of(p) is None:
            self._note_ignored(p)
            return
        now = time.monotonic()
        with self._lock:
            entry = self._pending.get(p)
            if entry is None:
                self._pending[p] = Pending(-1, -1.0, now)
            else:
                entry.touch(now)

    def scan(self, presets: Iterable[str] | None = None) -> int:
        """Every file already in the hot folders (at start-up: dropped while we were down; for
        a new preset: dropped before it was valid). Never raises."""
        count = 0
        for preset in sorted(self.presets if presets is None else presets):
            try:
                for p in files_under(self.hot / preset):
                    if not is_ignored(p):
                        self.notice(p)
                        count += 1
            except Exception:  # a scan must not stop the daemon
                log.exception("cannot scan the hot folder %s", shown(self.hot / preset))
        return count

    def set_presets(self, presets: Iterable[str]) -> None:
        """The presets whose hot folders are taken from (read by the watchdog threads)."""
        self.presets = frozenset(presets)

    def close(self) -> None:
        self._hasher.close()

    # -- called from the main thread ------------------------------------------------------------

    def poll(self) -> list[int]:
        """Look at the pending files; start hashing the complete ones; queue the hashed ones.
        Returns new job ids. Never raises and never waits on a file."""
        now = time.monotonic()
        with self._lock:
            items = list(self._pending.items())
        for p, entry in items:
            self._guard(p, self._look, p, entry, now)
        ids = []
        for p, result in self._hasher.finished(self.hash_wait):
            job_id = self._guard(p, self._finish, p, result)
            if job_id:
                ids.append(job_id)
        return ids

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def problems(self) -> dict[str, str]:
        """Files left alone, for people: path under the hot folder -> why."""
        return {self._rel_text(p): why for p, why in sorted(self._refused.items())}

    # -- one file ---------------------------------------------------------------------------------

    def _guard(self, p: Path, fn: Callable[..., int | None], *args: object) -> int | None:
        """Run one file's step; a failure is logged once (per file and error, until the file is
        taken or gone) and the file is looked at again after the settle time."""
        try:
            result = fn(*args)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if self._troubled.get(p) != why:
                self._troubled[p] = why
                if isinstance(exc, OSError):
                    log.warning(
                        "cannot read %s (%s); will look again",
                        self._rel_text(p),
                        exc.strerror or exc,
                    )
                else:
                    log.exception("unexpected error on %s; will look again", self._rel_text(p))
            self._repend(p)
            return None
        return result

    def _drop(self, p: Path) -> None:
        with self._lock:
            self._pending.pop(p, None)

    def _repend(self, p: Path) -> None:
        with self._lock:
            self._pending.setdefault(p, Pending(-1, -1.0, time.monotonic()))

    def _forget(self, p: Path) -> None:
        """``p`` is gone: drop everything known about it."""
        self._drop(p)
        self._refused.pop(p, None)
        self._troubled.pop(p, None)
        self._noted_active.pop(p, None)

    def _refuse(self, p: Path, why: str) -> None:
        self._drop(p)
        if self._refused.get(p) != why:
            self._refused[p] = why
            log.warning("not taking %s: %s.", self._rel_text(p), why)

    def _look(self, p: Path, entry: Pending, now: float) -> None:
        """One pending file: gone, refused, still changing, already queued, or ready to hash."""
        try:
            os.lstat(p)
        except FileNotFoundError:
            self._forget(p)
            return
        preset = self._preset_of(p)
        if preset is None:  # its preset went away
            self._drop(p)
            return
        why = refusal(p, self.hot / preset)
        if why:
            self._refuse(p, why)
            return
        self._refused.pop(p, None)
        st = os.stat(p)
        if entry.observe(st.st_size, st.st_mtime, now) or not entry.settled(now, self.settle):
            return
        if self._hasher.busy(p):
            return
        self._drop(p)
        if self._active_job(p, st.st_size) is None:
            self._hasher.start(p)

    def _active_job(self, p: Path, size: int) -> Job | None:
        """The queued or running job for this path: a file that changes after it was queued
        is not queued a second time (a change in size is noted once per job)."""
        job = self.queue.active_job_for(str(p))
        if job is not None and job.size != size and self._noted_active.get(p) != job.id:
            self._noted_active[p] = job.id
            log.info(
                "%s changed after it was queued as job %d (%s); not queueing it again",
                self._rel_text(p),
                job.id,
                job.state,
                extra={"job": job.id},
            )
        return job

    def _finish(self, p: Path, result: Future[tuple[str, int]]) -> int | None:
        try:
            digest, size = result.result()
        except ChangedWhileHashing:
            self._repend(p)
            return None
        except (HashStopped, FileNotFoundError):
            return None
        except NotRegularFile as exc:
            self._refuse(p, str(exc))
            return None
        return self._queue_file(p, digest, size)

    def _rel_text(self, p: Path) -> str:
        try:
            return shown(p.relative_to(self.hot))
        except ValueError:
            return shown(p)

    def _preset_of(self, p: Path) -> str | None:
        try:
            rel = p.relative_to(self.hot)
        except ValueError:
            return None
        preset = rel.parts[0] if len(rel.parts) > 1 else None
        return preset if preset in self.presets else None

    def _queue_file(self, p: Path, digest: str, size: int) -> int | None:
        preset = self._preset_of(p)
        if preset is None or not p.exists() or self._active_job(p, size) is not None:
            return None
        dup = self.queue.find_duplicate(digest, preset)
        if dup is not None:
            if Path(dup.src) == p:
                return None  # the same file noticed again
            log.warning(
                "%s has the same content as job %d (%s); not processing it twice",
                self._rel_text(p),
                dup.id,
                dup.name,
            )
            if self.on_duplicate:
                self.on_duplicate(p, preset, dup)
            return None
        rel = p.relative_to(self.hot / preset)
        batch_id = self._batch_for(preset, rel)
        job_id = self.queue.add_job(
            str(p),
            name=str(rel),
            preset=preset,
            content_hash=digest,
            size=size,
            batch_id=batch_id,
            max_attempts=self.max_attempts,
        )
        self._troubled.pop(p, None)
        log.info("queued %s as job %d (preset %s, batch %d)", rel, job_id, preset, batch_id)
        return job_id

    def _batch_for(self, preset: str, rel: Path) -> int:
        """A subfolder of a hot folder is one batch; loose files dropped within the batch
        window of each other are one batch."""
        now = time.monotonic()
        if len(rel.parts) > 1:
            key = (preset, rel.parts[0])
            name = rel.parts[0]
            assemble = (self.hot / preset / name / ".assemble").exists()
            if key not in self._batches:
                self._batches[key] = (self.queue.add_batch(preset, name, assemble=assemble), now)
            return self._batches[key][0]
        key = (preset, "")
        found = self._batches.get(key)
        if found and now - found[1] <= self.batch_window:
            self._batches[key] = (found[0], now)
            return found[0]
        name = time.strftime("drop-%Y%m%d-%H%M%S")
        batch_id = self.queue.add_batch(preset, name)
        self._batches[key] = (batch_id, now)
        return batch_id
