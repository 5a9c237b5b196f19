"""The files a job leaves on disk, typed: written and read only through this module.

A job folder holds ``probe.json`` (:class:`ProbeRecord`), ``script.vpy`` and ``result.json``
(:class:`JobResult`); a batch folder holds ``batch.json`` (:class:`BatchSummary`),
``plans.json`` (:class:`ClipPlan` per clip) and one ``NAME.assessment.json``
(:class:`ClipAssessment`, also delivered beside the output) per clip. The TUI and the CLI read
them through :func:`read_probe`, :func:`read_result`, :func:`read_assessment` and
:func:`read_batch` and get dataclasses, never dictionaries; a missing or unreadable file reads
as ``None``. Every writer goes through :func:`~daemon.core.files.atomic_write`.

The JSON shapes are the ones earlier versions wrote, so old job folders stay readable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from daemon.core.files import atomic_write
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.render import Tuning

PROBE = "probe.json"
RESULT = "result.json"
SCRIPT = "script.vpy"
BATCH = "batch.json"
PLANS = "plans.json"
ASSESSMENT_SUFFIX = ".assessment.json"
STILL_SUFFIX = ".compare.png"
QC_SUFFIX = ".qc.json"
LUT_SUFFIX = ".cube"


def _dump(path: Path, data: object) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def _load(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- probe.json -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """What the job's probe found (the facts the TUI and reports show)."""

    width: int
    height: int
    fps: Fraction
    vfr: bool
    frame_count: int
    codec: str
    pixel_format: str
    audio_streams: int

    def line(self) -> str:
        return (
            f"{self.width}x{self.height} {self.fps.numerator}/{self.fps.denominator} fps "
            f"{'VFR' if self.vfr else 'CFR'}, {self.frame_count} frames, {self.codec} "
            f"{self.pixel_format}, audio {self.audio_streams}"
        )


def write_probe(work: Path, media: MediaInfo) -> Path:
    path = work / PROBE
    _dump(path, media.to_json())
    return path


def read_probe(work: Path) -> ProbeRecord | None:
    d = _load(work / PROBE)
    try:
        return ProbeRecord(
            int(d["width"]),
            int(d["height"]),
            Fraction(str(d["fps"])),
            bool(d["vfr"]),
            int(d["frame_count"]),
            str(d["codec"]),
            str(d["pixel_format"]),
            len(d["audio"]),
        )
    except (TypeError, KeyError, ValueError, ZeroDivisionError):
        return None


# -- result.json ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobResult:
    output: str
    frames: int
    size: tuple[int, int]
    fps: str
    timings: dict[str, float] = field(default_factory=dict)
    chunks: int = 0  # 0: the clip ran as one piece

    def timing_line(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())


def write_result(work: Path, result: JobResult) -> Path:
    path = work / RESULT
    data = asdict(result)
    data["size"] = list(result.size)
    _dump(path, data)
    return path


def read_result(work: Path) -> JobResult | None:
    d = _load(work / RESULT)
    try:
        return JobResult(
            str(d["output"]),
            int(d["frames"]),
            (int(d["size"][0]), int(d["size"][1])),
            str(d["fps"]),
            {str(k): float(v) for k, v in d.get("timings", {}).items()},
            int(d.get("chunks", 0)),
        )
    except (TypeError, KeyError, ValueError, IndexError):
        return None


# -- NAME.assessment.json -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClipAssessment:
    """One clip's assessment and colour decision (delivered beside its output)."""

    clip: str
    stats: dict[str, Any]  # the analysis (noise, blockiness, sharpness, flicker, ...)
    reference: str
    reference_reason: str
    colour_match: dict[str, Any]  # method, applied, reason, the fitted grade
    deblock: float | None
    denoise: float | None
    strengths_from: str  # "assessment" or "preset"
    crop_focus: float | None = None
    denoiser: str | None = None  # chosen by the assessment (denoise = "auto"), else None

    @property
    def noise(self) -> float:
        return float(self.stats.get("noise", 0.0))

    @property
    def match_reason(self) -> str:
        return str(self.colour_match.get("reason", ""))

    def line(self) -> str:
        s = self.stats
        return (
            f"noise {s.get('noise', 0):.2f}, blockiness {s.get('blockiness', 0):.2f}, "
            f"sharpness {s.get('sharpness', 0):.1f}, flicker {s.get('flicker', 0):.2f}%, "
            f"temporal noise {s.get('temporal_noise', 0):.2f} (motion fit "
            f"{s.get('motion_fit', 0):.2f})"
            + (f"; denoiser {self.denoiser}" if self.denoiser else "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "assessment": self.stats,
            "reference": self.reference,
            "reference_reason": self.reference_reason,
            "colour_match": self.colour_match,
            "strengths": {
                "deblock": self.deblock,
                "denoise": self.denoise,
                "denoiser": self.denoiser,
                "from": self.strengths_from,
            },
            "crop_focus": self.crop_focus,
        }


def write_assessment(path: Path, a: ClipAssessment) -> Path:
    _dump(path, a.to_json())
    return path


def read_assessment(path: Path) -> ClipAssessment | None:
    d = _load(path)
    try:
        st = d.get("strengths", {})
        return ClipAssessment(
            str(d["clip"]),
            dict(d["assessment"]),
            str(d["reference"]),
            str(d.get("reference_reason", "")),
            dict(d["colour_match"]),
            st.get("deblock"),
            st.get("denoise"),
            str(st.get("from", "")),
            d.get("crop_focus"),
            st.get("denoiser"),
        )
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def assessment_beside(output: Path) -> Path:
    return output.with_name(output.stem + ASSESSMENT_SUFFIX)


def still_beside(output: Path) -> Path:
    return output.with_name(output.stem + STILL_SUFFIX)


# -- batch.json and plans.json --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClipDecision:
    applied: bool
    reason: str


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """The batch's reference look and, per clip name, whether its match was applied."""

    reference: str
    reason: str
    clips: dict[str, ClipDecision]

    def not_applied(self) -> dict[str, str]:
        """Clip name -> why no grade was applied (the reference itself left out)."""
        return {n: c.reason for n, c in self.clips.items() if not c.applied and n != self.reference}


def write_batch(work: Path, s: BatchSummary) -> Path:
    path = work / BATCH
    _dump(
        path,
        {
            "reference": s.reference,
            "reason": s.reason,
            "clips": {n: asdict(c) for n, c in s.clips.items()},
        },
    )
    return path


def read_batch(work: Path) -> BatchSummary | None:
    d = _load(work / BATCH)
    try:
        clips = {
            str(n): ClipDecision(bool(c["applied"]), str(c["reason"]))
            for n, c in d["clips"].items()
        }
        return BatchSummary(str(d["reference"]), str(d["reason"]), clips)
    except (TypeError, KeyError, AttributeError):
        return None


@dataclass(frozen=True, slots=True)
class ClipPlan:
    """What the batch step decided for one clip: its tuning, LUT and assessment file."""

    src: str
    tuning: Tuning
    lut: Path | None
    assessment: Path
    cuts: tuple[float, ...] | None = None  # where shots start (s), when the assessment saw
    index: Path | None = None  # the clip's BestSource index the assessment wrote (no suffix)

    def sidecars(self) -> dict[str, Path]:
        """Suffix -> file delivered beside the output."""
        out = {ASSESSMENT_SUFFIX: self.assessment}
        if self.lut is not None:
            out[LUT_SUFFIX] = self.lut
        return out


def write_plans(work: Path, plans: dict[str, ClipPlan]) -> Path:
    path = work / PLANS
    _dump(
        path,
        {
            k: {
                "src": p.src,
                "tuning": asdict(p.tuning),
                "lut": str(p.lut) if p.lut else None,
                "assessment": str(p.assessment),
                "cuts": None if p.cuts is None else list(p.cuts),
                "index": None if p.index is None else str(p.index),
            }
            for k, p in plans.items()
        },
    )
    return path


def read_plans(work: Path) -> dict[str, ClipPlan] | None:
    d = _load(work / PLANS)
    try:
        return {
            str(k): ClipPlan(
                str(e["src"]),
                Tuning(**e["tuning"]),
                Path(e["lut"]) if e["lut"] else None,
                Path(e["assessment"]),
                None if e.get("cuts") is None else tuple(float(t) for t in e["cuts"]),
                Path(e["index"]) if e.get("index") else None,
            )
            for k, e in d.items()
        }
    except (TypeError, KeyError, AttributeError):
        return None
