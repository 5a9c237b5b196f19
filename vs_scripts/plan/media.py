"""Typed media facts parsed from ffprobe JSON. Pure: the ffprobe call lives in
``daemon.core.probe``."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

from vs_scripts.plan.errors import AppError


class ProbeError(AppError):
    """A file is not a usable video."""

    title = "cannot read clip"


@dataclass(frozen=True, slots=True)
class AudioStream:
    index: int
    codec: str
    sample_rate: int
    channels: int
    duration: float | None
    start_time: float


@dataclass(frozen=True, slots=True)
class MediaInfo:
    path: str
    container: str
    width: int
    height: int
    fps: Fraction
    """Average frame rate (frames / duration); the nominal rate for CFR clips."""
    vfr: bool
    frame_count: int
    duration: float
    codec: str
    pixel_format: str
    bit_depth: int
    matrix: str | None
    transfer: str | None
    primaries: str | None
    color_range: str | None
    rotation: int
    start_time: float
    audio: tuple[AudioStream, ...]
    bitrate: int | None = None

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        out["audio"] = [asdict(a) for a in self.audio]
        return out


def _frac(text: object) -> Fraction | None:
    if not isinstance(text, str) or "/" not in text:
        return None
    num, den = text.split("/", 1)
    try:
        if int(den) == 0 or int(num) == 0:
            return None
        return Fraction(int(num), int(den))
    except ValueError:
        return None


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _rotation(stream: Mapping[str, object]) -> int:
    for side in stream.get("side_data_list", ()) or ():  # type: ignore[union-attr]
        if isinstance(side, Mapping) and "rotation" in side:
            try:
                return round(float(side["rotation"])) % 360  # type: ignore[arg-type]
            except (TypeError, ValueError):
                pass
    tags = stream.get("tags") or {}
    if isinstance(tags, Mapping) and "rotate" in tags:
        try:
            return int(str(tags["rotate"])) % 360
        except ValueError:
            pass
    return 0


def _bit_depth(stream: Mapping[str, object]) -> int:
    raw = stream.get("bits_per_raw_sample")
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    pix = str(stream.get("pix_fmt", ""))
    for depth in (16, 14, 12, 10, 9):
        if f"p{depth}" in pix:
            return depth
    return 8


def _clean(value: object) -> str | None:
    if not isinstance(value, str) or value in ("", "unknown", "unspecified", "reserved"):
        return None
    return value


def is_vfr(pts: Sequence[float], *, tolerance: float = 0.002) -> bool:
    """True when frame durations differ by more than ``tolerance`` s (about 1/20 of a frame
    at 24 fps), ignoring the last frame."""
    if len(pts) < 3:
        return False
    ordered = sorted(pts)
    durations = [b - a for a, b in itertools.pairwise(ordered)]
    med = statistics.median(durations)
    return any(abs(d - med) > tolerance for d in durations)


def parse_ffprobe(
    data: Mapping[str, object], *, path: str, packet_pts: Sequence[float] | None = None
) -> MediaInfo:
    """Build :class:`MediaInfo` from ``ffprobe -show_format -show_streams -of json`` output.

    ``packet_pts`` (presentation times of the video packets) makes the frame count and the
    VFR decision exact; without it they come from the stream header.
    """
    streams = [s for s in data.get("streams", ()) or () if isinstance(s, Mapping)]  # type: ignore[union-attr]
    fmt = data.get("format") or {}
    if not isinstance(fmt, Mapping):
        fmt = {}
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video"
            and not (s.get("disposition") or {}).get("attached_pic")  # type: ignore[union-attr]
        ),
        None,
    )
    if video is None:
        raise ProbeError(f"{path}: no video stream found; is this a video file?")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if width <= 0 or height <= 0:
        raise ProbeError(f"{path}: the video stream has no frame size; the file may be damaged.")

    duration = _float(video.get("duration")) or _float(fmt.get("duration")) or 0.0
    start = _float(video.get("start_time")) or 0.0
    avg = _frac(video.get("avg_frame_rate"))
    nominal = _frac(video.get("r_frame_rate"))

    frame_count = 0
    nb = video.get("nb_frames")
    if isinstance(nb, str) and nb.isdigit():
        frame_count = int(nb)
    vfr = bool(avg and nominal and abs(float(avg) - float(nominal)) > 0.01 * float(nominal))
    if packet_pts:
        if frame_count > len(packet_pts):
            raise ProbeError(
                f"{path}: the header lists {frame_count} frames but only {len(packet_pts)} are "
                "in the file; it is truncated (was the copy interrupted?)."
            )
        frame_count = len(packet_pts)
        vfr = is_vfr(packet_pts)
        ordered = sorted(packet_pts)
        start = ordered[0]
        if len(ordered) > 1:
            step = statistics.median(b - a for a, b in itertools.pairwise(ordered))
            duration = max(duration, ordered[-1] - ordered[0] + step) if not vfr else duration
    fps = avg or nominal
    if fps is None and frame_count and duration:
        fps = Fraction(frame_count / duration).limit_denominator(1001)
    if fps is None:
        raise ProbeError(f"{path}: cannot tell the frame rate; the file may be damaged.")
    if frame_count == 0 and duration:
        frame_count = round(duration * fps)
    if frame_count == 0:
        raise ProbeError(f"{path}: the video stream has no frames; the file may be truncated.")
    if not duration:
        duration = frame_count / float(fps)

    audio = tuple(
        AudioStream(
            index=int(s.get("index", 0) or 0),
            codec=str(s.get("codec_name", "unknown")),
            sample_rate=int(s.get("sample_rate") or 0),
            channels=int(s.get("channels") or 0),
            duration=_float(s.get("duration")),
            start_time=_float(s.get("start_time")) or 0.0,
        )
        for s in streams
        if s.get("codec_type") == "audio"
    )
    bitrate = fmt.get("bit_rate")
    return MediaInfo(
        path=path,
        container=str(fmt.get("format_name", "unknown")),
        width=width,
        height=height,
        fps=fps,
        vfr=vfr,
        frame_count=frame_count,
        duration=duration,
        codec=str(video.get("codec_name", "unknown")),
        pixel_format=str(video.get("pix_fmt", "unknown")),
        bit_depth=_bit_depth(video),
        matrix=_clean(video.get("color_space")),
        transfer=_clean(video.get("color_transfer")),
        primaries=_clean(video.get("color_primaries")),
        color_range=_clean(video.get("color_range")),
        rotation=_rotation(video),
        start_time=start,
        audio=audio,
        bitrate=int(bitrate) if isinstance(bitrate, str) and bitrate.isdigit() else None,
    )
