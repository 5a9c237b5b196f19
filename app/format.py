"""Small display helpers shared by the CLI and the TUI (no Textual import here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def fmt_eta(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def tilde(path: Path | str) -> str:
    """``path`` with the home folder written ``~`` (shorter on an 80-column screen)."""
    p = Path(path)
    try:
        return f"~/{p.relative_to(Path.home())}"
    except (ValueError, RuntimeError):  # not under home, or no home at all
        return str(p)


def fit_cells(
    pixels: tuple[int, int], room: tuple[int, int], cell: tuple[int, int]
) -> tuple[int, int]:
    """The most terminal cells (columns, rows) within ``room`` that an image of ``pixels``
    (width, height) fills with its aspect kept, on cells of ``cell`` (width, height) pixels."""
    (pw, ph), (max_cols, max_rows), (cw, ch) = pixels, room, cell
    if min(pw, ph, max_cols, max_rows, cw, ch) <= 0:
        return 0, 0
    per_row = pw / ph * ch / cw  # columns per row that keep the aspect
    cols, rows = max_cols, round(max_cols / per_row)
    if rows > max_rows:
        rows, cols = max_rows, round(max_rows * per_row)
    return max(1, min(cols, max_cols)), max(1, min(rows, max_rows))


def png_size(path: Path) -> tuple[int, int] | None:
    """A PNG's (width, height) from its header; ``None`` when it is not a readable PNG."""
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def short_worker(name: str) -> str:
    """A worker's name without its machine and process (``host:pid:w0`` -> ``w0``) and
    without the slot it placed a chunk on (``...@gpu1``)."""
    return name.split("@")[0].rsplit(":", 1)[-1]


def worker_cell(worker: str | None, devices: Mapping[str, str]) -> str:
    """A running job's worker and the kind of its device, for a table cell: ``w0 cuda:1``."""
    if not worker:
        return ""
    device = devices.get(worker, "").split(" ")[0]
    return f"{short_worker(worker)} {device}".rstrip()


def chunk_line(rows: Sequence[Any], devices: Mapping[str, str]) -> str:
    """One line on a job's chunks (rows with ``state`` and ``worker``): how many are done
    and which workers run the others now, each with its device (a helper as well as the
    job's own worker); empty for a job that is not chunked."""
    if not rows:
        return ""
    done = sum(r.state == "done" for r in rows)
    failed = sum(r.state == "failed" for r in rows)
    line = f"chunks: {done} of {len(rows)} done" + (f", {failed} failed" if failed else "")
    running = sorted(
        {r.worker.split("@")[0] for r in rows if r.state == "running" and r.worker},
        key=short_worker,
    )
    if running:
        line += "; running on " + ", ".join(
            f"{short_worker(w)} {devices.get(w, '')}".rstrip() for w in running
        )
    return line
