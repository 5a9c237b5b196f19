"""Logging for the daemon: stderr (journald) and a rotating file, every line with its job."""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import re
from dataclasses import dataclass
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s job=%(job)s %(name)s: %(message)s"
#: reads back what :data:`FORMAT` writes (the one place that knows the layout)
_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+)\s+"
    r"job=(?P<job>\S+) (?P<logger>[^:\s]+): (?P<message>.*)$"
)
LEVELS = {"DEBUG": 0, "INFO": 1, "WARNING": 2, "ERROR": 3, "CRITICAL": 4}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class LogLine:
    time: str
    level: str
    job: str
    logger: str
    message: str
    text: str  # the whole line as written


def parse_line(text: str) -> LogLine:
    """One line of the log file; a line in another layout keeps its text at level INFO."""
    m = _LINE.match(text)
    if m is None:
        return LogLine("", "INFO", "-", "", text, text)
    return LogLine(m["time"], m["level"], m["job"], m["logger"], m["message"], text)


def read_log(
    path: Path,
    *,
    job: int | None = None,
    min_level: str = "DEBUG",
    search: str = "",
    limit: int = 500,
    tail_bytes: int = 2_000_000,
) -> list[LogLine]:
    """The last ``limit`` matching lines of the log file (reads only its last ``tail_bytes``)."""
    if not path.exists():
        return []
    floor = LEVELS.get(min_level, 0)
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - tail_bytes))
        text = fh.read().decode("utf-8", "replace")
    out = []
    for raw in text.splitlines():
        line = parse_line(raw)
        if LEVELS.get(line.level, 1) < floor:
            continue
        if job is not None and line.job != str(job):
            continue
        if search and search.lower() not in raw.lower():
            continue
        out.append(line)
    return out[-limit:]


def _escape(text: str) -> str:
    """One record, one line: control characters (a newline in a file name) are escaped, so a
    name cannot forge a log line."""
    return (
        _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
        .encode("utf-8", "backslashreplace")
        .decode("utf-8")
    )


class _OneLineFormatter(logging.Formatter):
    """Escapes control characters in the message (a traceback, appended after it, keeps its
    own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _escape(record.message)
        return super().formatMessage(record)


#: the job the current thread works on, for the lines of code that knows no job (the
#: engine, a chunk a worker helps with): set by the worker for the job's run, and copied
#: into the threads the engine starts for the job's chunks
current_job: contextvars.ContextVar[str] = contextvars.ContextVar("finishline_job", default="-")


class _JobDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job"):
            record.job = current_job.get()
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
    fmt = _OneLineFormatter(FORMAT)
    stderr = logging.StreamHandler()
    file = logging.handlers.RotatingFileHandler(path, maxBytes=5 << 20, backupCount=5)
    for handler in (stderr, file):
        handler.setFormatter(fmt)
        handler.addFilter(_JobDefault())
        root.addHandler(handler)
    return path
