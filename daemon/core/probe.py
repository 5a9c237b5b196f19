"""ffprobe -> :class:`vs_scripts.plan.media.MediaInfo`."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemon.core.tools import find_tool, media_arg, run_capture, tail
from vs_scripts.plan.media import MediaInfo, ProbeError, parse_ffprobe, unreadable_reason

HEAD_BYTES = 64 * 1024
"""How much of an unreadable file is read to tell what it is."""


#: the clips probed last: a job probes its clip in its batch's assessment, for its audio and
#: for its script, and a clip that has not changed (same file, size and time) reads the same
_KNOWN: OrderedDict[tuple[object, ...], MediaInfo] = OrderedDict()
_KNOWN_MAX = 64
_KNOWN_LOCK = threading.Lock()


def probe(path: str | os.PathLike[str], *, exact: bool = True) -> MediaInfo:
    """Probe a clip. ``exact`` also reads every video packet's timestamp (no decoding) for an
    exact frame count and VFR detection. A clip probed before and unchanged since (the same
    file, size and modification time) is not read again."""
    p = Path(path)
    if not p.exists():
        raise ProbeError(f"{p}: no such file.")
    if p.is_dir():
        raise ProbeError(f"{p}: is a folder, not a clip.")
    st = p.stat()
    if st.st_size == 0:
        raise ProbeError(f"{p}: the file is empty (0 bytes); was the copy interrupted?")
    key = (str(p.absolute()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, exact)
    with _KNOWN_LOCK:
        known = _KNOWN.get(key)
        if known is not None:
            _KNOWN.move_to_end(key)
    if known is not None:
        return known if known.path == str(p) else dataclasses.replace(known, path=str(p))
    media = _probe(p, exact)
    with _KNOWN_LOCK:
        _KNOWN[key] = media
        while len(_KNOWN) > _KNOWN_MAX:
            _KNOWN.popitem(last=False)
    return media


def _probe(p: Path, exact: bool) -> MediaInfo:
    ffprobe = find_tool("ffprobe")
    arg = media_arg(p)
    with ThreadPoolExecutor(1, thread_name_prefix="probe") as side:
        # the packets' times are read at once beside the streams (two quick processes,
        # wasted only on a file that is not a clip)
        packets = side.submit(_packet_times, ffprobe, arg) if exact else None
        res = run_capture(
            [ffprobe, "-v", "error", "-show_format", "-show_streams", "-of", "json", arg],
            timeout=120,
        )
    if res.returncode != 0:
        errors = tail(res.stderr, 5).replace(arg + ": ", "")
        raise ProbeError(f"{p}: {unreadable_reason(_head(p), errors)}")
    try:
        data = json.loads(res.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{p}: ffprobe gave unreadable output ({exc}).") from None
    pts, errors = packets.result() if packets is not None else (None, "")
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
