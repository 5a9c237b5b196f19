"""Filter helpers that generated scripts import inside vspipe.

Rules (vs-rife's good parts): validate first and raise ``vs.Error`` with a clear message; take
precision from the clip; import heavy libraries inside the function; tuples for defaults;
never write to stdout (it carries the y4m stream).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import vapoursynth as vs

core = vs.core


class Fit(enum.Enum):
    PAD = "pad"
    CROP = "crop"
    STRETCH = "stretch"


class Kernel(enum.Enum):
    SPLINE36 = "Spline36"
    LANCZOS = "Lanczos"
    BICUBIC = "Bicubic"
    BILINEAR = "Bilinear"


def script_arg(scope: Mapping[str, object], name: str, default: str | None = None) -> str:
    """Read a ``vspipe --arg name=value`` argument, with a clear error when it is missing."""
    value = scope.get(name, default)
    if value is None:
        raise vs.Error(
            f"finishline: this script needs --arg {name}=...; run it as "
            f"`vspipe -c y4m --arg {name}=CLIP script.vpy -`"
        )
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    return str(value)


def load_source(
    path: str, *, fps: tuple[int, int], frames: int = 0, cache: str = ""
) -> vs.VideoNode:
    """Open ``path`` with BestSource as constant-rate video at ``fps`` (frames are repeated or
    dropped by timestamp, so VFR sources come out CFR), upright (the display rotation applied)
    and at 16 bits so later stages do not round twice. ``frames`` is the container's frame
    count: fewer decodable frames means a truncated file, which is an error, not a short clip."""
    if fps[0] <= 0 or fps[1] <= 0:
        raise vs.Error("load_source: fps must be positive")
    kwargs: dict[str, object] = {"fpsnum": fps[0], "fpsden": fps[1], "apply_rotation": 1}
    if cache:
        kwargs.update(cachemode=4, cachepath=cache)  # absolute path, always write
    else:
        kwargs.update(cachemode=0)
    try:
        clip = core.bs.VideoSource(path, **kwargs)
        if frames:
            native = core.bs.VideoSource(path, **{**kwargs, "fpsnum": -1, "fpsden": 1})
    except vs.Error as exc:
        raise vs.Error(f"load_source: cannot decode the clip ({exc})") from None
    if frames and native.num_frames < frames:
        raise vs.Error(
            f"load_source: cannot decode the clip (only {native.num_frames} of its {frames} "
            "frames could be decoded)"
        )
    if clip.format.sample_type == vs.INTEGER and clip.format.bits_per_sample < 16:
        clip = core.resize.Point(clip, format=clip.format.replace(bits_per_sample=16))
    return clip


def tag_colour(
    clip: vs.VideoNode, *, matrix: int, transfer: int, primaries: int, color_range: int
) -> vs.VideoNode:
    """Set the source's colour description (from the probe, with defaults for untagged clips)."""
    return core.std.SetFrameProps(
        clip, _Matrix=matrix, _Transfer=transfer, _Primaries=primaries, _ColorRange=color_range
    )


def deblock(clip: vs.VideoNode, *, strength: float = 0.5) -> vs.VideoNode:
    """H.264-style in-loop deblocking; ``strength`` 0..1 maps to quant 20..45."""
    if not 0.0 <= strength <= 1.0:
        raise vs.Error("deblock: strength must be between 0 and 1")
    if strength == 0:
        return clip
    quant = int(round(20 + 25 * strength))
    return core.deblock.Deblock(clip, quant=quant)


def denoise_dfttest(clip: vs.VideoNode, *, strength: float = 1.0) -> vs.VideoNode:
    """Frequency-domain denoise (DFTTest2, CPU or CUDA backend)."""
    if strength <= 0:
        return clip
    from dfttest2 import Backend, DFTTest

    backend = Backend.CPU() if hasattr(core, "dfttest2_cpu") else Backend.cuFFT()
    sigma = 1.5 * strength
    return DFTTest(clip, sigma=sigma, sigma2=sigma, tbsize=3, backend=backend)


def denoise_degrain(clip: vs.VideoNode, *, strength: float = 1.0) -> vs.VideoNode:
    """Motion-compensated temporal denoise (MVTools MDegrain2)."""
    if strength <= 0:
        return clip
    sup = core.mv.Super(clip, pel=2, sharp=2)
    bv2 = core.mv.Analyse(sup, isb=True, delta=2, blksize=16, overlap=8)
    bv1 = core.mv.Analyse(sup, isb=True, delta=1, blksize=16, overlap=8)
    fv1 = core.mv.Analyse(sup, isb=False, delta=1, blksize=16, overlap=8)
    fv2 = core.mv.Analyse(sup, isb=False, delta=2, blksize=16, overlap=8)
    thsad = int(200 * strength)
    return core.mv.Degrain2(clip, sup, bv1, fv1, bv2, fv2, thsad=thsad, thsadc=thsad)


def denoise_temporal(clip: vs.VideoNode, *, strength: float = 1.0) -> vs.VideoNode:
    """Cheap temporal smoothing (zsmooth TTempSmooth) for light grain."""
    if strength <= 0:
        return clip
    thresh = max(1, int(round(4 * strength * (1 << (clip.format.bits_per_sample - 8)))))
    return core.zsmooth.TTempSmooth(clip, maxr=2, thresh=thresh)


def fit_frame(
    clip: vs.VideoNode, *, width: int, height: int, fit: Fit = Fit.PAD,
    kernel: Kernel = Kernel.SPLINE36,
) -> vs.VideoNode:  # fmt: skip
    """Resize to ``width``x``height``: letterbox (PAD), fill and centre-crop (CROP) or STRETCH.
    Square pixels out; the source's sample aspect ratio is honoured."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise vs.Error("fit_frame: width and height must be positive and even")
    resize = getattr(core.resize, kernel.value)
    props = clip.get_frame(0).props
    sar = int(props.get("_SARNum", 1) or 1) / int(props.get("_SARDen", 1) or 1)
    src_w, src_h = clip.width * sar, clip.height
    if fit is Fit.STRETCH or (width, height) == (clip.width, clip.height) and sar == 1:
        if (width, height) == (clip.width, clip.height):
            return clip
        return resize(clip, width, height)
    if fit is Fit.PAD:
        scale = min(width / src_w, height / src_h)
        w = min(width, int(round(src_w * scale / 2)) * 2)
        h = min(height, int(round(src_h * scale / 2)) * 2)
        clip = resize(clip, w, h)
        left, top = (width - w) // 2 // 2 * 2, (height - h) // 2 // 2 * 2
        if (w, h) == (width, height):
            return clip
        return _pad_black(clip, left, width - w - left, top, height - h - top)
    # CROP: cover the frame, then take its centre.
    scale = max(width / src_w, height / src_h)
    crop_w, crop_h = width / scale / sar, height / scale
    return resize(
        clip, width, height,
        src_left=(clip.width - crop_w) / 2, src_top=(clip.height - crop_h) / 2,
        src_width=crop_w, src_height=crop_h,
    )  # fmt: skip


def _pad_black(clip: vs.VideoNode, left: int, right: int, top: int, bottom: int) -> vs.VideoNode:
    fmt = clip.format
    if fmt.color_family == vs.YUV:
        peak = (1 << fmt.bits_per_sample) - 1 if fmt.sample_type == vs.INTEGER else 1.0
        full = int(clip.get_frame(0).props.get("_ColorRange", 1)) == 0
        if fmt.sample_type == vs.FLOAT:
            color = [0.0, 0.0, 0.0]
        else:
            black = 0 if full else 16 << (fmt.bits_per_sample - 8)
            color = [black, (peak + 1) // 2, (peak + 1) // 2]
    else:
        color = [0] * fmt.num_planes
    return core.std.AddBorders(clip, left, right, top, bottom, color=color)


def to_output(
    clip: vs.VideoNode, fmt: vs.PresetVideoFormat, *, matrix: int, transfer: int,
    primaries: int, color_range: int,
) -> vs.VideoNode:  # fmt: skip
    """Convert to the delivery format and colour space and tag it."""
    clip = core.resize.Spline36(
        clip, format=fmt, matrix=matrix, transfer=transfer, primaries=primaries,
        range=color_range, dither_type="error_diffusion",
    )  # fmt: skip
    return core.std.SetFrameProps(
        clip, _Matrix=matrix, _Transfer=transfer, _Primaries=primaries, _ColorRange=color_range
    )


def check_output(clip: vs.VideoNode, *, width: int, height: int, fps: tuple[int, int]) -> None:
    """Fail loudly if the chain did not produce what the plan promised."""
    if (clip.width, clip.height) != (width, height):
        raise vs.Error(f"check_output: got {clip.width}x{clip.height}, planned {width}x{height}")
    if (clip.fps.numerator, clip.fps.denominator) != fps:
        raise vs.Error(f"check_output: got {clip.fps} fps, planned {fps[0]}/{fps[1]}")
