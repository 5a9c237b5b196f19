"""Preset model: TOML text -> frozen, validated :class:`Preset`.

Pure standard library. Every allowed key is declared once in :data:`SCHEMA`; validation,
the writer, the TUI form and the docs all read that table (PySceneDetect's ``RangeValue``).
Validation collects *every* problem and raises one :class:`PresetError` listing them all.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Literal

from vs_scripts.plan.errors import PresetError

# ---------------------------------------------------------------------------------------------
# Schema: one row per key. ``choices`` for enumerations, ``lo``/``hi`` for numeric ranges.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    section: str
    name: str
    kind: Literal["str", "int", "float", "bool", "fps"]
    default: object
    doc: str
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    optional: bool = False  # None allowed (key absent means "not set")

    def describe_allowed(self) -> str:
        if self.choices:
            return "use one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "fps":
            return (
                'use 0 or "source" (keep the source rate), "natural" (the nearest standard '
                "rate at or above the source: 12 -> 24, 15 -> 30), a rate from 1 to "
                f'{MAX_FPS} like 24 or 29.97, or "30000/1001"'
            )
        if self.kind == "bool":
            return "use true or false"
        rng = []
        if self.lo is not None:
            rng.append(f">= {self.lo:g}")
        if self.hi is not None:
            rng.append(f"<= {self.hi:g}")
        kind = "an integer" if self.kind == "int" else "a number"
        return f"use {kind}" + (" " + " and ".join(rng) if rng else "")


ENCODERS = ("x265", "x264", "prores", "dnxhr", "ffv1")
CONTAINERS = ("mp4", "mov", "mkv")
PIXEL_FORMATS = ("yuv420p", "yuv420p10", "yuv422p10", "yuv444p10")
MATRICES = ("bt709", "bt601", "bt2020nc")
TRANSFERS = ("bt709", "bt601", "srgb", "bt2020-10")
HDR_POLICIES = ("refuse", "tonemap")
PRIMARIES = ("bt709", "bt601-625", "bt601-525", "bt2020")
RANGES = ("limited", "full")
FITS = ("pad", "crop", "stretch", "blur", "saliency")
SCALERS = ("spline36", "lanczos", "bicubic", "bilinear")
DENOISERS = ("off", "auto", "dfttest", "degrain", "temporal")
AUDIO_CODECS = ("aac", "pcm_s16le", "pcm_s24le", "none")
MISSING_AUDIO = ("none", "silence")
RETIME = ("repeat", "rife")
RIFE_MODELS = ("rife-4.25",)
UPSCALE_MODELS = ("off", "realesr-animevideov3", "realesrgan-x4plus")
BACKENDS = ("auto", "cpu", "cuda", "openvino")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ORDERS = ("interpolate-first", "upscale-first")
PRORES_PROFILES = ("proxy", "lt", "standard", "hq", "4444")
DNXHR_PROFILES = ("dnxhr_lb", "dnxhr_sq", "dnxhr_hq", "dnxhr_hqx", "dnxhr_444")
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)

SCHEMA: tuple[Key, ...] = (
    Key("preset", "description", "str", "", "What the preset is for, shown in the TUI."),
    Key("preset", "container", "str", "mp4", "Output container.", choices=CONTAINERS),
    Key(
        "restore",
        "auto",
        "bool",
        True,
        "Set deblock/denoise strengths from each clip's assessment (false: use the pinned values).",
    ),
    Key("restore", "deblock", "float", 0.0, "Deblocking strength (0 = off).", lo=0.0, hi=1.0),
    Key(
        "restore",
        "denoise",
        "str",
        "off",
        "Denoiser: degrain (motion-compensated), dfttest (frequency domain), temporal (cheap), "
        "or auto: chosen per clip by its assessment (degrain where motion compensation explains "
        "the picture, dfttest where it does not).",
        choices=DENOISERS,
    ),
    Key("restore", "denoise_strength", "float", 1.0, "Denoiser strength.", lo=0.0, hi=8.0),
    Key("motion", "fps", "fps", Fraction(0), "Output frame rate (0 = the source's rate)."),
    Key("motion", "method", "str", "repeat", "How to reach the output rate.", choices=RETIME),
    Key("motion", "model", "str", "rife-4.25", "Interpolation model.", choices=RIFE_MODELS),
    Key(
        "motion",
        "scene_threshold",
        "float",
        0.12,
        "Luma difference (0..1) that marks a scene cut; never interpolated across.",
        lo=0.01,
        hi=0.99,
    ),
    Key("upscale", "model", "str", "off", "Super-resolution model.", choices=UPSCALE_MODELS),
    Key("upscale", "scale", "int", 4, "Network scale (x2/x3 resample the x4 result).", lo=2, hi=4),
    Key("upscale", "tile", "int", 0, "Tile size in pixels (0 = whole frame).", lo=0, hi=4096),
    Key(
        "upscale",
        "keep_tone",
        "bool",
        True,
        "Keep the source's tone and colour at low frequencies; take only the network's detail.",
    ),
    Key(
        "upscale",
        "detail",
        "float",
        1.0,
        "How much of the network's invented detail to keep: 0 = a faithful resize (no invented "
        "texture), 1 = the full network detail.",
        lo=0.0,
        hi=1.0,
    ),
    Key(
        "upscale",
        "stabilise",
        "float",
        0.0,
        "Temporal stabilisation after the AI stages: 0 = off, 1 = the default strength "
        "(luma averaged along motion over +-2 frames, so compression shimmer and texture the "
        "network invents differently in each frame stop flickering; about 0.05 s of a core "
        "a 720p frame).",
        lo=0.0,
        hi=4.0,
    ),
    Key("ai", "backend", "str", "auto", "Where the networks run.", choices=BACKENDS),
    Key(
        "ai",
        "precision",
        "str",
        "auto",
        "auto: fp16 on CUDA; on the CPU bf16 for the OpenVINO upscaler where the CPU has it "
        "(54 dB from fp32), else fp32. bf16 also works on CUDA.",
        choices=PRECISIONS,
    ),
    Key("ai", "order", "str", "interpolate-first", "Stage order.", choices=ORDERS),
    Key(
        "ai",
        "tensorrt",
        "bool",
        False,
        "On NVIDIA, run the upscaler as a TensorRT engine (built once per shape, cached).",
    ),
    Key("colour", "match", "bool", True, "Match each clip to its batch's reference look."),
    Key(
        "colour", "strength", "float", 1.0, "How much of the colour match to apply.", lo=0.0, hi=1.0
    ),
    Key(
        "colour",
        "stabilise",
        "bool",
        True,
        "Remove frame-to-frame exposure flicker (never across a scene cut).",
    ),
    Key(
        "colour",
        "hdr",
        "str",
        "refuse",
        "An HDR source (PQ or HLG) for an SDR preset: refuse it with a clear error, or "
        "tonemap it to SDR BT.709 (noted in the script and the log).",
        choices=HDR_POLICIES,
    ),
    Key("frame", "width", "int", 0, "Output width in pixels (0 = source).", lo=0, hi=8192),
    Key("frame", "height", "int", 0, "Output height in pixels (0 = source).", lo=0, hi=8192),
    Key(
        "frame",
        "fit",
        "str",
        "pad",
        "How to fit another aspect ratio: pad (black bars), crop (centre), stretch, blur (fit "
        "over a blurred fill) or saliency (crop where the clip's subject is).",
        choices=FITS,
    ),
    Key("frame", "scaler", "str", "spline36", "Resampling kernel.", choices=SCALERS),
    Key("video", "encoder", "str", "x265", "Video encoder.", choices=ENCODERS),
    Key("video", "pixel_format", "str", "yuv420p10", "Output pixel format.", choices=PIXEL_FORMATS),
    Key("video", "crf", "float", 18.0, "Constant rate factor (x264/x265).", lo=0.0, hi=51.0),
    Key("video", "speed", "str", "medium", "x264/x265 speed preset.", choices=X26X_PRESETS),
    Key(
        "video",
        "max_bitrate_kbps",
        "int",
        None,
        "VBV peak bitrate cap.",
        lo=100,
        hi=2_000_000,
        optional=True,
    ),
    Key(
        "video",
        "gop_seconds",
        "float",
        0.5,
        "Keyframe interval in seconds (closed GOP).",
        lo=0.04,
        hi=20.0,
    ),
    Key("video", "prores_profile", "str", "hq", "ProRes profile.", choices=PRORES_PROFILES),
    Key("video", "dnxhr_profile", "str", "dnxhr_hqx", "DNxHR profile.", choices=DNXHR_PROFILES),
    Key("video", "matrix", "str", "bt709", "Colour matrix of the output.", choices=MATRICES),
    Key("video", "transfer", "str", "bt709", "Transfer characteristics.", choices=TRANSFERS),
    Key("video", "primaries", "str", "bt709", "Colour primaries.", choices=PRIMARIES),
    Key("video", "range", "str", "limited", "Signal range.", choices=RANGES),
    Key("audio", "codec", "str", "aac", "Audio codec (none drops audio).", choices=AUDIO_CODECS),
    Key("audio", "bitrate_kbps", "int", 320, "AAC bitrate.", lo=32, hi=1024),
    Key("audio", "sample_rate", "int", 48000, "Sample rate in Hz.", lo=8000, hi=192000),
    Key("audio", "channels", "int", 2, "Channel count.", lo=1, hi=8),
    Key(
        "audio",
        "loudness_lufs",
        "float",
        None,
        "Integrated loudness target (EBU R128).",
        lo=-70.0,
        hi=-5.0,
        optional=True,
    ),
    Key("audio", "true_peak_db", "float", -1.0, "True-peak ceiling.", lo=-9.0, hi=0.0),
    Key(
        "audio",
        "missing",
        "str",
        "none",
        "What to do when the source has no audio.",
        choices=MISSING_AUDIO,
    ),
    Key(
        "qc",
        "enabled",
        "bool",
        True,
        "Check every output against this preset's spec; a failing check fails the job.",
    ),
    Key(
        "qc",
        "max_video_kbps",
        "int",
        None,
        "The platform's ceiling for the average video bitrate.",
        lo=100,
        hi=2_000_000,
        optional=True,
    ),
    Key(
        "qc",
        "min_duration_s",
        "float",
        None,
        "Shortest accepted output.",
        lo=0.0,
        hi=86400.0,
        optional=True,
    ),
    Key(
        "qc",
        "max_duration_s",
        "float",
        None,
        "Longest accepted output.",
        lo=0.1,
        hi=86400.0,
        optional=True,
    ),
    Key(
        "qc",
        "min_fps",
        "float",
        None,
        "Lowest accepted frame rate.",
        lo=1.0,
        hi=1000.0,
        optional=True,
    ),
    Key(
        "qc",
        "max_fps",
        "float",
        None,
        "Highest accepted frame rate.",
        lo=1.0,
        hi=1000.0,
        optional=True,
    ),
    Key("qc", "faststart", "bool", False, "The moov atom must come before the media data."),
    Key("qc", "edit_lists", "bool", True, "Edit lists allowed in MP4/MOV (YouTube: none)."),
    Key(
        "qc",
        "loudness_tolerance_lu",
        "float",
        1.0,
        "How far the measured integrated loudness may be from the target.",
        lo=0.1,
        hi=6.0,
    ),
    Key(
        "assembly",
        "enabled",
        "bool",
        False,
        "Join each batch's clips (name order, or the order in its assembly.txt) into one "
        "deliverable after they are finished.",
    ),
    Key(
        "assembly",
        "crossfade_frames",
        "int",
        0,
        "Crossfade between clips of the sequence, video and audio (0 = cut).",
        lo=0,
        hi=600,
    ),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.section for k in SCHEMA))
_BY_SECTION: dict[str, dict[str, Key]] = {
    s: {k.name: k for k in SCHEMA if k.section == s} for s in SECTIONS
}

# Which pixel formats each encoder can take, and which containers can hold it.
ENCODER_PIXEL_FORMATS: dict[str, tuple[str, ...]] = {
    "x265": ("yuv420p", "yuv420p10", "yuv422p10", "yuv444p10"),
    "x264": ("yuv420p", "yuv420p10", "yuv422p10", "yuv444p10"),
    "prores": ("yuv422p10", "yuv444p10"),
    "dnxhr": ("yuv422p10", "yuv444p10", "yuv420p"),
    "ffv1": PIXEL_FORMATS,
}
ENCODER_CONTAINERS: dict[str, tuple[str, ...]] = {
    "x265": ("mp4", "mov", "mkv"),
    "x264": ("mp4", "mov", "mkv"),
    "prores": ("mov", "mkv"),
    "dnxhr": ("mov", "mkv"),
    "ffv1": ("mkv", "mov"),
}
AUDIO_CONTAINERS: dict[str, tuple[str, ...]] = {
    "aac": CONTAINERS,
    "pcm_s16le": ("mov", "mkv"),
    "pcm_s24le": ("mov", "mkv"),
    "none": CONTAINERS,
}

# ---------------------------------------------------------------------------------------------
# The frozen model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColourSection:
    match: bool = True
    strength: float = 1.0
    stabilise: bool = True
    hdr: str = "refuse"


@dataclass(frozen=True, slots=True)
class RestoreSection:
    auto: bool = True
    deblock: float = 0.0
    denoise: str = "off"
    denoise_strength: float = 1.0


@dataclass(frozen=True, slots=True)
class MotionSection:
    fps: Fraction | str = Fraction(0)
    """A rate, 0 for the source's, or "natural"."""
    method: str = "repeat"
    model: str = "rife-4.25"
    scene_threshold: float = 0.12


@dataclass(frozen=True, slots=True)
class UpscaleSection:
    model: str = "off"
    scale: int = 4
    tile: int = 0
    keep_tone: bool = True
    detail: float = 1.0
    stabilise: float = 0.0


@dataclass(frozen=True, slots=True)
class AiSection:
    backend: str = "auto"
    precision: str = "auto"
    order: str = "interpolate-first"
    tensorrt: bool = False


@dataclass(frozen=True, slots=True)
class FrameSection:
    width: int = 0
    height: int = 0
    fit: str = "pad"
    scaler: str = "spline36"


@dataclass(frozen=True, slots=True)
class VideoSection:
    encoder: str = "x265"
    pixel_format: str = "yuv420p10"
    crf: float = 18.0
    speed: str = "medium"
    max_bitrate_kbps: int | None = None
    gop_seconds: float = 0.5
    prores_profile: str = "hq"
    dnxhr_profile: str = "dnxhr_hqx"
    matrix: str = "bt709"
    transfer: str = "bt709"
    primaries: str = "bt709"
    range: str = "limited"


@dataclass(frozen=True, slots=True)
class AudioSection:
    codec: str = "aac"
    bitrate_kbps: int = 320
    sample_rate: int = 48000
    channels: int = 2
    loudness_lufs: float | None = None
    true_peak_db: float = -1.0
    missing: str = "none"


@dataclass(frozen=True, slots=True)
class QcSection:
    enabled: bool = True
    max_video_kbps: int | None = None
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    min_fps: float | None = None
    max_fps: float | None = None
    faststart: bool = False
    edit_lists: bool = True
    loudness_tolerance_lu: float = 1.0


@dataclass(frozen=True, slots=True)
class AssemblySection:
    enabled: bool = False
    crossfade_frames: int = 0


@dataclass(frozen=True, slots=True)
class PresetSection:
    description: str = ""
    container: str = "mp4"


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    preset: PresetSection = field(default_factory=PresetSection)
    restore: RestoreSection = field(default_factory=RestoreSection)
    colour: ColourSection = field(default_factory=ColourSection)
    motion: MotionSection = field(default_factory=MotionSection)
    upscale: UpscaleSection = field(default_factory=UpscaleSection)
    ai: AiSection = field(default_factory=AiSection)
    frame: FrameSection = field(default_factory=FrameSection)
    video: VideoSection = field(default_factory=VideoSection)
    audio: AudioSection = field(default_factory=AudioSection)
    qc: QcSection = field(default_factory=QcSection)
    assembly: AssemblySection = field(default_factory=AssemblySection)

    @property
    def extension(self) -> str:
        return "." + self.preset.container


_SECTION_CLASSES = {
    "preset": PresetSection,
    "restore": RestoreSection,
    "colour": ColourSection,
    "motion": MotionSection,
    "upscale": UpscaleSection,
    "ai": AiSection,
    "frame": FrameSection,
    "video": VideoSection,
    "audio": AudioSection,
    "qc": QcSection,
    "assembly": AssemblySection,
}

# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


MAX_FPS = 1000
"""The highest output rate a preset may ask for; a nonzero rate is at least 1."""
_MAX_FPS_DENOMINATOR = 1_000_000  # keeps num/den inside the 32-bit rationals encoders take
# Digits are bounded *before* Fraction sees them: Fraction("1e999999999") builds a
# billion-digit integer (minutes of CPU), and "1/" followed by 5,000 nines is nearly as bad.
_FPS_TEXT = re.compile(
    r"\s*(?:(?P<num>\d{1,10})\s*/\s*(?P<den>\d{1,10})"
    r"|(?P<dec>(?:\d{1,10}(?:\.\d{0,10})?|\.\d{1,10})(?:[eE][+-]?\d{1,2})?))\s*",
    re.ASCII,
)


def _fps_in_range(rate: Fraction) -> Fraction | None:
    if rate == 0 or (1 <= rate <= MAX_FPS and rate.denominator <= _MAX_FPS_DENOMINATOR):
        return rate
    return None


def parse_fps(value: object) -> Fraction | None:
    """Parse a frame rate: 0, 24, 29.97, "30000/1001". ``None`` unless it is 0 (the source's
    rate) or a rate from 1 to :data:`MAX_FPS`; never slow, whatever the input."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Fraction(value) if value == 0 or 1 <= value <= MAX_FPS else None
    if isinstance(value, float):
        if not (value == 0 or 1 <= value <= MAX_FPS):  # also refuses NaN and infinities
            return None
        # 23.976 -> 24000/1001 and 29.97 -> 30000/1001, the NTSC rates people mean.
        for base in (24, 30, 60, 120):
            ntsc = Fraction(base * 1000, 1001)
            if abs(float(ntsc) - value) < 0.0015:
                return ntsc
        return _fps_in_range(Fraction(value).limit_denominator(1001))
    if isinstance(value, str):
        match = _FPS_TEXT.fullmatch(value) if len(value) <= 40 else None
        if match is None:
            return None
        try:
            if match["den"] is not None:
                frac = Fraction(int(match["num"]), int(match["den"]))
            else:
                frac = Fraction(match["dec"])
        except (ValueError, ZeroDivisionError):
            return None
        return _fps_in_range(frac)
    return None


STANDARD_RATES = (Fraction(24), Fraction(25), Fraction(30))


def natural_fps(source: Fraction) -> Fraction:
    """The delivery rate an AI clip "wants": the source's own rate from 23.976 up; below that
    the smallest standard rate that is a whole multiple of it (12 -> 24, 12.5 -> 25, 15 -> 30,
    10 -> 30), else 24 (RIFE interpolates at any timestep)."""
    if source >= Fraction(24000, 1001) - Fraction(1, 1000):
        return source
    for rate in STANDARD_RATES:
        if (rate / source).denominator == 1:
            return rate
    return Fraction(24)


def _suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


class _ShortRepr(reprlib.Repr):
    """repr() for messages: long strings and deep containers abbreviated, and no
    ValueError from an integer past Python's 4,300-digit str() limit."""

    def __init__(self) -> None:
        super().__init__(
            maxlevel=2, maxstring=60, maxother=60, maxlist=4, maxtuple=4, maxdict=4, maxset=4
        )

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() <= 128:
            return repr(x)
        digits = int(x.bit_length() * math.log10(2)) + 1
        return f"{'-' if x < 0 else ''}<an integer of about {digits} digits>"


_short_repr = _ShortRepr().repr


def _show(value: object) -> str:
    """``value`` as a message shows it: abbreviated, never raising."""
    try:
        return _short_repr(value)
    except Exception:  # a message must never fail; the type is enough to act on
        return f"<a {type(value).__name__}>"


def _name(name: str) -> str:
    """A key or section name as written, or quoted and abbreviated where it is odd."""
    return name if len(name) <= 40 and name.isprintable() and name.strip() == name else _show(name)


def _check_value(key: Key, value: object, where: str) -> tuple[object, str | None]:
    """Return (converted value, problem or None)."""
    if value is None and key.optional:
        return None, None

    def refuse(extra: str = "") -> tuple[object, str]:
        return None, f"{where} = {_show(value)} is not allowed; {key.describe_allowed()}.{extra}"

    if key.kind == "fps":
        if value == "natural":
            return "natural", None
        if value == "source":
            return Fraction(0), None
        fps = parse_fps(value)
        return (fps, None) if fps is not None else refuse()
    if key.kind == "bool":
        return (value, None) if isinstance(value, bool) else refuse()
    if key.kind == "str":
        if not isinstance(value, str):
            return refuse()
        if key.choices and value not in key.choices:
            return refuse(_suggest(value, key.choices))
        return value, None
    # numbers: NaN passes every comparison and inf overflows conversions, so both go first
    if isinstance(value, bool) or not isinstance(value, int | float):
        return refuse()
    if isinstance(value, float) and not math.isfinite(value):
        return refuse()
    if key.kind == "int" and isinstance(value, float):
        if not value.is_integer():
            return refuse()
        value = int(value)
    # int/float comparisons are exact, so a huge integer is refused here, before float()
    if (key.lo is not None and value < key.lo) or (key.hi is not None and value > key.hi):
        return refuse()
    return (float(value) if key.kind == "float" else value), None


def load_preset(text: str, *, source: str = "<preset>", name: str | None = None) -> Preset:
    """Parse and validate TOML text. Raises :class:`PresetError` listing every problem."""
    if not isinstance(text, str):
        raise PresetError([f"{source}: a preset is text, not {type(text).__name__}."])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError([f"{source}: not valid TOML: {exc}."]) from None
    except RecursionError:  # tomllib recurses once per level of [ or {
        raise PresetError(
            [f"{source}: arrays or inline tables are nested too deeply to be a preset."]
        ) from None
    except ValueError as exc:  # int() past 4,300 digits; tomllib passes it on
        raise PresetError(
            [f"{source}: an integer has more than 4,300 digits; no setting takes one."]
            if "digits" in str(exc)
            else [f"{source}: not valid TOML: {exc}."]
        ) from None
    return preset_from_dict(data, source=source, name=name or _stem(source))


def _stem(source: str) -> str:
    base = source.replace("\\", "/").rsplit("/", 1)[-1]
    return base.removesuffix(".toml")


def preset_from_dict(data: Mapping[str, object], *, source: str, name: str) -> Preset:
    problems: list[str] = []
    values: dict[str, dict[str, object]] = {s: {} for s in SECTIONS}
    for section, table in data.items():
        if section not in _BY_SECTION:
            problems.append(
                f"{source}: unknown section [{_name(section)}]; sections are "
                + ", ".join(f"[{s}]" for s in SECTIONS)
                + "."
                + _suggest(section, SECTIONS)
            )
            continue
        if not isinstance(table, Mapping):
            problems.append(
                f"{source}: {section} = {_show(table)} is not allowed; {section} must be a "
                f"table ([{section}])."
            )
            continue
        keys = _BY_SECTION[section]
        for name_, value in table.items():
            where = f"{source}: [{section}] {_name(name_)}"
            key = keys.get(name_)
            if key is None:
                problems.append(
                    f"{where} is not a known key; [{section}] takes "
                    + ", ".join(keys)
                    + "."
                    + _suggest(name_, tuple(keys))
                )
                continue
            converted, problem = _check_value(key, value, where)
            if problem:
                problems.append(problem)
            else:
                values[section][name_] = converted

    sections = {s: _SECTION_CLASSES[s](**values[s]) for s in SECTIONS}  # type: ignore[arg-type]
    preset = Preset(name=name, **sections)  # type: ignore[arg-type]
    problems.extend(_cross_checks(preset, source))
    if problems:
        raise PresetError(problems)
    return preset


def _cross_checks(p: Preset, source: str) -> list[str]:
    out: list[str] = []
    v = p.video
    allowed = ENCODER_PIXEL_FORMATS[v.encoder]
    if v.pixel_format not in allowed:
        out.append(
            f"{source}: [video] pixel_format = {v.pixel_format!r} is not supported by encoder "
            f"{v.encoder!r}; use one of {', '.join(map(repr, allowed))}."
        )
    containers = ENCODER_CONTAINERS[v.encoder]
    if p.preset.container not in containers:
        out.append(
            f"{source}: [preset] container = {p.preset.container!r} cannot hold {v.encoder!r} "
            f"video; use one of {', '.join(map(repr, containers))}."
        )
    acont = AUDIO_CONTAINERS[p.audio.codec]
    if p.preset.container not in acont:
        out.append(
            f"{source}: [audio] codec = {p.audio.codec!r} cannot go in a "
            f"{p.preset.container!r} file; use one of {', '.join(map(repr, acont))}."
        )
    if v.encoder == "x264" and v.crf < 1 and not v.pixel_format.startswith("yuv444"):
        out.append(
            f"{source}: [video] crf = {v.crf:g} makes x264 lossless, which its "
            f"{v.pixel_format!r} profile cannot carry; use crf >= 1, pixel_format 'yuv444p10', "
            "or encoder 'ffv1' for a lossless master."
        )
    if p.ai.precision == "fp16" and p.ai.backend == "cpu":
        out.append(
            f"{source}: [ai] precision = 'fp16' needs backend 'cuda' or 'auto'; use 'fp32' on CPU."
        )
    q = p.qc
    for lo, hi, what in (
        (q.min_duration_s, q.max_duration_s, "duration_s"),
        (q.min_fps, q.max_fps, "fps"),
    ):
        if lo is not None and hi is not None and lo > hi:
            out.append(f"{source}: [qc] min_{what} = {lo:g} is above max_{what} = {hi:g}.")
    if p.frame.fit == "saliency" and not (p.frame.width and p.frame.height):
        out.append(f"{source}: [frame] fit = 'saliency' needs a width and height to crop to.")
    f = p.frame
    if (f.width == 0) != (f.height == 0):
        out.append(f"{source}: [frame] width and height must both be set or both be 0.")
    sub_w, sub_h = (2, 2) if v.pixel_format.startswith("yuv420") else (2, 1)
    if v.pixel_format.startswith("yuv444"):
        sub_w, sub_h = 1, 1
    if f.width % sub_w or f.height % sub_h:
        out.append(
            f"{source}: [frame] {f.width}x{f.height} does not fit the chroma subsampling of "
            f"{v.pixel_format!r}; use a width divisible by {sub_w} and a height by {sub_h}."
        )
    return out


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def preset_to_dict(
    preset: Preset, *, include_defaults: bool = True
) -> dict[str, dict[str, object]]:
    """A TOML-ready dict (tomli-w writes it). ``None`` values are omitted; fps as text."""
    out: dict[str, dict[str, object]] = {}
    for section in SECTIONS:
        obj = getattr(preset, section)
        table: dict[str, object] = {}
        for f_ in fields(obj):
            value = getattr(obj, f_.name)
            key = _BY_SECTION[section][f_.name]
            if value is None:
                continue
            if not include_defaults and value == key.default:
                continue
            if isinstance(value, Fraction):
                value = value.numerator if value.denominator == 1 else str(value)
            table[f_.name] = value
        if table:
            out[section] = table
    return out
