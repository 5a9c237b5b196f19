"""Daemon configuration: a small TOML file (XDG config path or ``--config``). Pure parsing."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from daemon.core.files import atomic_write
from daemon.core.places import xdg_dir
from vs_scripts.plan.errors import AppError

DEFAULT_TEXT = """\
# finishline daemon configuration
# root holds hot/<preset>/ (drop clips here), out/<preset>/, done/, failed/, work/ and queue.db
root = "~/finishline"
# parallel workers (0 = workers_per_gpu on each GPU, or one on a CPU-only machine); each has
# its device slot: a GPU (CUDA_VISIBLE_DEVICES) or a share of the CPU cores
workers = 0
# workers sharing one GPU (small models on a large GPU)
workers_per_gpu = 1
# clips longer than 1.5x this (seconds of output) are split into chunks of about this length
# that any free worker takes (0 = never split)
chunk_seconds = 20.0
# poll the hot folders instead of inotify (for NFS/SMB shares)
polling = false
# a file is taken once its size and mtime have not changed for this long (seconds)
settle_seconds = 3.0
# clips dropped at the top of a hot folder within this window form one batch (seconds)
batch_window = 8.0
# a job interrupted this many times (crashes, kills) is failed instead of retried
max_attempts = 3
# presets to create hot folders for (empty = every preset found)
presets = []
# log level for stderr and the rotating file in <root>/logs
log_level = "INFO"
"""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    root: Path
    workers: int = 0
    workers_per_gpu: int = 1
    chunk_seconds: float = 20.0
    polling: bool = False
    settle_seconds: float = 3.0
    batch_window: float = 8.0
    max_attempts: int = 3
    presets: tuple[str, ...] = field(default=())
    log_level: str = "INFO"
    source: str = "<defaults>"

    @property
    def hot(self) -> Path:
        return self.root / "hot"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def db(self) -> Path:
        return self.root / "queue.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def default_config_path() -> Path:
    return xdg_dir("config") / "daemon.toml"


KEYS = {
    "root": str,
    "workers": int,
    "workers_per_gpu": int,
    "chunk_seconds": (int, float),
    "polling": bool,
    "settle_seconds": (int, float),
    "batch_window": (int, float),
    "max_attempts": int,
    "presets": list,
    "log_level": str,
}


def parse_config(text: str, *, source: str) -> DaemonConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AppError(f"{source}: not valid TOML: {exc}.") from None
    problems = []
    for key, value in data.items():
        kind = KEYS.get(key)
        if kind is None:
            problems.append(f"{source}: unknown key {key!r}; keys are {', '.join(KEYS)}.")
        elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            problems.append(f"{source}: {key} = {value!r} has the wrong type.")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{source}: {key} = {value!r} is not a finite number.")
    if problems:
        raise AppError("\n".join(problems))
    cfg = DaemonConfig(
        root=Path(os.path.expanduser(str(data.get("root", "~/finishline")))), source=source
    )
    changes: dict[str, object] = {}
    for key in (
        "workers",
        "workers_per_gpu",
        "chunk_seconds",
        "polling",
        "settle_seconds",
        "batch_window",
        "max_attempts",
        "log_level",
    ):
        if key in data:
            changes[key] = data[key]
    if "presets" in data:
        changes["presets"] = tuple(str(p) for p in data["presets"])
    cfg = replace(cfg, **changes)  # type: ignore[arg-type]
    if min(cfg.workers, cfg.settle_seconds, cfg.chunk_seconds, cfg.batch_window) < 0 or (
        cfg.max_attempts < 1 or cfg.workers_per_gpu < 1
    ):
        raise AppError(
            f"{source}: workers, settle_seconds, batch_window and chunk_seconds must be >= 0, "
            "max_attempts and workers_per_gpu >= 1."
        )
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise AppError(f"{source}: log_level must be DEBUG, INFO, WARNING or ERROR.")
    return cfg


def load_config(
    path: Path | None = None, *, root: Path | None = None, write_default: bool = False
) -> DaemonConfig:
    """Read ``path`` (default: the XDG path). A missing default file reads as the defaults;
    only ``write_default`` (the daemon, ``service install``) writes it, with comments, so
    read-only commands write nothing."""
    path = path or default_config_path()
    if not path.exists():
        if path != default_config_path():
            raise AppError(f"{path}: no such config file.")
        if write_default:
            atomic_write(path, DEFAULT_TEXT)
        else:
            cfg = parse_config(DEFAULT_TEXT, source="<defaults>")
            return replace(cfg, root=root) if root is not None else cfg
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AppError(f"{path}: cannot read the config ({exc}).") from None
    cfg = parse_config(text, source=str(path))
    if root is not None:
        cfg = replace(cfg, root=root)
    return cfg
