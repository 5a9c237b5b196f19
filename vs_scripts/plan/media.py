"""Typed media facts parsed from ffprobe JSON. Pure: the ffprobe call lives in
``daemon.core.probe``."""

from __future__ import annotations

import itertools
import re
import shlex
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
    keyframes: tuple[float, ...] | None = None
    """Presentation times (s, sorted) of the video keyframes, read with the packets by an
    exact probe; () where every frame is one (intra-only: a chunk can start anywhere), None
    where the packets were not read."""

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


MAX_SIDE = 16384
"""The largest frame width or height finishline accepts (beyond any camera or renderer)."""

IMAGE_CODECS = {
    "mjpeg": "JPEG",
    "jpegls": "JPEG-LS",
    "jpeg2000": "JPEG 2000",
    "jpegxl": "JPEG XL",
    "png": "PNG",
    "apng": "PNG",
    "gif": "GIF",
    "bmp": "BMP",
    "webp": "WebP",
    "tiff": "TIFF",
    "qoi": "QOI",
    "exr": "OpenEXR",
    "dpx": "DPX",
    "psd": "Photoshop (PSD)",
    "svg": "SVG",
    "targa": "TGA",
    "ppm": "PPM",
    "pgm": "PGM",
    "pbm": "PBM",
    "pam": "PAM",
    "hdr": "Radiance HDR",
    "sgi": "SGI",
    "pcx": "PCX",
    "xbm": "XBM",
    "xwd": "XWD",
}
"""Still-image codecs, by the name a user knows them by."""

_INTERLACED = {"tt": "top", "tb": "top", "bb": "bottom", "bt": "bottom"}


def _image_kind(fmt_name: str, codec: str) -> str | None:
    """The image format when ffprobe opened the file with a still-image demuxer (``image2``,
    ``*_pipe``, ``gif``), else ``None``."""
    names = fmt_name.split(",")
    if not any(n == "image2" or n.endswith("_pipe") or n == "gif" for n in names):
        return None
    if codec in IMAGE_CODECS:
        return IMAGE_CODECS[codec]
    pipe = next((n[: -len("_pipe")] for n in names if n.endswith("_pipe")), "")
    return IMAGE_CODECS.get(pipe, pipe.upper() or "still")


def _no_video(path: str, streams: Sequence[Mapping[str, object]]) -> ProbeError:
    """What a file without a video stream is, in one sentence."""
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    subs = [s for s in streams if s.get("codec_type") == "subtitle"]
    if audio:
        codec = str(audio[0].get("codec_name") or "unknown")
        cover = " with cover art and" if any(_attached_pic(s) for s in streams) else " with"
        return ProbeError(
            f"{path}: is an audio file ({codec}){cover} no video stream; drop the video clip "
            "instead."
        )
    if subs:
        codec = str(subs[0].get("codec_name") or "unknown")
        return ProbeError(
            f"{path}: holds only subtitles ({codec}), no video stream; drop the video clip instead."
        )
    if any(s.get("codec_type") == "video" for s in streams):  # cover art alone
        return ProbeError(
            f"{path}: holds only a still picture (cover art), no video stream; drop the video "
            "clip instead."
        )
    return ProbeError(
        f"{path}: holds no video stream (no streams at all); the file is empty or damaged: "
        "copy or export it again."
    )


def _attached_pic(stream: Mapping[str, object]) -> bool:
    disposition = stream.get("disposition") or {}
    return (
        stream.get("codec_type") == "video"
        and isinstance(disposition, Mapping)
        and bool(disposition.get("attached_pic"))
    )


def deinterlace_hint(path: str) -> str:
    """The ffmpeg command that deinterlaces ``path`` (bwdif, one frame per frame) into an MKV
    beside it, audio copied."""
    name, stem = _file_name(path)
    out = shlex.quote(stem + "-progressive.mkv")
    return f"ffmpeg -i {shlex.quote(name)} -vf bwdif -c:a copy {out}"


def gif_hint(path: str) -> str:
    """The ffmpeg command that turns an animated GIF into an MP4 beside it."""
    name, stem = _file_name(path)
    return f"ffmpeg -i {shlex.quote(name)} {shlex.quote(stem + '-video.mp4')}"


def _file_name(path: str) -> tuple[str, str]:
    """The file's name and its stem (the name without the last extension)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name, (name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name)


def unreadable_reason(head: bytes, errors: str) -> str:
    """Why ffprobe could not open a file, in one sentence (without the path): what the file
    is, from its first bytes (``head``), and what to do. ``errors`` is the end of ffprobe's
    stderr."""
    lines = [re.sub(r"^\[[^]]*\]\s*", "", ln).strip() for ln in errors.splitlines()]
    lines = [ln for ln in lines if ln]
    detail = lines[-1] if lines else ""
    low = " ".join(lines).lower()
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    lead = stripped[:512].lower()
    if head and not head.strip(b"\0"):
        return (
            "holds only zero bytes where the video should start; the copy was interrupted or "
            "the disk is damaged: copy it again."
        )
    if lead.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in lead:
        return (
            "is a web page (HTML), not a video; the download probably failed: download the "
            "video again."
        )
    signatures: tuple[tuple[bytes, str, str], ...] = (
        (b"%PDF", "a PDF document", "drop the video clip itself"),
        (b"PK\x03\x04", "a ZIP archive", "extract the video from it and drop that"),
        (b"Rar!\x1a\x07", "a RAR archive", "extract the video from it and drop that"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the video from it and drop that"),
        (b"\x1f\x8b", "a gzip archive", "extract the video from it and drop that"),
        (b"\x7fELF", "a program (ELF executable)", "drop the video clip itself"),
        (b"MZ", "a Windows program", "drop the video clip itself"),
        (b"\xff\xd8\xff", "a damaged JPEG image", "export the clip as a video and drop that"),
        (b"\x89PNG", "a damaged PNG image", "export the clip as a video and drop that"),
        (b"GIF8", "a damaged GIF image", "export the clip as a video and drop that"),
    )
    for magic, what, todo in signatures:
        if head.startswith(magic):
            return f"is {what}, not a video; {todo}."
    size = re.search(r"picture size (\d+x\d+) is invalid", low)
    if size:
        return f"claims an impossible {size.group(1)} frame; the file is damaged: export it again."
    mp4_start = head[4:8] in _MP4_BOXES
    if mp4_start and "moov atom not found" in low:
        return (
            "is an incomplete MP4/MOV: its index (moov) is missing, as after an interrupted "
            "copy, download or recording; copy it again, or export it again."
        )
    if head and _looks_like_text(head):
        return "is a text file, not a video; drop the video clip itself."
    container = _container_kind(head)
    if container:
        return (
            f"is a damaged or incomplete {container} file ({detail or 'unreadable'}); copy it "
            "again, or export it again."
        )
    return (
        f"is not a video file ffprobe can read ({detail or 'unknown error'}); it is damaged "
        "or not a video: check what it is, then copy or export it again."
    )


_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"uuid"}


def _container_kind(head: bytes) -> str | None:
    """The media container a file's first bytes belong to, even when it cannot be read."""
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "Matroska/WebM"
    if head[4:8] in _MP4_BOXES or any(b in head for b in (b"ftyp", b"moov", b"mdat")):
        return "MP4/MOV"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if head.startswith(b"YUV4MPEG2"):
        return "Y4M"
    if head.startswith(b"OggS"):
        return "Ogg"
    if head.startswith(b"FLV"):
        return "FLV"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "MPEG program stream"
    if head.startswith(b"\x30\x26\xb2\x75"):
        return "ASF/WMV"
    if len(head) >= 377 and head[0] == head[188] == head[376] == 0x47:
        return "MPEG-TS"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sample
            return False
        text = head[: exc.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    return bool(text) and printable >= 0.95 * len(text)


def is_vfr(pts: Sequence[float], *, tolerance: float = 0.002) -> bool:
    """True when frame durations differ by more than ``tolerance`` s (about 1/20 of a frame
    at 24 fps), ignoring the last frame."""
    if len(pts) < 3:
        return False
    ordered = sorted(pts)
    durations = [b - a for a, b in itertools.pairwise(ordered)]
    med = statistics.median(durations)
    return any(abs(d - med) > tolerance for d in durations)


_ENDED_EARLY = ("file ended prematurely", "partial file", "truncated file", "unexpected eof")


def _declared_duration(stream: Mapping[str, object]) -> float | None:
    """The video stream's duration from its header (Matroska keeps it in a DURATION tag)."""
    value = _float(stream.get("duration"))
    if value:
        return value
    tags = stream.get("tags") or {}
    text = (
        next((v for k, v in tags.items() if k.upper() == "DURATION"), None)
        if isinstance(tags, Mapping)
        else None
    )
    if not isinstance(text, str):
        return None
    try:
        h, m, sec = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except ValueError:
        return None


def _check_ends_early(
    path: str,
    video: Mapping[str, object],
    ordered: Sequence[float],
    step: float,
    read_errors: str,
) -> None:
    """A file that ffprobe says ends early and whose frames stop well before the duration its
    header promises is truncated: refused, never delivered short."""
    if not any(sign in read_errors.lower() for sign in _ENDED_EARLY):
        return
    declared = _declared_duration(video)
    end = ordered[-1] + step
    if declared and end < declared - max(2 * step, 0.1):
        raise ProbeError(
            f"{path}: the file ends early: its video stops at {end:.2f} s of the "
            f"{declared:.2f} s its header promises, so it is truncated (was the copy "
            "interrupted?); copy it again."
        )


def check_header(data: Mapping[str, object], *, path: str) -> None:
    """What the streams alone refuse, before any packet is read: no video stream, no frame
    size or an oversized one, interlacing. Raises :class:`ProbeError` with the message
    :func:`parse_ffprobe` gives for it; a clip that passes may be decoded (still images and
    the rest are left to :func:`parse_ffprobe`)."""
    streams = [s for s in data.get("streams", ()) or () if isinstance(s, Mapping)]  # type: ignore[union-attr]
    fmt = data.get("format") or {}
    video = next(
        (s for s in streams if s.get("codec_type") == "video" and not _attached_pic(s)), None
    )
    if video is None:
        raise _no_video(path, streams)
    fmt_name = str(fmt.get("format_name", "")) if isinstance(fmt, Mapping) else ""
    if _image_kind(fmt_name, str(video.get("codec_name", "unknown"))) is None:
        _check_frames(video, path)  # an image's own message comes first in parse_ffprobe


def _check_frames(video: Mapping[str, object], path: str) -> None:
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)  # type: ignore[call-overload]
    if width <= 0 or height <= 0:
        raise ProbeError(f"{path}: the video stream has no frame size; the file may be damaged.")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ProbeError(
            f"{path}: claims a {width}x{height} frame, larger than finishline can process "
            f"({MAX_SIDE} pixels a side at most); export it smaller, or if it is not that big, "
            "the file is damaged: copy it again."
        )
    field = _INTERLACED.get(str(video.get("field_order", "")))
    if field is not None:
        raise ProbeError(
            f"{path}: the video is interlaced ({field} field first) and finishline does not "
            f"deinterlace; deinterlace it first, e.g. `{deinterlace_hint(path)}`, and drop "
            "the result."
        )


def _keyframes(
    packet_pts: Sequence[float] | None, packet_keys: Sequence[float] | None
) -> tuple[float, ...] | None:
    if not packet_pts or packet_keys is None:
        return None
    if len(packet_keys) >= len(packet_pts):
        return ()  # intra-only: kept short (a long clip would list every frame)
    return tuple(sorted(packet_keys))


def parse_ffprobe(
    data: Mapping[str, object],
    *,
    path: str,
    packet_pts: Sequence[float] | None = None,
    packet_keys: Sequence[float] | None = None,
    read_errors: str = "",
) -> MediaInfo:
    """Build :class:`MediaInfo` from ``ffprobe -show_format -show_streams -of json`` output.

    ``packet_pts`` (presentation times of the video packets) makes the frame count and the
    VFR decision exact; without it they come from the stream header. ``packet_keys``: the
    keyframes' times among them (:attr:`MediaInfo.keyframes`). ``read_errors`` is
    what ffprobe said while reading those packets (a file that ends early says so there).
    """
    streams = [s for s in data.get("streams", ()) or () if isinstance(s, Mapping)]  # type: ignore[union-attr]
    fmt = data.get("format") or {}
    if not isinstance(fmt, Mapping):
        fmt = {}
    video = next(
        (s for s in streams if s.get("codec_type") == "video" and not _attached_pic(s)), None
    )
    if video is None:
        raise _no_video(path, streams)
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    codec = str(video.get("codec_name", "unknown"))
    image = _image_kind(str(fmt.get("format_name", "")), codec)
    nb = video.get("nb_frames")
    frames_seen = max(len(packet_pts or ()), int(nb) if isinstance(nb, str) and nb.isdigit() else 0)
    if image == "GIF" and frames_seen > 1:
        raise ProbeError(
            f"{path}: is an animated GIF ({frames_seen} frames), which finishline does not take; "
            f"convert it to a video first, e.g. `{gif_hint(path)}`, and drop that."
        )
    if image is not None:
        article = "an" if image[0] in "AEIOU" else "a"
        raise ProbeError(
            f"{path}: is {article} {image} image, not a video clip; export it as a video "
            "(e.g. MP4) and drop it again."
        )
    _check_frames(video, path)

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
            _check_ends_early(path, video, ordered, step, read_errors)
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
        codec=codec,
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
        keyframes=_keyframes(packet_pts, packet_keys),
    )
