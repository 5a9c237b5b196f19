"""A batch's assessment and colour plan: probe and analyse every clip, pick the reference,
fit each clip's match, bake the ``.cube`` files. Called by the engine's batch step
(:meth:`daemon.engine.finish.Engine.assess`), which caches it per batch."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from daemon.analysis import grading as colour
from daemon.core.artifacts import (
    BatchSummary,
    ClipAssessment,
    ClipDecision,
    ClipPlan,
    write_assessment,
    write_batch,
)
from daemon.core.files import short_name
from daemon.core.probe import probe
from daemon.core.tools import usable_cores
from vs_scripts.plan.errors import AppError
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.preset import Preset
from vs_scripts.plan.render import crop_axis, crop_focus, source_colour, tune

log = logging.getLogger(__name__)


def plan_batch(
    sources: dict[str, Path], preset: Preset, work: Path, *, reference: str | None = None
) -> tuple[BatchSummary | None, dict[str, ClipPlan]]:
    """Analyse ``sources`` (key -> clip) as one batch; returns the batch summary and key ->
    plan. Writes ``batch.json``, one ``NAME.assessment.json`` and (when matched) one
    ``NAME.cube`` per clip into ``work``. A clip that cannot be analysed is left out (its own
    job reports why)."""
    work.mkdir(parents=True, exist_ok=True)
    indexes = {key: index_base(work, key, src) for key, src in sources.items()}
    stats, medias = _analyse(sources, indexes)
    if not stats:
        return None, {}
    ref_name, why = _reference(stats, reference)
    ref = next(s for s in stats.values() if s.name == ref_name)
    log.info("batch reference: %s (%s)", ref_name, why)
    plans: dict[str, ClipPlan] = {}
    decisions: dict[str, ClipDecision] = {}
    for key, st in stats.items():
        src = sources[key]
        match = (
            colour.fit_match(st, ref)
            if preset.colour.match
            else colour.Match(st.name, ref_name, False, "colour matching is off in the preset")
        )
        if not match.applied and match.reason.startswith("too different"):
            log.warning("%s: %s", st.name, match.reason)
        lut_path = None
        if match.applied:
            lut_path = work / f"{key_stem(key, src)}.cube"
            table = colour.bake_lut(match, strength=preset.colour.strength)
            colour.write_cube(lut_path, table, title=f"finishline match to {ref_name}")
        tuning = tune(
            preset,
            noise=st.noise,
            blockiness=st.blockiness,
            lut=lut_path is not None,
            focus=saliency_focus(preset, medias[key], st),
            temporal_noise=st.temporal_noise,
            motion_fit=st.motion_fit,
        )
        assessment = ClipAssessment(
            st.name,
            st.to_json(),
            ref_name,
            why,
            match.to_json(),
            tuning.deblock,
            tuning.denoise_strength,
            "assessment" if preset.restore.auto else "preset",
            tuning.focus,
            tuning.denoiser,
        )
        a_path = write_assessment(work / f"{key_stem(key, src)}.assessment.json", assessment)
        plans[key] = ClipPlan(
            str(src), tuning, lut_path, a_path, cuts=tuple(st.cuts), index=indexes[key]
        )
        decisions[st.name] = ClipDecision(match.applied, match.reason)
    summary = BatchSummary(ref_name, why, decisions)
    write_batch(work, summary)
    return summary, plans


def index_base(work: Path, key: str, src: Path) -> Path:
    """Where the assessment writes a clip's BestSource index for its job to read: named by
    the clip's size and time too, so a clip replaced under the same name is indexed anew."""
    try:
        st = src.stat()
        stamp = f"{st.st_size}-{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    digest = hashlib.sha256(stamp.encode()).hexdigest()[:8]
    return work.absolute() / f"{key_stem(key, src)}.{digest}.source"


def _analyse(
    sources: dict[str, Path], indexes: dict[str, Path]
) -> tuple[dict[str, colour.ClipStats], dict[str, object]]:
    """Every clip's stats and probe, several clips at once (VapourSynth and numpy release the
    GIL while they work), as many as there are cores."""
    colour.load_colour_science()  # the first measurement waits for it, if it must
    usable = usable_cores()  # (reads the cgroup's CPU quota: once)
    at_once = max(1, min(len(sources), usable))
    cores = usable // at_once  # each clip's share: its measuring pass is split over them

    def one(key: str) -> tuple[colour.ClipStats, object] | None:
        src = sources[key]
        index = str(indexes[key])
        try:
            # BestSource indexes the clip (decodes it end to end) while its packets are still
            # probed, once its streams have passed the checks that need none (a clip refused
            # only for its packets, a truncated one, is indexed as far as it goes)
            with ThreadPoolExecutor(1, thread_name_prefix="index") as side:
                opened: list[Future[object]] = []

                def start_index() -> None:
                    opened.append(
                        side.submit(colour.open_source, str(src), index=index, cores=cores)
                    )

                media = probe(src, on_header=start_index)
                reader = opened[0].result() if opened else None
            sc, _ = source_colour(media)
            st = colour.analyse_clip(
                str(src),
                matrix=sc.matrix,
                transfer=sc.transfer,
                primaries=sc.primaries,
                color_range=sc.range,
                index=index,
                cores=cores,
                reader=reader,
                keyframes=keyframe_numbers(media),
            )
        except Exception as exc:  # a bad clip fails in its own job, not the whole batch
            log.info("%s: left out of the batch assessment (%s)", src.name, exc)
            return None
        st.name = src.name
        return st, media

    with ThreadPoolExecutor(at_once) as pool:
        results = dict(zip(sources, pool.map(one, sources), strict=True))
    stats = {key: r[0] for key, r in results.items() if r is not None}
    medias = {key: r[1] for key, r in results.items() if r is not None}
    return stats, medias


def keyframe_numbers(media: MediaInfo) -> list[int]:
    """The frame numbers of the clip's keyframes, from their times at the clip's rate, as its
    probe read them; none if it did not, or if the clip is VFR (there a time does not give
    the frame number closely enough to start a part just after the keyframe)."""
    if media.vfr:
        return []
    fps = float(media.fps)
    return [round((t - media.start_time) * fps) for t in media.keyframes or ()]


def _reference(stats: dict[str, colour.ClipStats], reference: str | None) -> tuple[str, str]:
    if reference is None:
        return colour.choose_reference(list(stats.values()))
    names = [st.name for st in stats.values()]
    if reference not in names:
        raise AppError(
            f"--reference {reference!r} is not one of this batch's clips: {', '.join(names)}."
        )
    return reference, "chosen by the user (--reference)"


def saliency_focus(preset: Preset, media, st: colour.ClipStats) -> float | None:  # type: ignore[no-untyped-def]
    """Where a saliency crop of this clip sits, or ``None`` when the preset does not crop."""
    if preset.frame.fit != "saliency":
        return None
    axis = crop_axis(preset, media)
    if axis is None:
        return None
    profile = st.saliency_x if axis[0] == "x" else st.saliency_y
    return crop_focus(profile, axis[1])


def key_stem(key: str, src: Path) -> str:
    """A file-name stem for a clip's batch files that always fits a file system's 255-byte
    limit: the source stem (prefixed by its batch key when that is not the path), cut and
    suffixed with a hash when long."""
    stem = src.stem if key == str(src) else f"{key}-{src.stem}"
    return short_name(stem, limit=120)
