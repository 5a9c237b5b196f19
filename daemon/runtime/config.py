"""Daemon configuration: a small TOML file (XDG config path or ``--config``). Pure parsing."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

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
# (shorter, down to a quarter, until each worker has about four) that any free worker takes
# (0 = never split)
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

# Chunks on a Ray cluster instead of this machine (pip install 'finishline[ray]'; see
# docs/cluster.md). The daemon stays here: it watches, queues, plans and delivers.
# [cluster]
# engine = "ray"                 # "local" (default) or "ray"
# address = "auto"               # "auto", "HOST:PORT" or "ray://HOST:10001"
# cpus_per_slot = 4              # cores per chunk on nodes without a GPU
# [cluster.paths]                # where the nodes see this machine's folders
# "/srv/finishline" = "/mnt/finishline"
# [cluster.resources]            # presets that run only on nodes declaring a resource
# youtube-4k = { nvenc = 1 }
"""


ENGINES = ("local", "ray")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The ``[cluster]`` table: where chunks run. ``paths`` maps head path prefixes to the
    nodes' (longest first); ``resources`` maps a preset to the custom resources a node must
    declare to run its chunks."""

    engine: Literal["local", "ray"] = "local"
    address: str = "auto"
    cpus_per_slot: int = 4
    retry_seconds: float = 10.0
    paths: tuple[tuple[str, str], ...] = ()
    resources: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()

    def needs(self, preset: str) -> dict[str, float]:
        """The custom resources ``preset``'s chunks need (empty: any node)."""
        return dict(dict(self.resources).get(preset, ()))


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
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
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
    "cluster": dict,
}
CLUSTER_KEYS = {
    "engine": str,
    "address": str,
    "cpus_per_slot": int,
    "retry_seconds": (int, float),
    "paths": dict,
    "resources": dict,
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
    if "cluster" in data:
        changes["cluster"] = parse_cluster(data["cluster"], source=source)
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


def parse_cluster(table: dict[str, object], *, source: str) -> ClusterConfig:
    """The ``[cluster]`` table; every problem is collected and raised at once."""
    problems = []
    for key, value in table.items():
        kind = CLUSTER_KEYS.get(key)
        if kind is None:
            problems.append(
                f"{source}: [cluster] {key} is not a known key; keys are {', '.join(CLUSTER_KEYS)}."
            )
        elif not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"{source}: [cluster] {key} = {value!r} has the wrong type.")
    engine = table.get("engine", "local")
    if engine not in ENGINES:
        problems.append(
            f"{source}: [cluster] engine = {engine!r} is not allowed; use 'local' or 'ray'."
        )
    address = table.get("address", "auto")
    if isinstance(address, str) and not address.strip():
        problems.append(
            f"{source}: [cluster] address is empty; use 'auto', 'HOST:PORT' or 'ray://HOST:10001'."
        )
    cpus = table.get("cpus_per_slot", 4)
    if isinstance(cpus, int) and cpus < 1:
        problems.append(f"{source}: [cluster] cpus_per_slot must be 1 or more.")
    retry = table.get("retry_seconds", 10.0)
    if isinstance(retry, int | float) and not (math.isfinite(retry) and retry > 0):
        problems.append(f"{source}: [cluster] retry_seconds must be a number above 0.")
    paths = _cluster_paths(table.get("paths", {}), source, problems)
    resources = _cluster_resources(table.get("resources", {}), source, problems)
    if problems:
        raise AppError("\n".join(problems))
    return ClusterConfig(
        engine=engine,  # type: ignore[arg-type]
        address=str(address).strip(),
        cpus_per_slot=int(cpus),  # type: ignore[arg-type]
        retry_seconds=float(retry),  # type: ignore[arg-type]
        paths=paths,
        resources=resources,
    )


def _cluster_paths(table: object, source: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """``[cluster.paths]``: absolute head prefix -> absolute node prefix, longest first."""
    if not isinstance(table, dict):
        return ()
    out = []
    for head, node in table.items():
        if not isinstance(node, str) or not head.startswith("/") or not node.startswith("/"):
            problems.append(
                f"{source}: [cluster.paths] {head!r} = {node!r}: both sides must be absolute "
                'paths, e.g. "/srv/finishline" = "/mnt/finishline".'
            )
            continue
        out.append((head.rstrip("/") or "/", node.rstrip("/") or "/"))
    return tuple(sorted(out, key=lambda p: -len(p[0])))


def _cluster_resources(
    table: object, source: str, problems: list[str]
) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    """``[cluster.resources]``: preset name -> {resource: amount > 0}."""
    if not isinstance(table, dict):
        return ()
    out = []
    for preset, needs in table.items():
        ok = isinstance(needs, dict) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in needs.values()
        )
        if not ok or not needs:
            problems.append(
                f"{source}: [cluster.resources] {preset} = {needs!r}: give the resources as "
                "amounts above 0, e.g. youtube-4k = { nvenc = 1 }."
            )
            continue
        out.append((preset, tuple(sorted((str(k), float(v)) for k, v in needs.items()))))
    return tuple(sorted(out))


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
