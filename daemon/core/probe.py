"""ffprobe -> :class:`vs_scripts.plan.media.MediaInfo`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon.core.tools import find_tool, media_arg, run_capture, tail
from vs_scripts.plan.media import MediaInfo, ProbeError, parse_ffprobe, unreadable_reason

HEAD_BYTES = 64 * 1024
"""How much of an unreadable file is read to tell what it is."""


def probe(path: str | os.PathLike[str], *, exact: bool = True) -> MediaInfo:
    """Probe a clip. ``exact`` also reads every video packet's timestamp (no decoding) for an
    exact frame count and VFR detection."""
    p = Path(path)
    if not p.exists():
        raise ProbeError(f"{p}: no such file.")
    if p.is_dir():
        raise ProbeError(f"{p}: is a folder, not a clip.")
    if p.stat().st_size == 0:
        raise ProbeError(f"{p}: the file is empty (0 bytes); was the copy interrupted?")
    ffprobe = find_tool("ffprobe")
    arg = media_arg(p)
    res = run_capture(
        [ffprobe, "-v", "error", "-show_format", "-show_streams", "-of", "json", arg], timeout=120
    )
    if res.returncode != 0:
        errors = tail(res.stderr, 5).replace(arg + ": ", "")
        raise ProbeError(f"{p}: {unreadable_reason(_head(p), errors)}")
    try:
        data = json.loads(res.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{p}: ffprobe gave unreadable output ({exc}).") from None
    pts: list[float] | None = None
    errors = ""
    if exact:
        pts, errors = _packet_times(ffprobe, arg)
    return parse_ffprobe(data, path=str(p), packet_pts=pts, read_errors=errors)


def _head(p: Path) -> bytes:
    try:
        with p.open("rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError:
        return b""


def _packet_times(ffprobe: str, arg: str) -> tuple[list[float] | None, str]:
    """The video packets' presentation times, and what ffprobe said while reading them."""
    res = run_capture(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            arg,
        ],
        timeout=300,
    )
    if res.returncode != 0:
        return None, res.stderr
    out = []
    for line in res.stdout.splitlines():
        line = line.strip().rstrip(",")
        try:
            out.append(float(line))
        except ValueError:
            continue
    return out or None, res.stderr
