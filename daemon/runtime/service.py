"""The daemon: hot-folder watcher, intake, workers, signals. ``finishline daemon`` runs it."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from daemon.core.files import move_safely
from daemon.engine.presets import list_presets
from daemon.runtime.config import DaemonConfig
from daemon.runtime.intake import Intake
from daemon.runtime.logs import setup_logging
from daemon.runtime.queue import Job, Queue
from daemon.runtime.watcher import make_observer
from daemon.runtime.worker import Worker

log = logging.getLogger(__name__)


def default_workers() -> int:
    """One per GPU (NVML), or one on a CPU-only machine."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return max(1, int(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 1


class Daemon:
    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.signals = 0
        self.workers: list[Worker] = []
        self.threads: list[threading.Thread] = []

    def prepare(self) -> Queue:
        cfg = self.cfg
        presets = set(cfg.presets) if cfg.presets else set(list_presets())
        self.presets = presets
        for folder in (cfg.work, cfg.done, cfg.failed, cfg.logs):
            folder.mkdir(parents=True, exist_ok=True)
        for name in sorted(presets):
            (cfg.hot / name).mkdir(parents=True, exist_ok=True)
            (cfg.out / name).mkdir(parents=True, exist_ok=True)
        return Queue(cfg.db)

    def _on_duplicate(self, path: Path, preset: str, original: Job) -> None:
        rel = path.relative_to(self.cfg.hot / preset)
        moved = move_safely(path, self.cfg.done / preset, rel)
        moved.with_name(moved.name + ".duplicate.txt").write_text(
            f"{rel} has the same content as job {original.id} ({original.name}), which is "
            f"{original.state}; output: {original.output or 'not yet'}. It was not processed "
            "again. To process it anyway, run: finishline queue requeue "
            f"{original.id}\n"
        )

    def handle_signal(self, signum: int, frame: object) -> None:
        self.signals += 1
        if self.signals >= 2:
            log.warning("second signal: exiting at once")
            for w in self.workers:
                if w.current:
                    w.current.cancel()
            os._exit(1)
        log.info("signal %d: stop claiming, interrupt running jobs, re-queue them, exit", signum)
        self.stop.set()

    def run(self, *, install_signals: bool = True) -> int:
        log_path = setup_logging(self.cfg.logs, self.cfg.log_level)
        queue = self.prepare()
        if install_signals:
            signal.signal(signal.SIGTERM, self.handle_signal)
            signal.signal(signal.SIGINT, self.handle_signal)
        started = time.time()
        queue.heartbeat(os.getpid(), started=started)
        for job in queue.recover():
            log.warning(
                "job %d (%s) was running when the daemon stopped: now %s (attempt %d)",
                job.id,
                job.name,
                job.state,
                job.attempts,
                extra={"job": job.id},
            )
        n_workers = self.cfg.workers or default_workers()
        log.info(
            "finishline daemon: root %s, %d worker(s), presets %s, log %s%s",
            self.cfg.root,
            n_workers,
            ", ".join(sorted(self.presets)),
            log_path,
            " (polling)" if self.cfg.polling else "",
        )
        intake = Intake(
            queue,
            self.cfg.hot,
            settle_seconds=self.cfg.settle_seconds,
            batch_window=self.cfg.batch_window,
            max_attempts=self.cfg.max_attempts,
            presets=self.presets,
            on_duplicate=self._on_duplicate,
        )
        observer = make_observer(self.cfg.hot, intake, polling=self.cfg.polling)
        observer.start()
        try:
            found = intake.scan()
            if found:
                log.info("start-up scan: %d file(s) already in the hot folders", found)
            for i in range(n_workers):
                w = Worker(f"{os.uname().nodename}:{os.getpid()}:w{i}", self.cfg, queue, self.stop)
                t = threading.Thread(target=w.run_forever, name=f"worker-{i}", daemon=True)
                self.workers.append(w)
                self.threads.append(t)
                t.start()
            while not self.stop.is_set():
                intake.poll()
                queue.heartbeat(os.getpid())
                self.stop.wait(0.25)
        finally:
            observer.stop()
            observer.join(timeout=5)
            for t in self.threads:
                t.join(timeout=60)
            queue.close()
            log.info("finishline daemon stopped")
        return 0
