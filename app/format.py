"""Small display helpers shared by the CLI and the TUI (no Textual import here)."""

from __future__ import annotations

from pathlib import Path


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
