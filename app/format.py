"""Small display helpers shared by the CLI and the TUI (no Textual import here)."""

from __future__ import annotations


def fmt_eta(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
