"""Preset + media facts -> a readable, deterministic VapourSynth script.

Pure: no I/O. The rendered script contains only numbers and identifiers chosen from fixed
tables here; the clip path and cache folder reach it through ``vspipe --arg``, never as
Python literals, so no file name or preset text can become code.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from vs_scripts import __version__
from vs_scripts.plan.cadence import output_count
from vs_scripts.plan.errors import ScriptError
from vs_scripts.plan.media import MediaInfo
from vs_scripts.plan.preset import Preset, natural_fps

# VapourSynth / ITU-T H.273 codes.
MATRIX_CODES = {"bt709": 1, "bt601": 6, "bt470bg": 5, "smpte170m": 6, "bt2020nc": 9, "fcc": 4}
TRANSFER_CODES = {
    "bt709": 1,
    "bt601": 6,
    "smpte170m": 6,
    "bt470bg": 5,
    "bt470m": 4,
    "srgb": 13,
    "iec61966-2-1": 13,
    "bt2020-10": 14,
    "bt2020_10": 14,
    "bt2020-12": 15,
    "smpte2084": 16,  # PQ (HDR10)
    "arib-std-b67": 18,  # HLG
}
#: transfers that carry high dynamic range: an SDR preset refuses or tone-maps them
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
PRIMARIES_CODES = {
    "bt709": 1,
    "bt601-625": 5,
    "bt470bg": 5,
    "bt601-525": 6,
    "smpte170m": 6,
    "bt2020": 9,
    "bt470m": 4,
}
# Names x265 and ffmpeg accept for the same codes.
MATRIX_NAMES = {1: "bt709", 5: "bt470bg", 6: "smpte170m", 9: "bt2020nc"}
TRANSFER_NAMES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
}
PRIMARIES_NAMES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 9: "bt2020"}
RANGE_CODES = {"full": 0, "pc": 0, "limited": 1, "tv": 1}  # VapourSynth _ColorRange

# Output pixel formats as vapoursynth.PresetVideoFormat member names.
VS_FORMATS = {
    "yuv420p": "YUV420P8",
    "yuv420p10": "YUV420P10",
    "yuv422p10": "YUV422P10",
    "yuv444p10": "YUV444P10",
}
FIT_NAMES = {"pad": "PAD", "crop": "CROP", "stretch": "STRETCH", "blur": "BLUR", "saliency": "CROP"}
KERNEL_NAMES = {
    "spline36": "SPLINE36",
    "lanczos": "LANCZOS",
    "bicubic": "BICUBIC",
    "bilinear": "BILINEAR",
}
BACKEND_NAMES = {"auto": "AUTO", "cpu": "CPU", "cuda": "CUDA", "openvino": "OPENVINO"}
PRECISION_NAMES = {"auto": "AUTO", "fp32": "FP32", "fp16": "FP16", "bf16": "BF16"}
DENOISE_FUNCS = {
    "dfttest": "denoise_dfttest",
    "degrain": "denoise_degrain",
    "temporal": "denoise_temporal",
}


@dataclass(frozen=True, slots=True)
class Colour:
    matrix: int
    transfer: int
    primaries: int
    range: int  # VapourSynth convention: 0 full, 1 limited

    @property
    def names(self) -> dict[str, str]:
        return {
            "matrix": MATRIX_NAMES.get(self.matrix, "bt709"),
            "transfer": TRANSFER_NAMES.get(self.transfer, "bt709"),
            "primaries": PRIMARIES_NAMES.get(self.primaries, "bt709"),
            "range": "pc" if self.range == 0 else "tv",
        }


@dataclass(frozen=True, slots=True)
class ScriptPlan:
    """Everything the script and the encoder need, resolved from preset + media."""

    width: int
    height: int
    fps: Fraction
    frame_count: int
    """Frames the script will output (the source's duration at the output rate)."""
    source_colour: Colour
    source_colour_assumed: bool
    output_colour: Colour
    vs_format: str
    bit_depth: int
    source_fps: Fraction
    """The constant rate the source is read at (the target rate unless RIFE retimes)."""
    interpolate: bool
    upscale: bool
    notes: tuple[str, ...] = ()


def source_colour(media: MediaInfo) -> tuple[Colour, bool]:
    """The source's colour description. An untagged matrix follows the decoders' convention
    (BT.709 from 720 lines / 1280 columns up, BT.601 below), because that is how the YUV was
    made. Untagged primaries and transfer are taken as BT.709: AI generators and web video
    are made in sRGB/BT.709 whatever their size, and guessing SMPTE-C for small clips made
    the output gamut conversion shift every colour (measured: +29 mean red on colour bars)."""
    hd = media.height >= 720 or media.width >= 1280
    assumed = media.matrix is None
    matrix = MATRIX_CODES.get(media.matrix or "", 1 if hd else 6)
    transfer = TRANSFER_CODES.get(media.transfer or "", 1)
    primaries = PRIMARIES_CODES.get(media.primaries or "", 1)
    rng = RANGE_CODES.get(media.color_range or "", 1)
    if media.pixel_format.startswith("yuvj"):
        rng = 0
    return Colour(matrix, transfer, primaries, rng), assumed


def display_size(media: MediaInfo) -> tuple[int, int]:
    """The source's width and height as shown, after its rotation."""
    if media.rotation in (90, 270):
        return media.height, media.width
    return media.width, media.height


def output_size(preset: Preset, media: MediaInfo) -> tuple[int, int]:
    w, h = preset.frame.width, preset.frame.height
    if w and h:
        return w, h
    sw, sh = display_size(media)
    return sw - sw % 2, sh - sh % 2


def output_fps(preset: Preset, media: MediaInfo) -> Fraction:
    fps = preset.motion.fps
    if fps == "natural":
        return natural_fps(media.fps)
    assert isinstance(fps, Fraction)
    return fps or media.fps


def expected_frames(media: MediaInfo, fps: Fraction) -> int:
    """Frames of a CFR clip at ``fps`` covering the source (what bestsource's CFR mode gives)."""
    if fps == media.fps and not media.vfr:
        return media.frame_count
    return max(1, round(media.duration * fps))


def output_colour(preset: Preset) -> Colour:
    v = preset.video
    return Colour(
        MATRIX_CODES[v.matrix],
        TRANSFER_CODES[v.transfer],
        PRIMARIES_CODES[v.primaries],
        RANGE_CODES[v.range],
    )


def plan_script(preset: Preset, media: MediaInfo) -> ScriptPlan:
    src_colour, assumed = source_colour(media)
    v = preset.video
    out_colour = output_colour(preset)
    width, height = output_size(preset, media)
    fps = output_fps(preset, media)
    interpolate = preset.motion.method == "rife" and fps != media.fps
    read_fps = media.fps if interpolate else fps
    frames = expected_frames(media, read_fps)
    if interpolate:
        frames = output_count(frames, read_fps, fps)
    notes: list[str] = []
    if assumed:
        notes.append(
            f"source has no colour tags; assumed {MATRIX_NAMES.get(src_colour.matrix)} "
            f"for a {media.width}x{media.height} clip"
        )
    if media.vfr:
        notes.append(f"source is variable frame rate; converted to constant {_fps_text(fps)} fps")
    hdr = HDR_TRANSFERS.get(src_colour.transfer)
    if hdr:
        if preset.colour.hdr != "tonemap":
            raise ScriptError(
                f"{media.path.rsplit('/', 1)[-1]} is HDR ({hdr}) and preset {preset.name} "
                'delivers SDR BT.709; set [colour] hdr = "tonemap" in the preset to tone-map '
                "it, or use an HDR master workflow."
            )
        notes.append(f"source is HDR ({hdr}); tone-mapped to SDR BT.709 (1000-nit peak assumed)")
    vs_format = VS_FORMATS[v.pixel_format]
    return ScriptPlan(
        width=width,
        height=height,
        fps=fps,
        frame_count=frames,
        source_colour=src_colour,
        source_colour_assumed=assumed,
        output_colour=out_colour,
        vs_format=vs_format,
        bit_depth=10 if v.pixel_format.endswith("10") else 8,
        source_fps=read_fps,
        interpolate=interpolate,
        upscale=preset.upscale.model != "off",
        notes=tuple(notes),
    )


def _fps_text(fps: Fraction) -> str:
    return str(fps.numerator) if fps.denominator == 1 else f"{fps.numerator}/{fps.denominator}"


def _safe_name(name: str) -> str:
    """Preset names come from file names; keep only characters that cannot end a comment."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:64]


def _num(value: float) -> str:
    """A float literal that round-trips and reads well (1.0, 0.25)."""
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class Tuning:
    """Per-clip settings from the batch assessment (``None``: use the preset's value)."""

    deblock: float | None = None
    denoise_strength: float | None = None
    lut: bool = False
    focus: float | None = None  # where a saliency crop sits (0..1 along the cut axis)
    denoiser: str | None = None  # which denoiser (DENOISE_FUNCS key), when the preset says auto


def crop_axis(preset: Preset, media: MediaInfo) -> tuple[str, float] | None:
    """Which axis a cover-crop cuts and the share of it that stays: ``("x", 0.316)`` for
    16:9 into 9:16; ``None`` when nothing is cut."""
    width, height = output_size(preset, media)
    sw, sh = display_size(media)
    src_aspect, out_aspect = sw / sh, width / height
    if abs(src_aspect - out_aspect) < 1e-3:
        return None
    if src_aspect > out_aspect:
        return "x", out_aspect / src_aspect
    return "y", src_aspect / out_aspect


def crop_focus(profile: list[float], window: float, *, prefer_centre: float = 0.05) -> float:
    """Where to place a crop window covering ``window`` (0..1) of an axis whose saliency per
    bin is ``profile``: the position (0 = start, 1 = end) of the window holding the most
    saliency. The centre wins unless another place holds ``prefer_centre`` more of it, so a
    flat profile gives a steady centre crop."""
    n = len(profile)
    k = max(1, min(n, round(window * n)))
    if n == 0 or k >= n:
        return 0.5
    total = sum(profile) or 1.0
    sums = [sum(profile[i : i + k]) / total for i in range(n - k + 1)]
    centre = (n - k) / 2
    lo, hi = int(centre), min(n - k, int(centre + 0.5))
    centre_sum = (sums[lo] + sums[hi]) / 2
    best = max(range(n - k + 1), key=lambda i: (sums[i], -abs(i - centre)))
    if sums[best] - centre_sum <= prefer_centre:
        return 0.5
    return round(best / (n - k), 3)


#: the denoiser ``denoise = "auto"`` uses when no assessment says otherwise: motion-compensated
#: MDegrain beat DFTTest at every strength on every clip of the shared bench (see choose_denoiser)
DEFAULT_DENOISER = "degrain"
#: motion fit (residual with motion compensation / without) above which following the motion
#: does not explain the picture (water, fire, confetti, noise): a temporal average would ghost
MOTION_FIT_LIMIT = 0.7
#: ... unless the picture hardly changes at all (mean |frame - its neighbours' average| below
#: this, in 8-bit code values): a still shot's fit is ~1 because nothing moves, and averaging
#: it over time is exactly right
STILL_LIMIT = 2.5
#: degrain strength per 8-bit code value of temporal noise; on the shared bench (temporal noise
#: 0.97-1.41) it gives 2.7-3.95, where the best fixed strengths measured 2-4 per clip
DEGRAIN_PER_NOISE = 2.8


def choose_denoiser(motion_fit: float, temporal_noise: float = 0.0) -> str:
    """``degrain`` where motion compensation explains the picture or the picture is nearly
    still, else ``dfttest`` (spatial, with a 3-frame window: no motion search to go wrong)."""
    still = temporal_noise / motion_fit if motion_fit > 0 else 0.0  # the residual without MC
    if motion_fit < MOTION_FIT_LIMIT or still < STILL_LIMIT:
        return DEFAULT_DENOISER
    return "dfttest"


def tune(
    preset: Preset,
    *,
    noise: float,
    blockiness: float,
    lut: bool,
    focus: float | None = None,
    temporal_noise: float = 0.0,
    motion_fit: float = 1.0,
) -> Tuning:
    """Strengths from measurements: a clean clip is not denoised hard, a blocky one gets more
    deblocking. ``noise`` is the luma sigma in 8-bit code values, ``blockiness`` the 8x8 grid
    edge ratio (1 = none), ``temporal_noise`` and ``motion_fit`` as the assessment measures
    them (``daemon.analysis.grading.temporal_noise``). With ``denoise = "auto"`` the
    denoiser is chosen too (:func:`choose_denoiser`)."""
    auto = preset.restore.denoise == "auto"
    denoiser = choose_denoiser(motion_fit, temporal_noise) if auto else None
    if not preset.restore.auto:
        return Tuning(lut=lut, focus=focus, denoiser=denoiser)
    if (denoiser or preset.restore.denoise) == "degrain":  # a temporal denoiser: temporal noise
        denoise = round(min(4.0, max(0.0, DEGRAIN_PER_NOISE * temporal_noise)), 2)
    else:
        denoise = round(min(3.0, max(0.0, (noise - 0.6) / 1.5)), 2)
    deblock = round(min(1.0, max(0.0, (blockiness - 1.05) / 0.5)), 2)
    return Tuning(
        deblock=deblock, denoise_strength=denoise, lut=lut, focus=focus, denoiser=denoiser
    )


def model_args(preset: Preset, plan: ScriptPlan) -> dict[str, str]:
    """vspipe argument name -> model name for the networks the script will load."""
    out = {}
    if plan.interpolate:
        out["rife_model"] = preset.motion.model
    if plan.upscale:
        out["upscale_model"] = preset.upscale.model
    return out


def _ai_lines(preset: Preset, plan: ScriptPlan) -> list[str]:
    ai = (
        f"backend=fl.Backend.{BACKEND_NAMES[preset.ai.backend]}, "
        f"precision=fl.Precision.{PRECISION_NAMES[preset.ai.precision]}"
    )
    rife = (
        f"clip = fl.interpolate_rife(clip, fps=({plan.fps.numerator}, {plan.fps.denominator}), "
        f"model=rife_model, scene_threshold={_num(preset.motion.scene_threshold)}, {ai})"
    )
    upscale = (
        f"clip = fl.upscale_esrgan(clip, model=upscale_model, scale={int(preset.upscale.scale)}, "
        f"tile={int(preset.upscale.tile)}, keep_tone={bool(preset.upscale.keep_tone)}, "
        + (f"detail={_num(preset.upscale.detail)}, " if preset.upscale.detail < 1 else "")
        + f"{ai}"
        + (", tensorrt=True, engine_cache=engine_cache)" if preset.ai.tensorrt else ")")
    )
    stages = []
    if plan.interpolate:
        stages.append(rife)
    if plan.upscale:
        stages.insert(0 if preset.ai.order == "upscale-first" else len(stages), upscale)
    return stages


def _stabilise_line(preset: Preset) -> str:
    return (
        f"clip = fl.stabilise(clip, strength={_num(preset.upscale.stabilise)})"
        "  # detail coherent over time"
    )


def stabilise_after_fit(preset: Preset, media: MediaInfo, plan: ScriptPlan) -> bool:
    """Whether the stabiliser runs on the delivered frame (after the fit) rather than on the
    upscaled one: wherever it has fewer pixels (an x4 upscale of 720p is 5120x2880, its 4K
    delivery a third of that)."""
    sw, sh = display_size(media)
    scale = preset.upscale.scale
    return plan.width * plan.height < sw * scale * sh * scale


def render_script(preset: Preset, media: MediaInfo, tuning: Tuning | None = None) -> str:
    """Render the ``.vpy`` text. Deterministic: the same inputs give the same bytes."""
    plan = plan_script(preset, media)
    r, f = preset.restore, preset.frame
    tuning = tuning or Tuning()
    deblock = r.deblock if tuning.deblock is None else tuning.deblock
    denoise_strength = (
        r.denoise_strength if tuning.denoise_strength is None else tuning.denoise_strength
    )
    sc, oc = plan.source_colour, plan.output_colour
    lines = [
        f"# finishline {__version__}: preset {_safe_name(preset.name)}",
        "# Generated from the preset and the clip's probe; edit the preset, not this file.",
        "# Run it: vspipe -c y4m --arg src=CLIP --arg cache=DIR THIS.vpy - | ffmpeg -i - ...",
        "# (src and cache arrive as vspipe arguments, never pasted into this file.)",
        "import vapoursynth as vs",
        "",
        "from vs_scripts.runtime import filters as fl",
        "",
        "src = fl.script_arg(globals(), 'src')",
        "cache = fl.script_arg(globals(), 'cache', default='')",
        *(
            ["engine_cache = fl.script_arg(globals(), 'engine_cache', default='')"]
            if preset.ai.tensorrt and plan.upscale
            else []
        ),
        *(["lut = fl.script_arg(globals(), 'lut')"] if tuning.lut else []),
        *(f"{arg} = fl.script_arg(globals(), '{arg}')" for arg in model_args(preset, plan)),
        "",
        f"# Source: {media.width}x{media.height}, {_fps_text(media.fps)} fps"
        f"{' (VFR)' if media.vfr else ''}, {media.frame_count} frames.",
        *(f"# Note: {n}." for n in plan.notes),
        f"clip = fl.load_source(src, fps=({plan.source_fps.numerator}, "
        f"{plan.source_fps.denominator}), "
        f"frames={int(media.frame_count)}, cache=cache)",
        f"clip = fl.tag_colour(clip, matrix={sc.matrix}, transfer={sc.transfer}, "
        f"primaries={sc.primaries}, color_range={sc.range})",
        *(
            ["clip = fl.tonemap_to_sdr(clip)  # HDR source, SDR delivery ([colour] hdr)"]
            if sc.transfer in HDR_TRANSFERS
            else []
        ),
    ]
    if tuning.deblock is not None or tuning.denoise_strength is not None:
        lines.append("# Strengths below come from this clip's assessment ([restore] auto = true).")
    if deblock > 0:
        lines.append(f"clip = fl.deblock(clip, strength={_num(deblock)})")
    denoiser = r.denoise
    if denoiser == "auto":  # the assessment's choice (a stale plan never overrides a pinned one)
        denoiser = tuning.denoiser or DEFAULT_DENOISER
    if denoiser != "off" and denoise_strength > 0:
        if r.denoise == "auto" and tuning.denoiser:
            lines.append(f"# Denoiser {denoiser}: chosen by this clip's assessment.")
        lines.append(
            f"clip = fl.{DENOISE_FUNCS[denoiser]}(clip, strength={_num(denoise_strength)})"
        )
    if preset.colour.stabilise:
        lines.append(
            "clip = fl.stabilise_exposure(clip, scene_threshold="
            f"{_num(preset.motion.scene_threshold)})"
        )
    if tuning.lut:
        lines.append("clip = fl.apply_lut(clip, lut=lut)  # the batch colour match (.cube)")
    lines += _ai_lines(preset, plan)
    stabilise = plan.upscale and preset.upscale.stabilise > 0
    late = stabilise and stabilise_after_fit(preset, media, plan)
    if stabilise and not late:
        lines.append(_stabilise_line(preset))
    focus = ""
    if f.fit == "saliency":
        where = 0.5 if tuning.focus is None else min(1.0, max(0.0, float(tuning.focus)))
        lines.append(
            "# Saliency crop: the window sits where this clip's assessment found the subject."
            if tuning.focus is not None
            else "# Saliency crop: no assessment, so the centre."
        )
        focus = f", focus={_num(where)}"
    lines += [
        f"clip = fl.fit_frame(clip, width={plan.width}, height={plan.height}, "
        f"fit=fl.Fit.{FIT_NAMES[f.fit]}, kernel=fl.Kernel.{KERNEL_NAMES[f.scaler]}{focus})",
        *([_stabilise_line(preset)] if late else []),
        f"clip = fl.to_output(clip, vs.{plan.vs_format}, matrix={oc.matrix}, "
        f"transfer={oc.transfer}, primaries={oc.primaries}, color_range={oc.range})",
        f"fl.check_output(clip, width={plan.width}, height={plan.height}, "
        f"fps=({plan.fps.numerator}, {plan.fps.denominator}))",
        "clip.set_output()",
        "",
    ]
    return "\n".join(lines)
