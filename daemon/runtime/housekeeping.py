"""What a start-up does after a crash: files a hard kill left half-written are removed, and
jobs the recovery gave up on get their report and their source filed in ``failed/``.

Only the daemon holding the root's lock calls this (no other process can be writing there).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

from daemon.engine.chunks import ChunkStore
from daemon.runtime.config import DaemonConfig
from daemon.runtime.queue import Job, Queue
from daemon.runtime.states import JobState

log = logging.getLogger(__name__)

#: names only finishline writes, never a deliverable: the hidden partial output beside its
#: destination, atomic_write's temporary files, per-run intermediates and stills in work/
LEFTOVERS_OUT = (".*.partial.*", ".*.tmp")
LEFTOVERS_WORK = ("video.*.mov", "video.*.mkv", "compare.*.png", ".*.tmp")


def clean_leftovers(cfg: DaemonConfig) -> list[Path]:
    """Remove what a killed run left behind in ``out/`` and ``work/``; returns what went."""
    removed: list[Path] = []
    for base, patterns in ((cfg.out, LEFTOVERS_OUT), (cfg.work, LEFTOVERS_WORK)):
        if not base.is_dir():
            continue
        for pattern in patterns:
            for path in base.rglob(pattern):
                if path.is_file() and not path.is_symlink():
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(path)
    if removed:
        log.info("removed %d file(s) a stopped run left half-written", len(removed))
    return removed


def release_chunks(cfg: DaemonConfig) -> int:
    """Chunks a stopped daemon was running go back to the queue (their attempt counted; one
    that had ``max_attempts`` fails its job); finished chunks stay done, so a restart redoes
    only those in flight."""
    store = ChunkStore(cfg.db)
    try:
        n = store.release(max_attempts=cfg.max_attempts)
    finally:
        store.close()
    if n:
        log.info("%d chunk(s) in flight when the daemon stopped go back to the queue", n)
    return n


def file_given_up(cfg: DaemonConfig, queue: Queue, jobs: list[Job]) -> None:
    """Jobs the recovery failed after ``max_attempts`` interrupted runs: their sources go to
    ``failed/`` beside a report, so the next start does not queue them again (a crash loop
    ends there)."""
    from daemon.runtime.worker import Worker

    filer = Worker("recovery", cfg, queue, threading.Event())
    for job in jobs:
        if job.state is not JobState.FAILED:
            continue
        message = job.error or "gave up after repeated interrupted attempts"
        message += (
            "; the daemon stopped while running it each time (a crash, a kill or the machine "
            "going down): if it happens again, run it by hand to see why"
        )
        report, _ = filer.file_failure(job, Path(job.src), Path(job.name), message)
        queue.set_report(job.id, report)
