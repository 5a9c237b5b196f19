"""From "a path changed" to "a job is queued": ignore rules, copy-complete checks, duplicate
detection and batching. The watchdog handlers only hand paths to :meth:`Intake.notice`."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.runtime.queue import Queue

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
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


def is_ignored(path: Path) -> bool:
    """Temporary and hidden names (a copy in progress, editor swap files, our own reports)."""
    name = path.name
    if name.startswith((".", "~")) or name.endswith("~"):
        return True
    lower = name.lower()
    if lower.endswith(TEMP_SUFFIXES) or lower.endswith(".error.txt"):
        return True
    return path.suffix.lower() not in VIDEO_EXTENSIONS


def content_hash(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(slots=True)
class Pending:
    """A file seen in a hot folder and not yet queued: what it looked like when last seen."""

    size: int
    mtime: float
    stable_since: float
    closed: bool = False

    def observe(self, size: int, mtime: float, now: float) -> bool:
        """A fresh look at the file; any change restarts the settle clock (returns True)."""
        if (size, mtime) == (self.size, self.mtime):
            return False
        self.size, self.mtime, self.stable_since = size, mtime, now
        return True

    def settled(self, now: float, settle: float) -> bool:
        """Complete: unchanged for ``settle`` seconds. A close event (inotify) shortens the
        wait, but the size and mtime must still hold still briefly: a copy may close and
        reopen the file."""
        wait = min(settle, 0.5) if self.closed else settle
        return now - self.stable_since >= wait


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
        presets: set[str],
        on_duplicate=None,
    ) -> None:
        self.queue = queue
        self.hot = hot
        self.settle = settle_seconds
        self.batch_window = batch_window
        self.max_attempts = max_attempts
        self.presets = presets
        self.on_duplicate = on_duplicate
        self._pending: dict[Path, Pending] = {}
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, str], tuple[int, float]] = {}

    # -- called from watchdog threads: cheap, no I/O beyond a stat ------------------------------

    def notice(self, path: str | Path, *, closed: bool = False) -> None:
        p = Path(path)
        if is_ignored(p) or self._preset_of(p) is None:
            return
        with self._lock:
            entry = self._pending.get(p)
            if entry is None:
                self._pending[p] = Pending(-1, -1.0, time.monotonic(), closed)
            elif closed:
                entry.closed = True

    def scan(self) -> int:
        """Startup scan: every file already in the hot folders (dropped while we were down)."""
        count = 0
        for preset in sorted(self.presets):
            folder = self.hot / preset
            if folder.is_dir():
                for p in sorted(folder.rglob("*")):
                    if p.is_file() and not is_ignored(p):
                        self.notice(p)
                        count += 1
        return count

    # -- called from the intake thread ----------------------------------------------------------

    def poll(self) -> list[int]:
        """Check pending files; queue the complete ones. Returns new job ids."""
        now = time.monotonic()
        ready: list[Path] = []
        with self._lock:
            items = list(self._pending.items())
        for p, entry in items:
            try:
                st = p.stat()
            except FileNotFoundError:
                with self._lock:
                    self._pending.pop(p, None)
                continue
            if not entry.observe(st.st_size, st.st_mtime, now) and entry.settled(now, self.settle):
                ready.append(p)
        ids = []
        for p in ready:
            with self._lock:
                self._pending.pop(p, None)
            try:
                job_id = self._queue_file(p)
            except OSError as exc:
                log.warning("cannot read %s (%s); will look again", p, exc)
                self.notice(p)
                continue
            if job_id:
                ids.append(job_id)
        return ids

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _preset_of(self, p: Path) -> str | None:
        try:
            rel = p.relative_to(self.hot)
        except ValueError:
            return None
        preset = rel.parts[0] if len(rel.parts) > 1 else None
        return preset if preset in self.presets else None

    def _queue_file(self, p: Path) -> int | None:
        preset = self._preset_of(p)
        if preset is None or not p.exists():
            return None
        digest = content_hash(p)
        size = p.stat().st_size
        dup = self.queue.find_duplicate(digest, preset)
        if dup is not None:
            if Path(dup.src) == p:
                return None  # the same file noticed again
            log.warning(
                "%s has the same content as job %d (%s); not processing it twice",
                p,
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
