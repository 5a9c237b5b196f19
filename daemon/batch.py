"""A batch's assessment and colour plan: probe and analyse every clip, pick the reference,
fit each clip's match, bake the ``.cube`` files. Used by ``finishline process A B C`` and by
the daemon's workers (once per batch, cached in the batch's work folder)."""

from __future__ import annotations

import fcntl
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from daemon import colour
from daemon.probe import probe
from vs_scripts.preset import Preset
from vs_scripts.render import Tuning, crop_axis, crop_focus, source_colour, tune

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClipPlan:
    src: str
    tuning: Tuning
    lut: Path | None
    assessment: Path


def plan_batch(
    sources: dict[str, Path], preset: Preset, work: Path, *, reference: str | None = None
) -> dict[str, ClipPlan]:
    """Analyse ``sources`` (key -> clip) as one batch; returns key -> plan. Writes
    ``batch.json``, one ``NAME.assessment.json`` and (when matched) one ``NAME.cube`` per clip
    into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    stats: dict[str, colour.ClipStats] = {}
    medias = {}
    paths = dict(sources)
    for key, src in sources.items():
        try:
            media = probe(src)
            sc, _ = source_colour(media)
            st = colour.analyse_clip(str(src), matrix=sc.matrix, transfer=sc.transfer,
                                     primaries=sc.primaries, color_range=sc.range)  # fmt: skip
        except Exception as exc:  # a bad clip fails in its own job, not the whole batch
            log.info("%s: left out of the batch assessment (%s)", src.name, exc)
            continue
        st.name = src.name
        stats[key] = st
        medias[key] = media
    if not stats:
        return {}
    if reference is not None:
        names = [st.name for st in stats.values()]
        if reference not in names:
            from vs_scripts.errors import AppError

            raise AppError(f"--reference {reference!r} is not one of this batch's clips: "
                           f"{', '.join(names)}.")  # fmt: skip
        ref_name, why = reference, "chosen by the user (--reference)"
    else:
        ref_name, why = colour.choose_reference(list(stats.values()))
    ref = next(s for s in stats.values() if s.name == ref_name)
    log.info("batch reference: %s (%s)", ref_name, why)
    plans: dict[str, ClipPlan] = {}
    summary = {"reference": ref_name, "reason": why, "clips": {}}
    for key, st in stats.items():
        src = paths[key]
        match = (
            colour.fit_match(st, ref) if preset.colour.match
            else colour.Match(st.name, ref_name, False, "colour matching is off in the preset")
        )  # fmt: skip
        if not match.applied and match.reason.startswith("too different"):
            log.warning("%s: %s", st.name, match.reason)
        lut_path = None
        if match.applied:
            lut_path = work / f"{key_stem(key, src)}.cube"
            table = colour.bake_lut(match, strength=preset.colour.strength)
            colour.write_cube(lut_path, table, title=f"finishline match to {ref_name}")
        tuning = tune(preset, noise=st.noise, blockiness=st.blockiness, lut=lut_path is not None,
                      focus=saliency_focus(preset, medias[key], st))  # fmt: skip
        assessment = {
            "clip": st.name,
            "assessment": st.to_json(),
            "reference": ref_name,
            "reference_reason": why,
            "colour_match": match.to_json(),
            "strengths": {"deblock": tuning.deblock, "denoise": tuning.denoise_strength,
                          "from": "assessment" if preset.restore.auto else "preset"},  # fmt: skip
            "crop_focus": tuning.focus,
        }
        a_path = work / f"{key_stem(key, src)}.assessment.json"
        colour.save_json(a_path, assessment)
        plans[key] = ClipPlan(str(src), tuning, lut_path, a_path)
        summary["clips"][st.name] = {"applied": match.applied, "reason": match.reason}
    colour.save_json(work / "batch.json", summary)
    return plans


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
    return src.stem if key == str(src) else f"{key}-{src.stem}"


def plan_for_job(
    job_key: str, members: dict[str, Path], preset: Preset, work: Path
) -> ClipPlan | None:
    """The plan for one clip of a daemon batch (members keyed by job id), analysing the batch
    once (file-locked, cached while its membership stays the same)."""
    work.mkdir(parents=True, exist_ok=True)
    with (work / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key_path = work / "members.json"
        key = sorted(members)
        cached = json.loads(key_path.read_text()) if key_path.exists() else None
        if cached != key or not (work / "plans.json").exists():
            plans = plan_batch(members, preset, work)
            (work / "plans.json").write_text(json.dumps({
                s: {"lut": str(p.lut) if p.lut else None, "assessment": str(p.assessment),
                    "deblock": p.tuning.deblock, "denoise": p.tuning.denoise_strength,
                    "focus": p.tuning.focus}
                for s, p in plans.items()
            }, indent=2))  # fmt: skip
            key_path.write_text(json.dumps(key))
        data = json.loads((work / "plans.json").read_text())
    entry = data.get(job_key)
    if entry is None:  # this clip could not be assessed; its own run will say why
        return None
    lut = Path(entry["lut"]) if entry["lut"] else None
    tuning = Tuning(entry["deblock"], entry["denoise"], lut is not None, entry.get("focus"))
    return ClipPlan(str(members[job_key]), tuning, lut, Path(entry["assessment"]))
