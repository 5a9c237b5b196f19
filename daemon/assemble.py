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

from daemon import commands as C
from daemon.errors import AppError, EncodeError, QcError
from daemon.files import atomic_write
from daemon.measure import measure
from daemon.pipeline import parse_loudnorm_json, partial_path
from daemon.probe import probe
from daemon.qc import Report, evaluate
from daemon.tools import find_tool, run_capture, tail
from vs_scripts.preset import Preset

log = logging.getLogger(__name__)

MANIFEST = "assembly.toml"
MARKER = ".assemble"


@dataclass(frozen=True, slots=True)
class Sequence:
    clips: tuple[str, ...]  # keys (source names) in order
    crossfade_frames: int


def plan_sequence(names: list[str], preset: Preset, manifest: Mapping[str, object] | None) -> Sequence:
    """The order and crossfade for a batch whose finished clips are ``names`` (source file
    names). Pure: raises :class:`AppError` naming what is wrong with the manifest."""
    crossfade = preset.assembly.crossfade_frames
    order = sorted(names)
    if manifest:
        unknown_keys = set(manifest) - {"order", "crossfade_frames"}
        if unknown_keys:
            raise AppError(f"{MANIFEST}: unknown key(s) {', '.join(sorted(unknown_keys))}; "
                           "use order and crossfade_frames.")  # fmt: skip
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
                raise AppError(f"{MANIFEST}: order names clips that are not in the batch: "
                               f"{', '.join(missing)} (the batch has {', '.join(sorted(names))}).")  # fmt: skip
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
    clips: list[Path], preset: Preset, output: Path, *, crossfade_frames: int,
    work: Path, threads: int | None = None,
) -> Report | None:  # fmt: skip
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
        log.warning("sequence at %s fps: clips at %s fps are converted by frame repeat/drop",
                    fps, ", ".join(others))  # fmt: skip
    spans = [C.Span(str(c), max(1, round(i.duration * fps)), i.has_audio)
             for c, i in zip(clips, infos, strict=True)]  # fmt: skip
    shortest = min(s.frames for s in spans)
    if crossfade_frames and len(spans) > 1 and crossfade_frames >= shortest:
        raise AppError(f"a crossfade of {crossfade_frames} frames is longer than the shortest "
                       f"clip ({shortest} frames); use fewer frames.")  # fmt: skip
    width, height = first.width, first.height
    ffmpeg = find_tool("ffmpeg")
    kw = {"fps": fps, "width": width, "height": height, "crossfade": crossfade_frames}
    loudness = None
    if preset.audio.codec != "none" and preset.audio.loudness_lufs is not None:
        cmd = C.sequence_command(preset, spans, output=os.devnull, measure=True, ffmpeg=ffmpeg,
                                 **kw)  # type: ignore[arg-type]  # fmt: skip
        res = run_capture(cmd, timeout=3600)
        if res.returncode != 0:
            raise EncodeError("sequence loudness", [cmd], [res.returncode], [tail(res.stderr)])
        loudness = parse_loudnorm_json(res.stderr)
    work.mkdir(parents=True, exist_ok=True)
    partial = partial_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        cmd = C.sequence_command(preset, spans, output=str(partial), loudness=loudness,
                                 ffmpeg=ffmpeg, threads=threads, **kw)  # type: ignore[arg-type]  # fmt: skip
        res = run_capture(cmd, timeout=24 * 3600)
        if res.returncode != 0:
            raise EncodeError("sequence", [cmd], [res.returncode], [tail(res.stderr)],
                              hint="the clips are finished outputs of one preset; check them "
                              "with finishline probe")  # fmt: skip
        want = C.sequence_frames(spans, crossfade_frames)
        facts = measure(partial)
        if abs(facts.frames - want) > 1:
            raise AppError(f"the sequence has {facts.frames} frames, expected {want}.")
        report = None
        if preset.qc.enabled:
            report = evaluate(facts, preset, file=output.name, width=width, height=height, fps=fps)
            atomic_write(work / f"{output.stem}.qc.json", report.to_json())
            if not report.passed:
                raise QcError(report)
        if output.exists():
            raise AppError(f"{output}: appeared while assembling; not overwriting it.")
        os.replace(partial, output)
        if report is not None:
            atomic_write(output.with_name(output.stem + ".qc.json"), report.to_json())
        log.info("assembled %d clips into %s (%d frames, crossfade %d)", len(clips), output,
                 facts.frames, crossfade_frames)  # fmt: skip
        return report
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
