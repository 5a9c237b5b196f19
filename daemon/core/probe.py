"""ffprobe -> :class:`vs_scripts.plan.media.MediaInfo`."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from daemon.core.tools import find_tool, media_arg, run_capture, tail
from vs_scripts.plan.media import (
    MediaInfo,
    ProbeError,
    check_header,
    parse_ffprobe,
    unreadable_reason,
)

HEAD_BYTES = 64 * 1024
"""How much of an unreadable file is read to tell what it is."""


@dataclasses.dataclass
class _Flight:
    """A probe in progress, for another thread asking for the same clip meanwhile."""

    result: Future[MediaInfo] = dataclasses.field(default_factory=Future)
    header: threading.Event = dataclasses.field(default_factory=threading.Event)  # passed
    over: threading.Event = dataclasses.field(default_factory=threading.Event)  # or ended


#: the clips probed last: a job's clip is probed by its batch's assessment, for its audio and
#: for its script; a clip unchanged since (the same file, size and times) is not read again,
#: and a probe of a clip already being probed waits for that one
_KNOWN: OrderedDict[tuple[object, ...], MediaInfo] = OrderedDict()
_FLIGHTS: dict[tuple[object, ...], _Flight] = {}
_KNOWN_MAX = 64
_KNOWN_LOCK = threading.Lock()


def probe(
    path: str | os.PathLike[str],
    *,
    exact: bool = True,
    on_header: Callable[[], None] | None = None,
) -> MediaInfo:
    """Probe a clip. ``exact`` also reads every video packet's timestamp (no decoding) for an
    exact frame count and VFR detection. ``on_header`` is called once the streams have
    passed the checks that need no packets (:func:`check_header`), while the packets are
    still read: a caller may start decoding the clip then. A clip probed before and unchanged
    since is not read again (nor is ``on_header`` called); one being probed by another
    thread is waited for (``on_header`` called when its streams pass)."""
    p = Path(path)
    if not p.exists():
        raise ProbeError(f"{p}: no such file.")
    if p.is_dir():
        raise ProbeError(f"{p}: is a folder, not a clip.")
    st = p.stat()
    if st.st_size == 0:
        raise ProbeError(f"{p}: the file is empty (0 bytes); was the copy interrupted?")
    key = (str(p.absolute()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    key += (exact,)
    with _KNOWN_LOCK:
        known = _KNOWN.get(key)
        if known is not None:
            _KNOWN.move_to_end(key)
        flight = _FLIGHTS.get(key) if known is None else None
        first = known is None and flight is None
        if first:
            flight = _FLIGHTS[key] = _Flight()
    assert known is not None or flight is not None
    if known is None and not first:  # the same clip, probed by another thread right now
        if on_header is not None:
            flight.over.wait()
            if flight.header.is_set():
                on_header()
        known = flight.result.result()
    if known is not None:
        return known if known.path == str(p) else dataclasses.replace(known, path=str(p))

    def passed() -> None:
        flight.header.set()
        flight.over.set()
        if on_header is not None:
            on_header()

    try:
        media = _probe(p, exact, passed)
    except BaseException as exc:
        with _KNOWN_LOCK:
            del _FLIGHTS[key]
        flight.result.set_exception(exc)
        raise
    finally:
        flight.over.set()
    with _KNOWN_LOCK:
        del _FLIGHTS[key]
        _KNOWN[key] = media
        while len(_KNOWN) > _KNOWN_MAX:
            _KNOWN.popitem(last=False)
    flight.result.set_result(media)
    return media


def _probe(p: Path, exact: bool, on_header: Callable[[], None]) -> MediaInfo:
    ffprobe = find_tool("ffprobe")
    arg = media_arg(p)
    with ThreadPoolExecutor(1, thread_name_prefix="probe") as side:
        # the packets' times are read at once beside the streams (two quick processes; on a
        # file that is not a clip both fail at once)
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
        check_header(data, path=str(p))
        on_header()
        pts, keys, errors = packets.result() if packets is not None else (None, None, "")
    return parse_ffprobe(data, path=str(p), packet_pts=pts, packet_keys=keys, read_errors=errors)


def _head(p: Path) -> bytes:
    try:
        with p.open("rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError:
        return b""


def _packet_times(ffprobe: str, arg: str) -> tuple[list[float] | None, list[float] | None, str]:
    """The video packets' presentation times, the keyframes' among them (where the clip can
    be entered without decoding what comes before), and what ffprobe said while reading them."""
    res = run_capture(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
            arg,
        ],
        timeout=300,
    )
    if res.returncode != 0:
        return None, None, res.stderr
    out, keys = [], []
    for line in res.stdout.splitlines():
        pts, _, flags = line.strip().partition(",")
        try:
            t = float(pts)
        except ValueError:
            continue
        out.append(t)
        if flags.startswith("K"):
            keys.append(t)
    return out or None, keys if out else None, res.stderr
