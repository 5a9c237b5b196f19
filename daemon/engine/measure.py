"""Measure an output file for QC: ffprobe for streams and packets, the MP4/MOV atom tree for
faststart and edit lists, ffmpeg's EBU R128 meter for loudness and true peak."""

from __future__ import annotations

import itertools
import json
import re
import struct
from pathlib import Path

from daemon.core.errors import AppError
from daemon.core.tools import find_tool, media_arg, run_capture, tail
from daemon.engine.checks import Facts

_CONTAINERS = {b"moov", b"trak", b"edts", b"mdia", b"minf", b"stbl"}


def mp4_boxes(path: Path) -> tuple[list[str], int]:
    """Top-level atom order and the number of edit lists ('elst') inside moov. Reads box
    headers only, plus the moov box itself (small)."""
    order: list[str] = []
    elst = 0
    with path.open("rb") as f:
        f.seek(0, 2)
        end = f.tell()
        pos = 0
        while pos + 8 <= end:
            f.seek(pos)
            size, kind = struct.unpack(">I4s", f.read(8))
            header = 8
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
                header = 16
            elif size == 0:
                size = end - pos
            if size < header:
                break
            order.append(kind.decode("latin-1"))
            if kind == b"moov":
                f.seek(pos + header)
                elst += _count_elst(f.read(min(size - header, 64 << 20)))
            pos += size
    return order, elst


def _count_elst(data: bytes) -> int:
    count, pos = 0, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1 and pos + 16 <= len(data):
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            break
        if kind == b"elst":
            count += 1
        elif kind in _CONTAINERS:
            count += _count_elst(data[pos + header : pos + size])
        pos += size
    return count


def loudness(path: Path, ffmpeg: str | None = None) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) of the first audio stream."""
    ffmpeg = ffmpeg or find_tool("ffmpeg")
    res = run_capture(
        [
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-i",
            media_arg(path),
            "-map",
            "0:a:0",
            "-af",
            "ebur128=peak=true",
            "-f",
            "null",
            "-",
        ],
        timeout=600,
    )
    if res.returncode != 0:
        raise AppError(f"{path}: cannot measure loudness: {tail(res.stderr, 3)}")
    summary = res.stderr[res.stderr.rfind("Summary:") :]
    i = re.search(r"I:\s*(-?[\d.]+|-inf)\s*LUFS", summary)
    peak = re.search(r"Peak:\s*(-?[\d.]+|-inf)\s*dBFS", summary)
    if not i:
        raise AppError(f"{path}: the loudness meter printed no result.")

    def num(m: re.Match[str] | None) -> float:
        return -99.0 if m is None or m.group(1) == "-inf" else float(m.group(1))

    return num(i), num(peak)


def _audio_duration(audio: dict | None, packets: list[dict]) -> float | None:
    """The audio track's length: the stream's own duration, or (Matroska keeps none per
    stream) the span of its packets, first presentation time to the end of the last packet."""
    if audio is None:
        return None
    if audio.get("duration"):
        return float(audio["duration"])
    times = [
        (float(p["pts_time"]), float(p.get("duration_time") or 0.0))
        for p in packets
        if p.get("pts_time") not in (None, "N/A")
    ]
    if not times:
        return None
    start = min(t for t, _ in times)
    end = max(t + d for t, d in times)
    return end - start


def measure(path: Path, *, with_loudness: bool = True) -> Facts:
    """Everything the checks need, from one ffprobe pass (streams, format, every packet) and,
    with ``with_loudness`` and an audio track, one EBU R128 pass."""
    ffprobe = find_tool("ffprobe")
    res = run_capture(
        [
            ffprobe,
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-show_entries",
            "packet=stream_index,pts_time,duration_time,size,flags",
            "-of",
            "json",
            media_arg(path),
        ],
        timeout=600,
    )
    if res.returncode != 0:
        raise AppError(f"{path}: ffprobe cannot read it: {tail(res.stderr, 3)}")
    data = json.loads(res.stdout)
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise AppError(f"{path}: has no video stream.")
    packets = data.get("packets", [])
    vpk = [p for p in packets if p.get("stream_index") == video["index"]]
    apk = [p for p in packets if audio is not None and p.get("stream_index") == audio["index"]]
    duration = float(fmt.get("duration") or 0.0)

    # keyframe spacing in decode order (what a player seeks between)
    keys = [i for i, p in enumerate(vpk) if "K" in p.get("flags", "")]
    gaps = [b - a for a, b in itertools.pairwise(keys)] + ([len(vpk) - keys[-1]] if keys else [])
    vdur = float(video.get("duration") or duration or 1e-9)
    vbytes = sum(int(p.get("size") or 0) for p in vpk)
    per_second: dict[int, int] = {}
    for p in vpk:
        t = float(p.get("pts_time") or 0.0)
        per_second[int(t)] = per_second.get(int(t), 0) + int(p.get("size") or 0)
    abytes = sum(int(p.get("size") or 0) for p in apk)
    adur = _audio_duration(audio, apk)

    order, elst = ([], 0)
    if any(x in fmt.get("format_name", "") for x in ("mp4", "mov")):
        order, elst = mp4_boxes(path)
    lufs = peak = None
    if audio is not None and with_loudness:
        lufs, peak = loudness(path)
    return Facts(
        format_name=fmt.get("format_name", ""),
        video_streams=sum(s.get("codec_type") == "video" for s in streams),
        audio_streams=sum(s.get("codec_type") == "audio" for s in streams),
        top_level_boxes=order,
        edit_lists=elst,
        duration=duration,
        video_codec=video.get("codec_name", ""),
        video_profile=video.get("profile", ""),
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        sar=video.get("sample_aspect_ratio", "1:1"),
        fps=video.get("r_frame_rate", "0/1"),
        frames=len(vpk),
        pix_fmt=video.get("pix_fmt", ""),
        colour={
            "matrix": video.get("color_space", ""),
            "transfer": video.get("color_transfer", ""),
            "primaries": video.get("color_primaries", ""),
            "range": video.get("color_range", ""),
        },
        max_keyframe_interval=max(gaps) if gaps else 0,
        video_kbps=vbytes * 8 / 1000 / max(vdur, 1e-9),
        peak_video_kbps=max(per_second.values(), default=0) * 8 / 1000,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_rate=int(audio.get("sample_rate") or 0) if audio else None,
        audio_channels=int(audio.get("channels") or 0) if audio else None,
        audio_kbps=abytes * 8 / 1000 / adur if audio and adur else None,
        audio_duration=adur,
        loudness_lufs=lufs,
        true_peak_db=peak,
    )


def detail_focus(
    path: Path, at_seconds: float, window: tuple[float, float], *, width: int = 192
) -> tuple[float, float]:
    """Where the frame of ``path`` at ``at_seconds`` shows the most fine detail: the centre
    (fractions of its width and height) of the ``window``-sized region (fractions too) with
    the most gradient energy, on a ``width``-wide grey copy. The centre of the frame unless
    another place holds clearly more (so flat pictures keep a centred crop); the centre too
    when the frame cannot be read."""
    import subprocess

    import numpy as np

    cmd = [find_tool("ffmpeg"), "-v", "error", "-nostdin", "-ss", f"{max(0.0, at_seconds):.3f}",
           "-i", media_arg(path), "-frames:v", "1", "-vf", f"scale={width}:-2,format=gray",
           "-f", "rawvideo", "-"]  # fmt: skip
    try:
        raw = subprocess.run(cmd, capture_output=True, timeout=120, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0.5, 0.5
    if not raw or len(raw) % width:
        return 0.5, 0.5
    y = np.frombuffer(raw, np.uint8).reshape(-1, width).astype(np.float32)
    h = y.shape[0]
    energy = np.zeros_like(y)
    energy[:, 1:] += np.abs(np.diff(y, axis=1))
    energy[1:, :] += np.abs(np.diff(y, axis=0))
    ww, wh = max(1, min(width, round(window[0] * width))), max(1, min(h, round(window[1] * h)))
    table = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[wh:, ww:] - table[:-wh, ww:] - table[wh:, :-ww] + table[:-wh, :-ww]
    cy, cx = (h - wh) // 2, (width - ww) // 2
    by, bx = np.unravel_index(int(np.argmax(sums)), sums.shape)
    if sums[by, bx] <= 1.25 * sums[cy, cx]:
        return 0.5, 0.5
    return round(float(bx + ww / 2) / width, 4), round(float(by + wh / 2) / h, 4)
