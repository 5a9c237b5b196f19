"""Sequence assembly: a batch's finished clips joined into one deliverable at one cadence,
with optional video and audio crossfades, loudness-normalised as a whole and QC'd like any
output.

The order is the clips' names, or the ``order`` list of an ``assembly.toml`` manifest in the
batch folder (which also flags the batch for assembly, like an empty ``.assemble`` file)::

    order = ["wide.mp4", "close.mp4", "reverse.mp4"]
    crossfade_frames = 12
"""

from __future__ import annotations

import contextlib
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from daemon.core.errors import AppError, EncodeError, QcError, VerifyError
from daemon.core.files import atomic_write, partial_path
from daemon.core.probe import probe
from daemon.core.tools import find_tool, run_capture, tail
from daemon.engine import commands as C
from daemon.engine.checks import Expected, Report, evaluate
from daemon.engine.measure import measure
from vs_scripts.plan.preset import Preset

log = logging.getLogger(__name__)

MANIFEST = "assembly.toml"
MARKER = ".assemble"


@dataclass(frozen=True, slots=True)
class Sequence:
    clips: tuple[str, ...]  # keys (source names) in order
    crossfade_frames: int


def plan_sequence(
    names: list[str], preset: Preset, manifest: Mapping[str, object] | None
) -> Sequence:
    """The order and crossfade for a batch whose finished clips are ``names`` (source file
    names). Pure: raises :class:`AppError` naming what is wrong with the manifest."""
    crossfade = preset.assembly.crossfade_frames
    order = sorted(names)
    if manifest:
        unknown_keys = set(manifest) - {"order", "crossfade_frames"}
        if unknown_keys:
            raise AppError(
                f"{MANIFEST}: unknown key(s) {', '.join(sorted(unknown_keys))}; "
                "use order and crossfade_frames."
            )
        if "crossfade_frames" in manifest:
            value = manifest["crossfade_frames"]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 600:
                raise AppError(f"{MANIFEST}: crossfade_frames = {value!r}; use 0..600 frames.")
            crossfade = value
        if "order" in manifest:
            listed = manifest["order"]
            if not isinstance(listed, list) or not all(isinstance(x, str) for x in listed):
                raise AppError(f"{MANIFEST}: order must be a list of clip file names.")
            missing = [x for x in listed if x not in names]
            if missing:
                raise AppError(
                    f"{MANIFEST}: order names clips that are not in the batch: "
                    f"{', '.join(missing)} (the batch has {', '.join(sorted(names))})."
                )
            if len(set(listed)) != len(listed):
                raise AppError(f"{MANIFEST}: order lists a clip twice.")
            order = list(listed)
    if not order:
        raise AppError("nothing to assemble: the batch has no finished clips.")
    return Sequence(tuple(order), crossfade)


def read_manifest(folder: Path) -> dict[str, object] | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AppError(f"{path}: not valid TOML: {exc}.") from None


def wants_assembly(folder: Path | None, preset: Preset) -> bool:
    return preset.assembly.enabled or (
        folder is not None and ((folder / MANIFEST).exists() or (folder / MARKER).exists())
    )


def assemble(
    clips: list[Path],
    preset: Preset,
    output: Path,
    *,
    crossfade_frames: int,
    work: Path,
    threads: int | None = None,
) -> Report:
    """Join finished ``clips`` (in this order) into ``output``: written to a temporary name,
    checked (frame count, then the preset's QC), renamed into place. Returns the QC report."""
    if output.exists():
        raise AppError(f"{output}: already exists; not overwriting it.")
    if not clips:
        raise AppError("nothing to assemble.")
    infos = [probe(c) for c in clips]
    first = infos[0]
    fps = first.fps
    if isinstance(preset.motion.fps, Fraction) and preset.motion.fps:
        fps = preset.motion.fps
    others = sorted({f"{i.fps}" for i in infos if i.fps != fps})
    if others:
        log.warning(
            "sequence at %s fps: clips at %s fps are converted by frame repeat/drop",
            fps,
            ", ".join(others),
        )
    spans = [
        C.Span(str(c), max(1, round(i.duration * fps)), i.has_audio)
        for c, i in zip(clips, infos, strict=True)
    ]
    shortest = min(s.frames for s in spans)
    if crossfade_frames and len(spans) > 1 and crossfade_frames >= shortest:
        raise AppError(
            f"a crossfade of {crossfade_frames} frames is longer than the shortest "
            f"clip ({shortest} frames); use fewer frames."
        )
    width, height = first.width, first.height
    ffmpeg = find_tool("ffmpeg")
    kw = {"fps": fps, "width": width, "height": height, "crossfade": crossfade_frames}
    loudness = None
    if preset.audio.codec != "none" and preset.audio.loudness_lufs is not None:
        cmd = C.sequence_command(
            preset, spans, output=os.devnull, measure=True, ffmpeg=ffmpeg, **kw
        )  # type: ignore[arg-type]
        res = run_capture(cmd, timeout=3600)
        if res.returncode != 0:
            raise EncodeError("sequence loudness", [cmd], [res.returncode], [tail(res.stderr)])
        loudness = C.parse_loudnorm_json(res.stderr)
    work.mkdir(parents=True, exist_ok=True)
    partial = partial_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        cmd = C.sequence_command(
            preset,
            spans,
            output=str(partial),
            loudness=loudness,
            ffmpeg=ffmpeg,
            threads=threads,
            **kw,
        )  # type: ignore[arg-type]
        res = run_capture(cmd, timeout=24 * 3600)
        if res.returncode != 0:
            raise EncodeError(
                "sequence",
                [cmd],
                [res.returncode],
                [tail(res.stderr)],
                hint="the clips are finished outputs of one preset; check them "
                "with finishline probe",
            )
        want = C.sequence_frames(spans, crossfade_frames)
        facts = measure(partial, with_loudness=preset.qc.enabled)
        if abs(facts.frames - want) > 1:
            raise AppError(f"the sequence has {facts.frames} frames, expected {want}.")
        audio = preset.audio.codec != "none" and (
            any(s.has_audio for s in spans) or preset.audio.missing == "silence"
        )
        expected = Expected(facts.frames, width, height, fps, audio)
        report = evaluate(facts, preset, file=output.name, expected=expected, qc=preset.qc.enabled)
        atomic_write(work / f"{output.stem}.qc.json", report.to_json())
        if not report.verified:
            raise VerifyError(
                str(output), [f"{c.name}: {c.detail}" for c in report.failures if c.required]
            )
        if not report.passed:
            raise QcError(report)
        if output.exists():
            raise AppError(f"{output}: appeared while assembling; not overwriting it.")
        os.replace(partial, output)
        if preset.qc.enabled:
            try:
                atomic_write(output.with_name(output.stem + ".qc.json"), report.to_json())
            except OSError as exc:  # delivered: a missing sidecar does not undo that
                log.warning("%s: no .qc.json beside it (%s)", output.name, exc)
        log.info(
            "assembled %d clips into %s (%d frames, crossfade %d)",
            len(clips),
            output,
            facts.frames,
            crossfade_frames,
        )
        return report
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
