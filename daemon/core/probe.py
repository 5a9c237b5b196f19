"""ffprobe -> :class:`vs_scripts.plan.media.MediaInfo`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon.core.tools import find_tool, media_arg, run_capture, tail
from vs_scripts.plan.media import MediaInfo, ProbeError, parse_ffprobe


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
        detail = (tail(res.stderr, 1) or "unknown error").replace(arg + ": ", "")
        raise ProbeError(f"{p}: ffprobe cannot read it ({detail}); is it a complete video file?")
    try:
        data = json.loads(res.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{p}: ffprobe gave unreadable output ({exc}).") from None
    pts: list[float] | None = None
    if exact:
        pts = _packet_times(ffprobe, arg)
    return parse_ffprobe(data, path=str(p), packet_pts=pts)


def _packet_times(ffprobe: str, arg: str) -> list[float] | None:
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
        return None
    out = []
    for line in res.stdout.splitlines():
        line = line.strip().rstrip(",")
        try:
            out.append(float(line))
        except ValueError:
            continue
    return out or None
