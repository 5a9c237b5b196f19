"""One check of an output: is this file what the job planned and what the platform accepts?

Pure rules over measured :class:`Facts` (no I/O; :mod:`daemon.engine.measure` measures once:
one ffprobe pass, one loudness pass). Every check has a name, a verdict, a sentence and whether
it is *required*: the required checks (stream counts, frame count, size, rate, codec, colour
tags, audio codec/rate/length) are the verification every output gets; the rest are the
preset's delivery QC (``[qc] enabled``). A failed check fails the job and its sentence goes into
the error report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction

from daemon.engine.commands import FFMPEG_PIX_FMTS, MUXERS, gop_length
from vs_scripts.plan.preset import Preset
from vs_scripts.plan.render import output_colour

#: ffprobe codec_name and profile wanted for each encoder and pixel format
VIDEO_CODECS = {
    "x265": "hevc",
    "x264": "h264",
    "prores": "prores",
    "dnxhr": "dnxhd",
    "ffv1": "ffv1",
}
H26X_PROFILES = {
    ("x265", "yuv420p"): "Main",
    ("x265", "yuv420p10"): "Main 10",
    ("x265", "yuv422p10"): "Rext",
    ("x265", "yuv444p10"): "Rext",
    ("x264", "yuv420p"): "High",
    ("x264", "yuv420p10"): "High 10",
    ("x264", "yuv422p10"): "High 4:2:2",
    ("x264", "yuv444p10"): "High 4:4:4 Predictive",
}
#: a stream of one of these profiles plays wherever the wanted one does (x264 signals the
#: lowest profile its output needs, e.g. Main at ultrafast, whatever ceiling it was given)
PROFILE_SUBSETS = {
    "High": ("Constrained Baseline", "Baseline", "Main"),
    "High 10": ("High", "Main", "Constrained Baseline"),
    "Main 10": ("Main",),
}
PRORES_PROFILES = {"proxy": "Proxy", "lt": "LT", "standard": "Standard", "hq": "HQ", "4444": "4444"}
DNXHR_PROFILES = {
    "dnxhr_lb": "DNXHR LB",
    "dnxhr_sq": "DNXHR SQ",
    "dnxhr_hq": "DNXHR HQ",
    "dnxhr_hqx": "DNXHR HQX",
    "dnxhr_444": "DNXHR 444",
}
STANDARD_RATES = tuple(
    Fraction(n, d)
    for n, d in (
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
        (120, 1),
    )
)
#: measured true peak may exceed the ceiling this much after a lossy audio encode (dB)
TRUE_PEAK_SLACK = 0.5


@dataclass(slots=True)
class Facts:
    """What was measured in one output file."""

    format_name: str
    video_streams: int
    audio_streams: int
    top_level_boxes: list[str]  # MP4/MOV atom order, e.g. ["ftyp", "moov", "mdat"]
    edit_lists: int  # 'elst' boxes inside moov
    duration: float
    video_codec: str
    video_profile: str
    width: int
    height: int
    sar: str
    fps: str  # r_frame_rate
    frames: int
    pix_fmt: str
    colour: dict[str, str]  # matrix/transfer/primaries/range as ffprobe names them
    max_keyframe_interval: int  # frames between keyframes (the longest GOP)
    video_kbps: float
    peak_video_kbps: float  # the largest one-second window
    audio_codec: str | None = None
    audio_rate: int | None = None
    audio_channels: int | None = None
    audio_kbps: float | None = None
    audio_duration: float | None = None
    loudness_lufs: float | None = None
    true_peak_db: float | None = None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = False  # part of every output's verification, QC on or off


@dataclass(frozen=True, slots=True)
class Expected:
    """What the job planned for its output (absent for a stand-alone ``finishline qc``)."""

    frames: int
    width: int
    height: int
    fps: Fraction
    audio: bool  # an audio track is expected


@dataclass(slots=True)
class Report:
    file: str
    preset: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def verified(self) -> bool:
        """Every required check passed (QC-only failures aside)."""
        return all(c.ok for c in self.checks if c.required)

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "file": self.file,
                    "preset": self.preset,
                    "passed": self.passed,
                    "checks": [asdict(c) for c in self.checks],
                },
                indent=2,
            )
            + "\n"
        )

    def text(self) -> str:
        lines = [
            f"QC of {self.file} against preset {self.preset}: "
            f"{'PASSED' if self.passed else 'FAILED'}"
        ]
        lines += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name:<14} {c.detail}" for c in self.checks]
        return "\n".join(lines)


def _rate(text: str) -> Fraction:
    num, _, den = text.partition("/")
    try:
        return Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return Fraction(0)


def expected_profile(preset: Preset) -> str | None:
    v = preset.video
    if v.encoder in ("x264", "x265"):
        return H26X_PROFILES.get((v.encoder, v.pixel_format))
    if v.encoder == "prores":
        return PRORES_PROFILES[v.prores_profile]
    if v.encoder == "dnxhr":
        return DNXHR_PROFILES[v.dnxhr_profile]
    return None


def evaluate(
    facts: Facts,
    preset: Preset,
    *,
    file: str,
    expected: Expected | None = None,
    qc: bool = True,
) -> Report:
    """Check ``facts`` against what the job planned (``expected``) and, with ``qc``, against
    the preset's delivery spec. Without ``expected`` (a stand-alone check) the preset's fixed
    size and rate and the standard rates apply."""
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str, *, required: bool = False) -> None:
        checks.append(Check(name, bool(ok), detail, required))

    _streams(check, facts, preset, expected)
    _video(check, facts, preset, expected)
    _audio(check, facts, preset, expected)
    if qc:
        _container(check, facts, preset)
        _delivery(check, facts, preset)
    else:
        checks = [c for c in checks if c.required]
    return Report(file, preset.name, checks)


_Add = Callable[..., None]


def _streams(check: _Add, facts: Facts, preset: Preset, expected: Expected | None) -> None:
    check(
        "video streams",
        facts.video_streams == 1,
        f"{facts.video_streams} (wanted 1)",
        required=True,
    )
    if expected is not None:
        check(
            "frames",
            facts.frames == expected.frames,
            f"{facts.frames} frames (planned {expected.frames})",
            required=True,
        )


def _video(check: _Add, facts: Facts, preset: Preset, expected: Expected | None) -> None:
    v = preset.video
    codec = VIDEO_CODECS[v.encoder]
    check(
        "video codec",
        facts.video_codec == codec,
        f"{facts.video_codec} (wanted {codec})",
        required=True,
    )
    want_w = expected.width if expected else preset.frame.width or None
    want_h = expected.height if expected else preset.frame.height or None
    if want_w and want_h:
        check(
            "frame size",
            (facts.width, facts.height) == (want_w, want_h),
            f"{facts.width}x{facts.height} (wanted {want_w}x{want_h})",
            required=True,
        )
    rate = _rate(facts.fps)
    fps = expected.fps if expected else None
    if fps is None and isinstance(preset.motion.fps, Fraction) and preset.motion.fps:
        fps = preset.motion.fps
    if fps is not None:
        check(
            "frame rate",
            abs(float(rate) - float(fps)) < 1e-3,
            f"{facts.fps} fps (wanted {fps.numerator}/{fps.denominator})",
            required=True,
        )
    elif preset.motion.fps == "natural":
        ok = any(abs(float(rate) - float(r)) < 1e-3 for r in STANDARD_RATES)
        check("frame rate", ok, f"{facts.fps} fps" + ("" if ok else " is not a standard rate"))
    wanted_colour = output_colour(preset).names
    for key, got in facts.colour.items():
        if key == "range" and v.encoder == "ffv1" and got in ("", "unknown"):
            continue  # FFV1 in QuickTime has nowhere to store the range flag
        want = wanted_colour[key]
        check(f"colour {key}", got == want, f"{got or 'untagged'} (wanted {want})", required=True)


def _audio(check: _Add, facts: Facts, preset: Preset, expected: Expected | None) -> None:
    a, q = preset.audio, preset.qc
    if a.codec == "none":
        check(
            "audio",
            facts.audio_streams == 0,
            "no audio track" if facts.audio_streams == 0 else "an audio track is present",
            required=True,
        )
        return
    if facts.audio_streams == 0:
        wanted = expected.audio if expected else a.missing != "none"
        check(
            "audio",
            not wanted,
            "no audio track (the source had none; preset: missing = none)"
            if not wanted
            else "no audio track; the preset asks for one (missing = silence)",
            required=True,
        )
        return
    if expected is not None and not expected.audio:
        check(
            "audio",
            False,
            f"expected no audio, found {facts.audio_streams} stream(s)",
            required=True,
        )
        return
    check(
        "audio streams",
        facts.audio_streams == 1,
        f"{facts.audio_streams} (wanted 1)",
        required=True,
    )
    check(
        "audio codec",
        facts.audio_codec == a.codec,
        f"{facts.audio_codec} (wanted {a.codec})",
        required=True,
    )
    check(
        "audio rate",
        facts.audio_rate == a.sample_rate,
        f"{facts.audio_rate} Hz (wanted {a.sample_rate})",
        required=True,
    )
    rate = _rate(facts.fps)
    video_s = expected.frames / float(expected.fps) if expected else facts.duration
    if facts.audio_duration is not None:
        gap = abs(facts.audio_duration - video_s)
        check(
            "audio length",
            gap <= max(0.05, 1.5 / float(rate or 24)),
            f"audio {facts.audio_duration:.3f} s, video {video_s:.3f} s",
            required=True,
        )
    else:
        check("audio length", False, "the audio track's length cannot be measured", required=True)
    check(
        "channels",
        facts.audio_channels == a.channels,
        f"{facts.audio_channels} (wanted {a.channels})",
    )
    if a.codec == "aac" and facts.audio_kbps is not None:
        check(
            "audio bitrate",
            facts.audio_kbps <= a.bitrate_kbps * 1.1,
            f"{facts.audio_kbps:.0f} kbps (at most {a.bitrate_kbps})",
        )
    if a.loudness_lufs is not None and facts.loudness_lufs is not None:
        silent = facts.loudness_lufs <= -69.0
        ok = silent or abs(facts.loudness_lufs - a.loudness_lufs) <= q.loudness_tolerance_lu
        check(
            "loudness",
            ok,
            "silence"
            if silent
            else f"{facts.loudness_lufs:.1f} LUFS (target {a.loudness_lufs:g} "
            f"± {q.loudness_tolerance_lu:g})",
        )
    if a.loudness_lufs is not None and facts.true_peak_db is not None:
        ceiling = a.true_peak_db + TRUE_PEAK_SLACK
        check(
            "true peak",
            facts.true_peak_db <= ceiling,
            f"{facts.true_peak_db:.1f} dBTP (ceiling {a.true_peak_db:g})",
        )


def _container(check: _Add, facts: Facts, preset: Preset) -> None:
    q = preset.qc
    container = preset.preset.container
    isobmff = container in ("mp4", "mov")
    want_fmt = MUXERS[container]
    check(
        "container",
        want_fmt in facts.format_name.split(","),
        f"{facts.format_name} (wanted {container})",
    )
    if isobmff and q.faststart:
        order = facts.top_level_boxes
        ok = "moov" in order and "mdat" in order and order.index("moov") < order.index("mdat")
        check(
            "faststart",
            ok,
            "moov before mdat"
            if ok
            else f"moov is not before the media data (atoms: {' '.join(order)})",
        )
    if isobmff and not q.edit_lists:
        check(
            "edit lists",
            facts.edit_lists == 0,
            "none" if facts.edit_lists == 0 else f"{facts.edit_lists} edit list(s) present",
        )


def _delivery(check: _Add, facts: Facts, preset: Preset) -> None:
    v, q = preset.video, preset.qc
    profile = expected_profile(preset)
    if profile is not None:
        within = facts.video_profile in PROFILE_SUBSETS.get(profile, ())
        check(
            "profile",
            facts.video_profile == profile or within,
            f"{facts.video_profile or 'unknown'} (wanted {profile}"
            f"{'; a subset of it' if within else ''})",
        )
    pix = FFMPEG_PIX_FMTS[v.pixel_format]
    check("pixel format", facts.pix_fmt == pix, f"{facts.pix_fmt} (wanted {pix})")
    check(
        "square pixels",
        facts.sar in ("1:1", "0:1", "N/A", ""),
        f"sample aspect {facts.sar or '1:1'}",
    )
    rate = _rate(facts.fps)
    lo, hi = q.min_fps, q.max_fps
    if lo is not None or hi is not None:
        ok = (lo is None or float(rate) >= lo - 1e-3) and (hi is None or float(rate) <= hi + 1e-3)
        check("fps limits", ok, f"{float(rate):.3f} fps (accepted {lo or 0:g}-{hi or 'any'})")
    if v.encoder in ("x264", "x265"):
        gop = gop_length(preset, rate) if rate else 0
        check(
            "GOP",
            0 < facts.max_keyframe_interval <= gop,
            f"longest GOP {facts.max_keyframe_interval} frames (at most {gop}: "
            f"{v.gop_seconds:g} s)",
        )
    cap = q.max_video_kbps
    if cap is not None:
        check(
            "bitrate",
            facts.video_kbps <= cap,
            f"{facts.video_kbps:.0f} kbps average, peak second {facts.peak_video_kbps:.0f} "
            f"(ceiling {cap})",
        )
    if q.min_duration_s is not None or q.max_duration_s is not None:
        lo_d, hi_d = q.min_duration_s, q.max_duration_s
        ok = (lo_d is None or facts.duration >= lo_d) and (hi_d is None or facts.duration <= hi_d)
        check("duration", ok, f"{facts.duration:.2f} s (accepted {lo_d or 0:g}-{hi_d or 'any'} s)")
