"""The daemon: hot-folder watcher, intake, workers, signals. ``finishline daemon`` runs it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.core.files import move_safely
from daemon.engine.presets import list_presets, load_preset_file
from daemon.engine.slots import Slot, count_gpus, plan_slots, usable_cores
from daemon.runtime import running
from daemon.runtime.config import DaemonConfig
from daemon.runtime.housekeeping import clean_leftovers, file_given_up, release_chunks
from daemon.runtime.intake import Intake, shown
from daemon.runtime.logs import setup_logging
from daemon.runtime.queue import Job, Queue
from daemon.runtime.watcher import make_observer
from daemon.runtime.worker import Worker

if TYPE_CHECKING:
    from daemon.runtime.cluster import ClusterPool

log = logging.getLogger(__name__)

#: how often the presets and hot folders are looked at again while the daemon runs (seconds)
PRESET_REFRESH_S = 2.0


# -- presets, live --------------------------------------------------------------------------------


def judge_presets(
    wanted: Iterable[str],
    found: dict[str, Path],
    errors: dict[str, str],
    hot_dirs: Iterable[str],
    *,
    configured: bool,
) -> tuple[set[str], dict[str, str]]:
    """Pure: which presets are live, and each hot folder's problem in one sentence.
    ``errors`` holds the presets whose file does not load; ``hot_dirs`` the folders in hot/."""
    valid: set[str] = set()
    problems: dict[str, str] = {}
    for name in wanted:
        if name not in found:
            problems[name] = (
                f"daemon.toml names the preset {name!r}, which does not exist; add {name}.toml "
                "to a presets folder or remove it from daemon.toml"
            )
        elif name in errors:
            problems[name] = f"its preset does not load ({errors[name]}); fix {found[name]}"
        else:
            valid.add(name)
    for name in hot_dirs:
        if name in valid or name in problems or name.startswith("."):
            continue
        if configured and name in found:
            problems[name] = (
                f"the preset {name!r} is not among the presets daemon.toml names; add it there"
            )
        else:
            problems[name] = (
                f"no preset named {name!r}; files dropped here wait until there is one "
                f"({name}.toml in a presets folder)"
            )
    return valid, problems


class PresetWatch:
    """The live presets: found now (or the ones daemon.toml names) and loading; looked at
    again while the daemon runs. Each problem is logged once (not on every look)."""

    def __init__(self, hot: Path, out: Path, configured: tuple[str, ...] = ()) -> None:
        self.hot = hot
        self.out = out
        self.configured = configured
        self.valid: frozenset[str] = frozenset()
        self.problems: dict[str, str] = {}
        self._looked = False
        self._checked: dict[Path, tuple[tuple[int, int], str | None]] = {}

    def _error_of(self, path: Path) -> str | None:
        """Why the preset file does not load, or None (cached while the file is unchanged)."""
        try:
            st = path.stat()
        except OSError as exc:
            return f"cannot read it: {exc.strerror}"
        key = (st.st_mtime_ns, st.st_size)
        cached = self._checked.get(path)
        if cached and cached[0] == key:
            return cached[1]
        try:
            load_preset_file(path)
            error = None
        except Exception as exc:  # any failure of one preset file is that file's problem
            lines = (line.strip().removeprefix("- ") for line in str(exc).splitlines())
            error = " ".join(line for line in lines if line).rstrip(".") or type(exc).__name__
        self._checked[path] = (key, error)
        return error

    def _hot_dirs(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.hot) if e.is_dir(follow_symlinks=True))
        except OSError:
            return []

    def refresh(self) -> tuple[set[str], set[str]]:
        """Look again; returns (presets added, presets removed) since the last look."""
        found = list_presets()
        wanted = self.configured or tuple(found)
        errors = {n: e for n in wanted if n in found if (e := self._error_of(found[n]))}
        for name in wanted:
            if name in found and name not in errors:
                (self.hot / name).mkdir(parents=True, exist_ok=True)
                (self.out / name).mkdir(parents=True, exist_ok=True)
        valid, problems = judge_presets(
            wanted, found, errors, self._hot_dirs(), configured=bool(self.configured)
        )
        for name, why in sorted(problems.items()):
            if self.problems.get(name) != why:
                log.warning("hot folder %s: %s.", shown(name), why)
        for name in sorted(set(self.problems) - set(problems)):
            log.info("hot folder %s: its problem is gone", shown(name))
        added, removed = valid - self.valid, self.valid - valid
        if self._looked:  # the first look is reported by the start-up line
            for name in sorted(added):
                log.info("new preset %s: taking clips from hot/%s", name, name)
        for name in sorted(removed):
            log.info("preset %s is gone: no longer taking clips from hot/%s", name, name)
        self.valid, self.problems, self._looked = frozenset(valid), problems, True
        return added, removed


class Daemon:
    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.signals = 0
        self.workers: list[Worker] = []
        self.threads: list[threading.Thread] = []
        self.watch = PresetWatch(cfg.hot, cfg.out, cfg.presets)
        self.presets: frozenset[str] = frozenset()
        self._published: dict[str, str] | None = None
        self._errors: set[str] = set()

    def prepare(self) -> Queue:
        cfg = self.cfg
        for folder in (cfg.hot, cfg.work, cfg.done, cfg.failed, cfg.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.watch.refresh()
        self.presets = self.watch.valid
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

    def _safely(self, what: str, fn: Callable[[], object]) -> None:
        """One step of the main loop; a failure is logged (once per message) and the loop goes
        on, so a bug in one step cannot stop the daemon."""
        try:
            fn()
        except Exception as exc:
            message = f"{what}: {exc!r}"
            if message not in self._errors:
                self._errors.add(message)
                log.exception("unexpected error in %s; the daemon goes on", what)

    def _refresh_presets(self, intake: Intake, queue: Queue) -> None:
        added, _removed = self.watch.refresh()
        self.presets = self.watch.valid
        intake.set_presets(self.presets)
        if added:
            intake.scan(added)  # files dropped before the preset was valid
        self._publish_problems(intake, queue)

    def _publish_problems(self, intake: Intake, queue: Queue) -> None:
        """What the intake leaves alone, in the queue's settings, for the TUI."""
        problems = {f"hot/{shown(k)}": v for k, v in self.watch.problems.items()}
        problems.update({f"hot/{k}": v for k, v in intake.problems().items()})
        if problems != self._published:
            queue.set_intake_problems(problems)
            self._published = problems

    def run(self, *, install_signals: bool = True) -> int:
        lock = running.acquire(self.cfg.root)  # refuses while another daemon runs here
        try:
            return self._run(lock, install_signals=install_signals)
        finally:
            lock.release()

    def _run(self, lock: running.DaemonLock, *, install_signals: bool) -> int:
        log_path = setup_logging(self.cfg.logs, self.cfg.log_level)
        queue = self.prepare()
        if install_signals:
            signal.signal(signal.SIGTERM, self.handle_signal)
            signal.signal(signal.SIGINT, self.handle_signal)
        queue.heartbeat(os.getpid(), started=lock.me.started)
        recovered = queue.recover()
        for job in recovered:
            log.warning(
                "job %d (%s) was running when the daemon stopped: now %s (attempt %d)",
                job.id,
                job.name,
                job.state,
                job.attempts,
                extra={"job": job.id},
            )
        # we hold the root's lock: what a killed run left half-written is ours to remove, and
        # a job given up after max_attempts is filed in failed/ (not queued again from hot/)
        self._safely("removing leftovers", lambda: clean_leftovers(self.cfg))
        self._safely("releasing chunks in flight", lambda: release_chunks(self.cfg))
        self._safely("filing given-up jobs", lambda: file_given_up(self.cfg, queue, recovered))
        slots = plan_slots(
            workers=self.cfg.workers,
            gpus=count_gpus(),
            workers_per_gpu=self.cfg.workers_per_gpu,
            cores=usable_cores(),
        )
        cluster = self._cluster(queue)
        if cluster is not None:
            slots = self._head_slots()
        elif len(slots) < self.cfg.workers:
            log.warning(
                "workers = %d: running %d, one per %s (more would share and overfill them)",
                self.cfg.workers,
                len(slots),
                "GPU slot (see workers_per_gpu)" if slots[0].gpu is not None else "CPU core",
            )
        n_workers = len(slots)
        log.info(
            "finishline daemon: root %s, %d worker(s), presets %s, log %s%s",
            self.cfg.root,
            n_workers,
            ", ".join(sorted(self.presets)) or "none",
            log_path,
            " (polling)" if self.cfg.polling else "",
        )
        if cluster is not None:
            log.info("chunks run on the Ray cluster at %s", self.cfg.cluster.address)
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
            for i, slot in enumerate(slots):
                name = f"{socket.gethostname()}:{os.getpid()}:w{i}"
                w = Worker(name, self.cfg, queue, self.stop, slot, cluster=cluster, peers=n_workers)
                log.info("worker w%d on %s", i, slot.device)
                t = threading.Thread(target=w.run_forever, name=f"worker-{i}", daemon=True)
                self.workers.append(w)
                self.threads.append(t)
                t.start()
            self._loop(intake, queue)
        finally:
            intake.close()
            observer.stop()
            observer.join(timeout=5)
            for t in self.threads:
                t.join(timeout=60)
            if cluster is not None:
                self._safely("closing the cluster connection", cluster.close)
            queue.close()
            log.info("finishline daemon stopped")
        return 0

    def _cluster(self, queue: Queue) -> ClusterPool | None:
        """With ``[cluster] engine = "ray"``: the pool of chunk slots on the cluster, kept
        connected by a thread (an unreachable cluster is one error in the log; jobs wait)."""
        if self.cfg.cluster.engine != "ray":
            return None
        from daemon.runtime.cluster import ClusterPool

        pool = ClusterPool(
            self.cfg.cluster,
            workers_per_gpu=self.cfg.workers_per_gpu,
            on_slot=lambda name, device: queue.set_worker_device(None, name, device),
        )
        t = threading.Thread(target=pool.watch, args=(self.stop,), name="cluster", daemon=True)
        t.start()
        return pool

    def _head_slots(self) -> list[Slot]:
        """With a cluster, this machine only assesses, checks scripts, muxes and verifies:
        ``workers`` jobs at once (0: two), sharing its cores, no GPU."""
        return plan_slots(
            workers=self.cfg.workers or 2, gpus=0, cores=usable_cores(), per_core=False
        )

    def _loop(self, intake: Intake, queue: Queue) -> None:
        """The main thread: never waits on a file, beats every 0.25 s."""
        next_refresh = time.monotonic() + PRESET_REFRESH_S
        self._safely("publishing intake problems", lambda: self._publish_problems(intake, queue))
        while not self.stop.is_set():
            if time.monotonic() >= next_refresh:
                self._safely("the preset refresh", lambda: self._refresh_presets(intake, queue))
                next_refresh = time.monotonic() + PRESET_REFRESH_S
            self._safely("intake", intake.poll)
            self._safely("the heartbeat", lambda: queue.heartbeat(os.getpid()))
            self.stop.wait(0.25)
