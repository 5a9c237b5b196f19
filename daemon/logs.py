"""Logging for the daemon: stderr (journald) and a rotating file, every line with its job."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s job=%(job)s %(name)s: %(message)s"


class _JobDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job"):
            record.job = "-"
        return True


class JobAdapter(logging.LoggerAdapter):
    """Adds ``job=`` to every record (and keeps any ``extra`` the call passes)."""

    def process(self, msg, kwargs):  # type: ignore[no-untyped-def]
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def setup_logging(log_dir: Path, level: str = "INFO") -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "finishline.log"
    root = logging.getLogger()
    root.setLevel(level.upper())
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler()
    file = logging.handlers.RotatingFileHandler(path, maxBytes=5 << 20, backupCount=5)
    for handler in (stderr, file):
        handler.setFormatter(fmt)
        handler.addFilter(_JobDefault())
        root.addHandler(handler)
    return path
