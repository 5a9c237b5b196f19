"""Finding the external tools (ffmpeg, ffprobe, x265, vspipe) and running them."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from daemon.core.errors import ToolMissingError

APT_PACKAGES = {"ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "x265": "x265"}


def find_tool(name: str) -> str:
    """Absolute path of ``name``. vspipe is looked for in this Python's VapourSynth first
    (the venv)."""
    env = os.environ.get(f"FINISHLINE_{name.upper()}")
    if env:
        return env
    if name == "vspipe":
        native = _wheel_vspipe()
        if native:
            return native
        here = Path(sys.executable).parent / "vspipe"
        if here.exists():
            return str(here)
    found = shutil.which(name)
    if found:
        return found
    if name == "vspipe":
        raise ToolMissingError(
            "vspipe was not found; install the project (`make run` or `pip install .`) so the "
            "VapourSynth wheel provides it, then run `vapoursynth config`."
        )
    pkg = APT_PACKAGES.get(name, name)
    raise ToolMissingError(
        f"{name} was not found on PATH; install it with `apt-get install {pkg}`."
    )


def _wheel_vspipe() -> str | None:
    """The native vspipe inside the VapourSynth wheel. The wheel's ``bin/vspipe`` is a Python
    script that starts an interpreter, imports vapoursynth and only then runs this binary as
    its child: about 0.1 s of CPU per call (measured 0.07-0.19 s), paid again by every
    chunk, and a SIGKILL (or the parent-death signal) reached the script while the binary
    ran on, orphaned."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("vapoursynth")  # finds, does not import
        for folder in (spec.submodule_search_locations or []) if spec else []:
            exe = Path(folder) / "vspipe"
            if exe.is_file() and os.access(exe, os.X_OK):
                return str(exe)
    return None


def media_arg(path: str | os.PathLike[str]) -> str:
    """A path for an ffmpeg tool that cannot be mistaken for an option or a URL protocol."""
    return "file:" + os.path.abspath(os.fspath(path))


def run_capture(
    cmd: Sequence[str], *, timeout: float | None = 600
) -> subprocess.CompletedProcess[str]:
    """Run a short command and capture its output (text, errors replaced)."""
    return subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.replace("\r", "\n").strip().splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: `taskset`, cgroups' cpusets), not
    every core the machine has, and no more than its cgroup's CPU quota (a container's
    ``--cpus``, a Kubernetes limit, systemd's ``CPUQuota=``) gives it time for."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = max(1, os.cpu_count() or 1)
    quota = cpu_quota(_read_text("/proc/self/cgroup") or "", _read_text)
    return cores if quota is None else max(1, min(cores, math.ceil(quota - 0.01)))


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_quota(
    cgroups: str, read: Callable[[str], str | None], root: str = "/sys/fs/cgroup"
) -> float | None:
    """The CPUs' worth of time the tightest CPU quota on this process's cgroup or an
    ancestor allows (``cgroups``: /proc/self/cgroup; ``read``: a file's text or ``None``),
    or ``None`` when none is set. cgroup v2 (``cpu.max``: ``QUOTA PERIOD`` or ``max``) and
    v1 (``cpu.cfs_quota_us``, -1 for none, over ``cpu.cfs_period_us``)."""
    limits: list[float] = []
    for line in cgroups.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            bases, v2 = [root], True
        elif "cpu" in controllers.split(","):
            # v1's mount is named in the kernel's order (cpu,cpuacct), which /proc's line need
            # not follow (cpuacct,cpu on CentOS 7); systemd and runc link it as cpu
            bases, v2 = list(dict.fromkeys([f"{root}/cpu", f"{root}/{controllers}"])), False
        else:
            continue
        here = PurePosixPath(path or "/")
        for base in bases:
            for folder in (here, *here.parents):  # a limit on an ancestor holds too
                limit = _quota_at(f"{base}{'' if str(folder) == '/' else folder}", v2, read)
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def _quota_at(folder: str, v2: bool, read: Callable[[str], str | None]) -> float | None:
    if v2:
        quota, period = [*(read(f"{folder}/cpu.max") or "").split(), "", ""][:2]
    else:
        quota = (read(f"{folder}/cpu.cfs_quota_us") or "").strip()
        period = (read(f"{folder}/cpu.cfs_period_us") or "").strip()
    try:
        return (
            float(quota) / float(period)
            if quota not in ("max", "-1") and float(quota) > 0
            else None
        )
    except (ValueError, ZeroDivisionError):
        return None
