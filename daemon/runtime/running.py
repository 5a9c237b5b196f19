"""One daemon per root, and where the running daemons are.

A daemon holds ``ROOT/daemon.lock`` with ``flock`` for its whole life (the kernel drops the lock
when the process dies, so a crash leaves no stale lock), and records itself in a small runtime
file, ``$XDG_RUNTIME_DIR/finishline/daemon-PID.json`` (else under the XDG cache folder), removed
on a clean exit. :func:`running_roots` reads those files back for ``finishline queue`` and the
TUI: the roots of daemons that are alive and hold their lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.core.errors import AppError
from daemon.core.places import xdg_dir
from daemon.core.tools import pid_alive

log = logging.getLogger(__name__)

LOCK_NAME = "daemon.lock"


class DaemonAlreadyRunning(AppError):
    title = "daemon already running"


@dataclass(frozen=True, slots=True)
class RunningDaemon:
    pid: int
    host: str
    root: Path
    started: float

    def to_json(self) -> str:
        return json.dumps(
            {"pid": self.pid, "host": self.host, "root": str(self.root), "started": self.started}
        )

    @classmethod
    def from_json(cls, text: str) -> RunningDaemon | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), Path(data["root"]), data["started"])
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"


# -- where the runtime files live ------------------------------------------------------------


def runtime_dirs() -> list[Path]:
    """Where daemons record themselves: ``$XDG_RUNTIME_DIR/finishline`` when that is set, and
    the XDG cache folder's ``running/`` (the first is written, both are read)."""
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        dirs.append(Path(runtime) / "finishline")
    dirs.append(xdg_dir("cache") / "running")
    return dirs


def _lock_held(root: Path) -> bool:
    """Whether some process holds ``root``'s lock (a shared probe, dropped at once)."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a probe lock we got
    return False


def running_daemons() -> list[RunningDaemon]:
    """The daemons on this host that are alive and hold their root's lock, oldest first.
    Records of dead daemons (after a crash or ``kill -9``) are removed on the way."""
    host = socket.gethostname()
    found: dict[Path, RunningDaemon] = {}
    for folder in runtime_dirs():
        for path in sorted(folder.glob("daemon-*.json")) if folder.is_dir() else []:
            try:
                record = RunningDaemon.from_json(path.read_text(encoding="utf-8"))
            except OSError:
                continue
            if record is None or record.host != host:
                continue
            if not pid_alive(record.pid):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if _lock_held(record.root):
                found.setdefault(record.root, record)
    return sorted(found.values(), key=lambda d: d.started)


def running_roots() -> list[Path]:
    """The roots of the live daemons on this host (absolute paths, oldest daemon first)."""
    return [d.root for d in running_daemons()]


# -- the lock -----------------------------------------------------------------------------------


class DaemonLock:
    """``ROOT/daemon.lock``, held with ``flock`` from :func:`acquire` until :meth:`release`
    (or the process's death), plus the runtime record :func:`running_roots` reads."""

    def __init__(self, fd: int, me: RunningDaemon, record: Path | None) -> None:
        self.fd = fd
        self.me = me
        self.record = record

    def release(self) -> None:
        if self.record is not None:
            with contextlib.suppress(OSError):
                self.record.unlink()
            self.record = None
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # drops the flock
            self.fd = -1


def _try_flock(fd: int, *, tries: int = 10, pause: float = 0.05) -> bool:
    """Exclusive and non-blocking; retried briefly, since :func:`running_roots` probes with a
    shared lock for an instant."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i + 1 < tries:
                time.sleep(pause)
    return False


def _holder_text(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    holder = RunningDaemon.from_json(text)
    return holder.describe() if holder else "pid unknown"


def _write_record(me: RunningDaemon) -> Path | None:
    """The runtime file; a daemon that cannot write one still runs (it is only for finding)."""
    folder = runtime_dirs()[0]
    path = folder / f"daemon-{me.pid}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(me.to_json(), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning(
            "cannot record this daemon in %s (%s); `queue list` may not find it", folder, exc
        )
        return None
    return path


def acquire(root: Path) -> DaemonLock:
    """Take ``root``'s lock for this process, or refuse in one sentence naming the daemon that
    holds it (:class:`DaemonAlreadyRunning`)."""
    root = Path(os.path.abspath(root))
    root.mkdir(parents=True, exist_ok=True)
    lock_path = root / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise AppError(f"{lock_path}: cannot open the daemon lock ({exc.strerror}).") from None
    if not _try_flock(fd):
        holder = _holder_text(fd)
        os.close(fd)
        raise DaemonAlreadyRunning(
            f"another finishline daemon ({holder}) is already running on {root}; stop it "
            "first, or give this one another --root."
        )
    me = RunningDaemon(os.getpid(), socket.gethostname(), root, time.time())
    os.ftruncate(fd, 0)
    os.pwrite(fd, (me.to_json() + "\n").encode("utf-8"), 0)
    return DaemonLock(fd, me, _write_record(me))
