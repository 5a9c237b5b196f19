"""Filter helpers that generated scripts import inside vspipe.

Rules (vs-rife's good parts): validate first and raise ``vs.Error`` with a clear message; take
precision from the clip; import heavy libraries inside the function; tuples for defaults;
never write to stdout (it carries the y4m stream).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping

import vapoursynth as vs

core = vs.core


def _thread_budget() -> int:
    """The worker's thread budget (``FINISHLINE_THREADS``, set by its device slot), or 0."""
    value = os.environ.get("FINISHLINE_THREADS", "")
    return int(value) if value.isdigit() else 0


if _thread_budget():  # a worker's share of the cores: VapourSynth, torch and OpenVINO keep to it
    core.num_threads = _thread_budget()


class Fit(enum.Enum):
    PAD = "pad"  # letterbox / pillarbox in black
    CROP = "crop"  # cover the frame, crop at ``focus`` (centre by default)
    STRETCH = "stretch"
    BLUR = "blur"  # fit over a blurred, darkened fill of the same picture


class Backend(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    OPENVINO = "openvino"


class Precision(enum.Enum):
    AUTO = "auto"  # fp16 on CUDA; on the CPU bf16 for OpenVINO where the CPU has it, else fp32
    FP32 = "fp32"
    FP16 = "fp16"  # CUDA only
    BF16 = "bf16"  # OpenVINO on CPUs with AVX512-BF16/AMX (and CUDA); torch on the CPU stays fp32


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
    if _thread_budget():  # the decoder's threads too (its own default: every core)
        kwargs["threads"] = _thread_budget()
    if cache:
        if os.path.isdir(cache):  # a folder: the index files go inside it, not beside it
            cache = os.path.join(cache, "source")
        kwargs.update(cachemode=4, cachepath=os.path.abspath(cache))  # absolute, always write
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


def range_props(color_range: int) -> dict[str, int]:
    """Frame properties for a range given in the classic ``_ColorRange`` convention that the
    scripts use (0 = full, 1 = limited). R81 replaced that property with ``_Range`` whose
    values are the other way round (``vs.Range``: FULL = 1, LIMITED = 0)."""
    if hasattr(vs, "Range"):
        return {"_Range": int(vs.Range.RANGE_LIMITED if color_range == 1 else vs.Range.RANGE_FULL)}
    return {"_ColorRange": color_range}


def is_full_range(props: Mapping[str, object]) -> bool:
    if hasattr(vs, "Range") and "_Range" in props:
        return int(props["_Range"]) == int(vs.Range.RANGE_FULL)  # type: ignore[call-overload]
    return int(props.get("_ColorRange", 1)) == 0  # type: ignore[call-overload]


def range_name(color_range: int) -> str:
    """For resize's ``range_s``: its numeric ``range`` follows zimg (0 = limited, 1 = full),
    the opposite of ``_ColorRange``, so the scripts never pass the number."""
    return "limited" if color_range == 1 else "full"


def tag_colour(
    clip: vs.VideoNode, *, matrix: int, transfer: int, primaries: int, color_range: int
) -> vs.VideoNode:
    """Set the source's colour description (from the probe, with defaults for untagged clips).
    RGB sources (PNG/QuickTime Animation video, GIF) carry no YUV matrix: theirs is RGB (0),
    and they are full range."""
    if clip.format.color_family == vs.RGB:
        matrix, color_range = 0, 0
    return core.std.SetFrameProps(
        clip, _Matrix=matrix, _Transfer=transfer, _Primaries=primaries, **range_props(color_range)
    )


def tonemap_to_sdr(clip: vs.VideoNode, *, peak_nits: float = 1000.0) -> vs.VideoNode:
    """An HDR clip (PQ or HLG, BT.2020) as SDR BT.709 for the rest of the chain: to linear
    light in nits, BT.2020 -> BT.709 primaries, Reinhard on luminance with ``peak_nits`` mapped
    to white (colours keep their ratios), back to BT.709 gamma, YUV 4:4:4 16-bit limited."""
    props = clip.get_frame(0).props
    transfer = int(props.get("_Transfer", 16))  # type: ignore[call-overload]
    if transfer not in (16, 18):
        raise vs.Error("tonemap_to_sdr: the clip is not tagged PQ (16) or HLG (18)")
    # 1.0 = 100 nits in zimg's linear output for PQ (nominal_luminance)
    lin = core.resize.Bicubic(
        clip, format=vs.RGBS, transfer_in=transfer, transfer=8, primaries=1,
        matrix_in=int(props.get("_Matrix", 9)),  # type: ignore[call-overload]
        nominal_luminance=100,
    )  # fmt: skip
    white = peak_nits / 100.0
    r, g, b = (core.std.ShufflePlanes(lin, i, vs.GRAY) for i in range(3))
    lum = core.std.Expr([r, g, b], "x 0.2126 * y 0.7152 * + z 0.0722 * + 0 max")
    # v * Lout / L with Lout = L (1 + L / W^2) / (1 + L): Reinhard, extended to reach 1 at W
    curve = f"x y 1 y {white * white} / + * 1 y + / * y 1e-6 max / 0 max 1 min"
    planes = [core.std.Expr([plane, lum], curve) for plane in (r, g, b)]
    sdr = core.std.ShufflePlanes(planes, [0, 0, 0], vs.RGB)
    out = core.resize.Spline36(
        sdr, format=vs.YUV444P16, transfer_in=8, transfer=1, primaries_in=1, primaries=1,
        matrix=1, range_s="limited",
    )  # fmt: skip
    return core.std.SetFrameProps(out, _Matrix=1, _Transfer=1, _Primaries=1, **range_props(1))


def deblock(clip: vs.VideoNode, *, strength: float = 0.5) -> vs.VideoNode:
    """H.264-style in-loop deblocking; ``strength`` 0..1 maps to quant 20..45."""
    if not 0.0 <= strength <= 1.0:
        raise vs.Error("deblock: strength must be between 0 and 1")
    if strength == 0:
        return clip
    quant = round(20 + 25 * strength)
    return core.deblock.Deblock(clip, quant=quant)


def denoise_dfttest(clip: vs.VideoNode, *, strength: float = 1.0) -> vs.VideoNode:
    """Frequency-domain denoise (DFTTest2, CPU or CUDA backend)."""
    if strength <= 0:
        return clip
    from dfttest2 import Backend as DftBackend
    from dfttest2 import DFTTest

    backend = DftBackend.CPU() if hasattr(core, "dfttest2_cpu") else DftBackend.cuFFT()
    sigma = 1.5 * strength
    return DFTTest(clip, sigma=sigma, sigma2=sigma, tbsize=3, backend=backend)


def denoise_degrain(clip: vs.VideoNode, *, strength: float = 1.0) -> vs.VideoNode:
    """Motion-compensated temporal denoise (MVTools MDegrain2). RGB is denoised as YUV 4:4:4
    (MVTools takes only YUV and GRAY) and returned as it came."""
    if strength <= 0:
        return clip
    if clip.format.color_family == vs.RGB:
        yuv = core.resize.Point(clip, format=vs.YUV444P16, matrix_s="709")
        out = core.resize.Point(denoise_degrain(yuv, strength=strength), format=clip.format.id,
                                matrix_in_s="709")  # fmt: skip
        return core.std.CopyFrameProps(out, clip)
    sup = core.mv.Super(clip, pel=2, sharp=2)
    thsad = int(200 * strength)
    vectors = _degrain2_vectors(sup, blksize=16, overlap=8)
    return core.mv.Degrain2(clip, sup, *vectors, thsad=thsad, thsadc=thsad)


def _degrain2_vectors(sup: vs.VideoNode, *, blksize: int, overlap: int) -> list[vs.VideoNode]:
    """MVTools motion vectors of ``sup`` in the order Degrain2 takes them: backward and
    forward one frame away, then two."""
    return [
        core.mv.Analyse(sup, isb=isb, delta=delta, blksize=blksize, overlap=overlap)
        for delta in (1, 2)
        for isb in (True, False)
    ]


def denoise_temporal(clip: vs.VideoNode, *, strength: float = 1.0) -> vs.VideoNode:
    """Cheap temporal smoothing (zsmooth TTempSmooth) for light grain."""
    if strength <= 0:
        return clip
    thresh = max(1, min(256, round(4 * strength)))  # 8-bit scale at any depth
    return core.zsmooth.TTempSmooth(clip, maxr=2, thresh=thresh, scthresh=0)


def fit_frame(
    clip: vs.VideoNode,
    *,
    width: int,
    height: int,
    fit: Fit = Fit.PAD,
    kernel: Kernel = Kernel.SPLINE36,
    focus: float = 0.5,
) -> vs.VideoNode:
    """Resize to ``width``x``height``: letterbox (PAD), fill and crop (CROP), STRETCH, or fit
    over a blurred fill (BLUR). ``focus`` places the CROP window along the axis that is cut
    (0 = left/top, 0.5 = centre, 1 = right/bottom), e.g. from the clip's saliency.
    Square pixels out; the source's sample aspect ratio is honoured."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise vs.Error("fit_frame: width and height must be positive and even")
    if not 0.0 <= focus <= 1.0:
        raise vs.Error("fit_frame: focus must be within 0..1")
    resize = getattr(core.resize, kernel.value)
    props = clip.get_frame(0).props
    sar = int(props.get("_SARNum", 1) or 1) / int(props.get("_SARDen", 1) or 1)
    src_w, src_h = clip.width * sar, clip.height
    if fit is Fit.STRETCH or ((width, height) == (clip.width, clip.height) and sar == 1):
        if (width, height) == (clip.width, clip.height):
            return clip
        return resize(clip, width, height)
    if fit is Fit.BLUR:
        return _fit_over_blur(clip, width, height, kernel, sar)
    if fit is Fit.PAD:
        w, h, left, top = _fit_inside(src_w, src_h, width, height)
        clip = resize(clip, w, h)
        if (w, h) == (width, height):
            return clip
        return _pad_black(clip, left, width - w - left, top, height - h - top)
    # CROP: cover the frame, then take the window at ``focus``.
    scale = max(width / src_w, height / src_h)
    crop_w, crop_h = width / scale / sar, height / scale
    return resize(
        clip,
        width,
        height,
        src_left=(clip.width - crop_w) * focus,
        src_top=(clip.height - crop_h) * focus,
        src_width=crop_w,
        src_height=crop_h,
    )


def _fit_inside(src_w: float, src_h: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Size (even) of a ``src_w``x``src_h`` picture fitted inside ``width``x``height``, and
    the even left/top offsets that centre it."""
    scale = min(width / src_w, height / src_h)
    w = min(width, round(src_w * scale / 2) * 2)
    h = min(height, round(src_h * scale / 2) * 2)
    return w, h, (width - w) // 2 // 2 * 2, (height - h) // 2 // 2 * 2


def _fit_over_blur(
    clip: vs.VideoNode, width: int, height: int, kernel: Kernel, sar: float
) -> vs.VideoNode:
    """The whole picture fitted inside the frame, the bands around it filled with the same
    picture cropped to cover, blurred hard and darkened (the usual 16:9-in-9:16 look)."""
    resize = getattr(core.resize, kernel.value)
    w, h, left, top = _fit_inside(clip.width * sar, clip.height, width, height)
    if (w, h) == (width, height):
        return resize(clip, width, height)
    fg = resize(clip, w, h)
    # blur cheaply and strongly: cover-crop to a tiny frame, box-blur it, scale it back up
    small_w, small_h = max(4, width // 16 // 2 * 2), max(4, height // 16 // 2 * 2)
    bg = fit_frame(clip, width=small_w, height=small_h, fit=Fit.CROP, kernel=Kernel.BILINEAR)
    bg = core.std.BoxBlur(bg, hradius=2, hpasses=2, vradius=2, vpasses=2)
    bg = core.resize.Bicubic(bg, width, height)
    bg = _darken(bg, 0.6)
    if h < height:
        parts = [core.std.Crop(bg, bottom=height - top)] if top else []
        parts.append(fg)
        if height - top - h:
            parts.append(core.std.Crop(bg, top=top + h))
        return core.std.StackVertical(parts)
    parts = [core.std.Crop(bg, right=width - left)] if left else []
    parts.append(fg)
    if width - left - w:
        parts.append(core.std.Crop(bg, left=left + w))
    return core.std.StackHorizontal(parts)


def _darken(clip: vs.VideoNode, gain: float) -> vs.VideoNode:
    """Scale luma towards black by ``gain`` and chroma towards neutral (YUV, any range)."""
    fmt = clip.format
    if fmt.color_family != vs.YUV:
        return core.std.Expr(clip, f"x {gain} *")
    if fmt.sample_type == vs.FLOAT:
        return core.std.Expr(clip, [f"x {gain} *", f"x {gain} *"])
    black, mid = _black_and_neutral(clip)
    return core.std.Expr(clip, [f"x {black} - {gain} * {black} +", f"x {mid} - {gain} * {mid} +"])


def _black_and_neutral(clip: vs.VideoNode) -> tuple[int, int]:
    """Integer YUV: the black luma code (by the clip's range) and the neutral chroma code."""
    bits = clip.format.bits_per_sample
    black = 0 if is_full_range(clip.get_frame(0).props) else 16 << (bits - 8)
    return black, 1 << (bits - 1)


def _pad_black(clip: vs.VideoNode, left: int, right: int, top: int, bottom: int) -> vs.VideoNode:
    fmt = clip.format
    if fmt.color_family == vs.YUV:
        if fmt.sample_type == vs.FLOAT:
            color = [0.0, 0.0, 0.0]
        else:
            black, neutral = _black_and_neutral(clip)
            color = [black, neutral, neutral]
    else:
        color = [0] * fmt.num_planes
    return core.std.AddBorders(clip, left, right, top, bottom, color=color)


def to_output(
    clip: vs.VideoNode,
    fmt: vs.PresetVideoFormat,
    *,
    matrix: int,
    transfer: int,
    primaries: int,
    color_range: int,
) -> vs.VideoNode:
    """Convert to the delivery format and colour space and tag it."""
    clip = core.resize.Spline36(
        clip,
        format=fmt,
        matrix=matrix,
        transfer=transfer,
        primaries=primaries,
        range_s=range_name(color_range),
        dither_type="error_diffusion",
    )
    return core.std.SetFrameProps(
        clip, _Matrix=matrix, _Transfer=transfer, _Primaries=primaries, **range_props(color_range)
    )


def check_output(clip: vs.VideoNode, *, width: int, height: int, fps: tuple[int, int]) -> None:
    """Fail loudly if the chain did not produce what the plan promised."""
    if (clip.width, clip.height) != (width, height):
        raise vs.Error(f"check_output: got {clip.width}x{clip.height}, planned {width}x{height}")
    if (clip.fps.numerator, clip.fps.denominator) != fps:
        raise vs.Error(f"check_output: got {clip.fps} fps, planned {fps[0]}/{fps[1]}")


# -- AI stages ---------------------------------------------------------------------------------

_NET_CACHE: dict[tuple[str, str, str, str], object] = {}


def _device(backend: Backend, precision: Precision):  # type: ignore[no-untyped-def]
    import torch

    if backend is Backend.CUDA or (backend is Backend.AUTO and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise vs.Error("AI stage: backend 'cuda' was asked for but CUDA is not available")
        dtypes = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16}
        return torch.device("cuda"), dtypes.get(precision, torch.float16)
    if precision is Precision.FP16:
        raise vs.Error("AI stage: fp16 needs CUDA; use precision fp32 on the CPU")
    return torch.device("cpu"), torch.float32


def _network(kind: str, path: str, scale: int, backend: Backend, precision: Precision):  # type: ignore[no-untyped-def]
    """Load once per process; library chatter goes to stderr (stdout carries y4m)."""
    import contextlib
    import sys

    key = (kind, path, backend.value, precision.value)
    if key not in _NET_CACHE:
        with contextlib.redirect_stdout(sys.stderr):
            import torch

            from vs_scripts.runtime.nets import load_network

            device, dtype = _device(backend, precision)
            if device.type == "cpu":
                torch.set_num_threads(max(1, core.num_threads))
            net = load_network(kind, path, scale, device).to(dtype)
            _NET_CACHE[key] = (net, device, dtype)
    return _NET_CACHE[key]


def _to_tensor(frame: vs.VideoFrame, device, dtype):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    planes = [torch.from_numpy(np.asarray(frame[p]).copy()) for p in range(3)]
    return torch.stack(planes).unsqueeze(0).to(device=device, dtype=dtype)


def _to_frame(tensor, frame: vs.VideoFrame) -> vs.VideoFrame:  # type: ignore[no-untyped-def]
    import numpy as np

    data = tensor.squeeze(0).float().clamp(0, 1).cpu().numpy()
    for p in range(3):
        np.copyto(np.asarray(frame[p]), data[p])
    return frame


def to_rgb(clip: vs.VideoNode) -> vs.VideoNode:
    """Linear-light is not needed by the networks: gamma RGB, float, full range."""
    if clip.format.id == vs.RGBS:
        return clip
    return core.resize.Bicubic(clip, format=vs.RGBS, range_s="full")


def mark_scene_cuts(clip: vs.VideoNode, *, threshold: float = 0.12) -> vs.VideoNode:
    """Set ``_SceneChangeNext`` on frame n when n+1 starts a new shot: the luma difference of
    tiny (32x18) frames exceeds ``threshold`` (0..1) *and* is at least twice the differences
    just before and after it, so fast motion inside a shot is not taken for a cut.
    (VapourSynth R81 has no misc.SCDetect.)"""
    if not 0 < threshold < 1:
        raise vs.Error("mark_scene_cuts: threshold must be between 0 and 1")
    if clip.num_frames < 2:  # a one-frame clip has no cut
        return core.std.SetFrameProps(clip, _SceneChangeNext=0)
    # Small enough that motion within a shot barely changes it, big enough to see a new shot.
    small = core.resize.Bilinear(clip, 32, 18, format=vs.GRAYS, matrix_s="709")
    stats = core.std.PlaneStats(small, small[1:] + small[-1])
    before = stats[0] + stats[:-1]
    after = stats[1:] + stats[-1]

    def mark(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        diff = f[0].props["PlaneStatsDiff"]
        prev = f[1].props["PlaneStatsDiff"] if n > 0 else 0.0
        nxt = f[2].props["PlaneStatsDiff"] if n + 1 < clip.num_frames - 1 else 0.0
        out = f[0].copy()
        out.props["_SceneChangeNext"] = int(diff > threshold and diff >= 2 * max(prev, nxt))
        return out

    flags = core.std.ModifyFrame(stats, [stats, before, after], mark)
    return core.std.CopyFrameProps(clip, flags, props=["_SceneChangeNext"])


def interpolate_rife(
    clip: vs.VideoNode,
    *,
    fps: tuple[int, int],
    model: str,
    backend: Backend = Backend.AUTO,
    precision: Precision = Precision.AUTO,
    scene_threshold: float = 0.12,
) -> vs.VideoNode:
    """Retime to ``fps`` with RIFE 4.25 at arbitrary timesteps; equal rates pass through, lower
    rates decimate; never interpolates across a scene cut (shows the nearest real frame from
    the correct side instead). Input any format; output RGBS."""
    from fractions import Fraction
    from threading import Lock

    from vs_scripts.plan.cadence import at_cut, plan_retime

    if fps[0] <= 0 or fps[1] <= 0:
        raise vs.Error("interpolate_rife: fps must be positive")
    src_fps, out_fps = Fraction(clip.fps.numerator, clip.fps.denominator), Fraction(*fps)
    clip = mark_scene_cuts(to_rgb(clip), threshold=scene_threshold)
    steps = plan_retime(clip.num_frames, src_fps, out_fps)
    template = core.std.BlankClip(clip, length=len(steps), fpsnum=fps[0], fpsden=fps[1])
    if all(s.is_copy for s in steps) and len(steps) == clip.num_frames:
        return core.std.AssumeFPS(clip, fpsnum=fps[0], fpsden=fps[1])

    last = clip.num_frames - 1
    lefts = core.std.FrameEval(template, lambda n: clip[steps[n].left])
    rights = core.std.FrameEval(template, lambda n: clip[min(last, steps[n].left + 1)])
    lock = Lock()

    def infer(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        import torch

        net, device, dtype = _network("rife", model, 1, backend, precision)
        from vs_scripts.runtime.nets import rife_infer

        with lock, torch.inference_mode():
            out = rife_infer(
                net,
                _to_tensor(f[0], device, dtype),
                _to_tensor(f[1], device, dtype),
                float(steps[n].t),
            )
        return _to_frame(out, f[0].copy())

    blended = core.std.ModifyFrame(lefts, [lefts, rights], infer)

    def choose(n: int, f: vs.VideoFrame) -> vs.VideoNode:
        step = steps[n]
        if step.is_copy:
            return lefts
        if f.props.get("_SceneChangeNext", 0):
            return lefts if at_cut(step) == step.left else rights
        return blended

    out = core.std.FrameEval(template, choose, prop_src=lefts, clip_src=[lefts, rights, blended])
    return core.std.RemoveFrameProps(out, ["_SceneChangeNext", "PlaneStatsDiff"])


def upscale_esrgan(
    clip: vs.VideoNode,
    *,
    model: str,
    scale: int = 4,
    tile: int = 0,
    backend: Backend = Backend.AUTO,
    precision: Precision = Precision.AUTO,
    keep_tone: bool = True,
    detail: float = 1.0,
    tensorrt: bool = False,
    engine_cache: str = "",
) -> vs.VideoNode:
    """Real-ESRGAN x``scale``, in ``tile``-pixel tiles (0 = whole frame) with overlap so 4K/8K
    stays within memory. Input any format; output RGBS. The network is the one the weights at
    ``model`` describe: SRVGGNetCompact (animevideov3) or RRDBNet (RealESRGAN_x4plus, 20-45x
    the time a pixel); a result of another size than x``scale`` is resampled to it.

    ``keep_tone``: take only the network's detail and keep the source's tone and colour at low
    frequencies (below 1/8 of the frame size): the anime-trained model brightens photographic
    footage (measured on the bench: +0.9 L* on the mean colour, enough to undo a colour match).

    Backends: CUDA (torch, fp16 by default); OpenVINO through vs-mlrt on the CPU (the ONNX
    export beside the weights, f32 inference: about 3x faster than torch here); torch CPU."""
    if scale not in (2, 3, 4):
        raise vs.Error("upscale_esrgan: scale must be 2, 3 or 4")
    if tile and tile < 32:
        raise vs.Error("upscale_esrgan: tile must be 0 (off) or at least 32")
    if not 0.0 <= detail <= 1.0:
        raise vs.Error("upscale_esrgan: detail must be between 0 and 1")
    clip = to_rgb(clip)
    kind, net_scale = _esrgan_arch(model)
    onnx = model.rsplit(".", 1)[0] + ".onnx"
    use_ov = backend is Backend.OPENVINO or (
        backend is Backend.AUTO
        and not _cuda_available()
        and hasattr(core, "ov")
        and os.path.exists(onnx)
    )
    if use_ov:
        if not hasattr(core, "ov") or not os.path.exists(onnx):
            raise vs.Error(
                "upscale_esrgan: the OpenVINO backend needs vapoursynth-mlrt-ov and "
                f"{onnx} (run `finishline models install --force`)"
            )
        if precision is Precision.FP16:
            raise vs.Error("upscale_esrgan: fp16 needs CUDA; use fp32 or bf16 with OpenVINO")
        kwargs: dict[str, object] = {}
        if tile and (clip.width > tile or clip.height > tile):
            overlap = min(_TILE_PAD[kind], (tile - 1) // 2)  # vs-mlrt's tiles include it
            # a clip smaller than the tile on one side is cut along the other only
            kwargs.update(
                tilesize=[min(tile, clip.width), min(tile, clip.height)],
                overlap=[overlap if clip.width > tile else 0, overlap if clip.height > tile else 0],
            )
        # bf16 (measured here: 0.42 s vs 0.72 s a 640x360 frame, 54 dB PSNR against f32, max
        # error 0.034) where the CPU computes it natively; f32 otherwise (OpenVINO's own
        # default, bf16 on such CPUs, is what `auto` would pick anyway, stated here explicitly).
        # No CPU pinning: OpenVINO pinned a one-thread slot's inference to the first allowed
        # core in some processes, so two workers both ran on CPU 0 (each twice as slow)
        hint = (
            "bf16"
            if precision is Precision.BF16 or (precision is Precision.AUTO and cpu_has_bf16())
            else "f32"
        )
        up = core.ov.Model(
            [clip],
            onnx,
            device="CPU",
            fp16=False,
            config=lambda: (
                {"INFERENCE_PRECISION_HINT": hint, "ENABLE_CPU_PINNING": "NO"}
                | ({"INFERENCE_NUM_THREADS": _thread_budget()} if _thread_budget() else {})
            ),
            **kwargs,
        )
        up = core.std.CopyFrameProps(core.std.Expr(up, "x 0 max 1 min"), clip)  # as torch clamps
    elif tensorrt:
        pad = _TILE_PAD[kind] if kind == "rrdb" else 8  # vsrealesrgan's default for SRVGG
        up = _upscale_tensorrt(clip, model, tile, precision, engine_cache, pad)
    else:
        up = _upscale_torch(clip, model, net_scale, tile, backend, precision, kind)
    if scale != net_scale:
        up = core.resize.Bicubic(
            up, clip.width * scale, clip.height * scale, filter_param_a=0, filter_param_b=0.5
        )
    if keep_tone:
        up = _transfer_low_frequencies(up, clip)
    if detail < 1.0:  # fidelity <-> detail: blend towards a plain resize of the source
        base = core.resize.Spline36(clip, up.width, up.height, format=up.format.id)
        up = base if detail <= 0 else core.std.Merge(base, up, weight=detail)
    return up


def stabilise(clip: vs.VideoNode, *, strength: float = 1.0) -> vs.VideoNode:
    """Make the picture's fine detail coherent over time: luma averaged along motion over
    +-2 frames (MVTools MDegrain2, motion found on a lightly blurred copy), so
    texture that follows the picture stays while what changes from frame to frame without
    moving (compression shimmer, detail a network invented differently in each frame, the
    softer look of interpolated frames next to real ones) averages out. ``strength`` scales
    the SAD threshold above which a neighbour's block is not trusted (800 at 1: occlusions
    and cuts keep their own frame). Chroma is not filtered. Input any format, output RGBS.

    Measured on the shared bench after the upscaler and RIFE (720p24): flicker 4.08 -> 3.94,
    PSNR-Y +0.08 dB, VMAF +0.15; the same filter on the network's detail layer alone gained
    only 0.01 (the shimmer is mostly the source's compression, not the network)."""
    if strength <= 0:
        return clip
    clip = to_rgb(clip)
    yuv = core.resize.Point(clip, format=vs.YUV444PS, matrix=1)
    luma = core.std.Expr(core.std.ShufflePlanes(yuv, 0, vs.GRAY), "x 65535 *", format=vs.GRAY16)
    guide = core.std.BoxBlur(luma, hradius=1, vradius=1)  # motion from the picture, not its noise
    blk = 16 if clip.width * clip.height > 640 * 360 else 8
    # whole-pixel motion, blocks overlapping by a quarter: 51 ms of one core a 720p frame
    # against 185 ms with half-pixel motion and half overlap, for the same score (bench: PSNR-Y
    # -0.01 dB, flicker +0.01, VMAF -0.27)
    sup_guide = core.mv.Super(guide, pel=1)
    sup = core.mv.Super(luma, pel=1, levels=1)
    vectors = _degrain2_vectors(sup_guide, blksize=blk, overlap=blk // 4)
    luma = core.mv.Degrain2(luma, sup, *vectors, thsad=int(800 * strength))
    luma = core.std.Expr(luma, "x 65535 /", format=vs.GRAYS)
    out = core.std.ShufflePlanes([luma, yuv], [0, 1, 2], vs.YUV)
    out = core.resize.Point(out, format=vs.RGBS, matrix_in=1)
    return core.std.CopyFrameProps(out, clip)


_ARCH_CACHE: dict[str, tuple[str, int]] = {}
# Context each tile sees beyond its edges. RRDBNet's reach is far wider than SRVGG's: tiles of
# 64 against the whole frame (RealESRGAN_x4plus, a smooth 192x96 texture) differ by up to 0.70
# with 16 pixels, 0.36 with 32, 0.11 with 48 and 0.012 with 64 (animevideov3: 0.002 with 16).
_TILE_PAD = {"srvgg": 16, "rrdb": 64}


def _esrgan_arch(model: str) -> tuple[str, int]:
    """("srvgg" or "rrdb", network scale) of the weights at ``model``, read once a process."""
    import contextlib
    import sys

    if model not in _ARCH_CACHE:
        with contextlib.redirect_stdout(sys.stderr):
            from vs_scripts.runtime.nets import esrgan_arch

            try:
                _ARCH_CACHE[model] = esrgan_arch(model)
            except (OSError, RuntimeError, KeyError, AttributeError) as exc:
                raise vs.Error(f"upscale_esrgan: cannot read the weights {model}: {exc}") from None
    return _ARCH_CACHE[model]


def _transfer_low_frequencies(
    detail: vs.VideoNode, tone: vs.VideoNode, factor: int = 8
) -> vs.VideoNode:
    """``detail`` with its low frequencies replaced by those of ``tone`` (RGBS, any sizes):
    detail - blur(detail) + blur(tone), the blur being a resize to 1/``factor`` and back."""
    w, h = detail.width, detail.height
    sw, sh = max(4, w // factor), max(4, h // factor)

    def blur(c: vs.VideoNode) -> vs.VideoNode:
        return core.resize.Bicubic(core.resize.Bilinear(c, sw, sh), w, h)

    out = core.std.Expr([detail, blur(detail), blur(tone)], "x y - z + 0 max 1 min")
    return core.std.CopyFrameProps(out, detail)


def _upscale_tensorrt(
    clip: vs.VideoNode,
    model: str,
    tile: int,
    precision: Precision,
    engine_cache: str,
    tile_pad: int = 8,
) -> vs.VideoNode:
    """On NVIDIA with TensorRT: HolyWu's vsrealesrgan builds an engine for the clip's shape
    once (cached in ``engine_cache``) and runs it, fp16 unless fp32 is asked for."""
    import contextlib
    import sys

    if not _cuda_available():
        raise vs.Error("upscale_esrgan: tensorrt needs an NVIDIA GPU with CUDA")
    with contextlib.redirect_stdout(sys.stderr):
        from vsrealesrgan import realesrgan

        half = precision is not Precision.FP32
        rgb = core.resize.Point(clip, format=vs.RGBH) if half else clip
        if engine_cache:
            os.makedirs(engine_cache, exist_ok=True)
        up = realesrgan(
            rgb,
            model_path=model,
            tile=[tile, tile] if tile else [0, 0],
            tile_pad=tile_pad,
            trt=True,
            **({"trt_cache_dir": engine_cache} if engine_cache else {}),
        )
    return core.resize.Point(up, format=vs.RGBS) if half else up


def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic (AVX512-BF16 or AMX), from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _upscale_torch(
    clip: vs.VideoNode,
    model: str,
    net_scale: int,
    tile: int,
    backend: Backend,
    precision: Precision,
    kind: str = "srvgg",
) -> vs.VideoNode:
    from threading import Lock

    big = core.std.BlankClip(
        clip, width=clip.width * net_scale, height=clip.height * net_scale, keep=True
    )
    lock = Lock()

    def write(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        import torch

        net, device, dtype = _network(kind, model, net_scale, backend, precision)
        with lock, torch.inference_mode():
            out = _tiled(net, _to_tensor(f[1], device, dtype), net_scale, tile, _TILE_PAD[kind])
        return _to_frame(out, f[0].copy())

    return core.std.CopyFrameProps(core.std.ModifyFrame(big, [big, clip], write), clip)


def _tiled(net, x, scale: int, tile: int, pad: int = 16):  # type: ignore[no-untyped-def]
    import torch

    _, c, h, w = x.shape
    if not tile or (h <= tile and w <= tile):
        return net(x)
    out = torch.zeros((1, c, h * scale, w * scale), dtype=x.dtype, device=x.device)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            py0, px0, py1, px1 = (
                max(0, y0 - pad),
                max(0, x0 - pad),
                min(h, y1 + pad),
                min(w, x1 + pad),
            )
            res = net(x[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = res[
                :, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    return out


# -- colour ------------------------------------------------------------------------------------


def apply_lut(clip: vs.VideoNode, *, lut: str) -> vs.VideoNode:
    """Apply a 3D LUT (.cube, RGB in/out) with timecube; the clip becomes RGBS."""
    if not lut:
        return clip
    return core.timecube.Cube(to_rgb(clip), cube=lut)


def stabilise_exposure(
    clip: vs.VideoNode,
    *,
    radius: int = 4,
    max_gain: float = 0.05,
    scene_threshold: float = 0.12,
) -> vs.VideoNode:
    """Remove frame-to-frame exposure flicker: scale each frame's brightness towards the mean
    of its neighbours (±``radius`` frames, never across a scene cut), by at most ``max_gain``.
    Slow real changes (a fade, the sun going in) survive; one-frame pumping does not."""
    if radius < 1 or not 0 < max_gain < 0.5:
        raise vs.Error("stabilise_exposure: radius >= 1 and 0 < max_gain < 0.5")
    clip = to_rgb(clip)
    small = core.resize.Bilinear(clip, 64, 36, format=vs.GRAYS, matrix_s="709")
    small = mark_scene_cuts(small, threshold=scene_threshold)
    stats = core.std.PlaneStats(small)
    total_frames = clip.num_frames
    shifted = []
    for k in range(-radius, radius + 1):
        if k < 0:
            shifted.append(
                stats[0] * (-k) + stats[: total_frames + k] if total_frames + k > 0 else stats
            )
        elif k > 0:
            shifted.append(stats[k:] + stats[-1] * k if total_frames - k > 0 else stats)
        else:
            shifted.append(stats)

    def gain_of(i: int, f: list[vs.VideoFrame]) -> float:
        mean = float(f[radius].props["PlaneStatsAverage"])
        total, count = mean, 1
        for step in (-1, 1):  # walk out from the centre, stop at a cut or the clip's ends
            for d in range(1, radius + 1):
                j = radius + step * d
                idx = i + step * d
                if idx < 0 or idx >= total_frames:
                    break
                crossing = f[j - 1] if step > 0 else f[j]  # the frame before the boundary
                if crossing.props.get("_SceneChangeNext", 0):
                    break
                total += float(f[j].props["PlaneStatsAverage"])
                count += 1
        target = total / count
        return 1.0 if mean <= 1e-4 else min(1 + max_gain, max(1 - max_gain, target / mean))

    # the frame's gain is applied by an Expr made for it (no numpy: importing it costs every
    # vspipe, i.e. every chunk, 0.13 s of CPU); nothing shared between the calls, which run
    # on several threads at once
    def apply(n: int, f: list[vs.VideoFrame]) -> vs.VideoNode:
        g = gain_of(n, f)
        return clip if abs(g - 1.0) <= 1e-4 else core.std.Expr(clip, f"x {g!r} *")

    return core.std.FrameEval(clip, apply, prop_src=shifted, clip_src=[clip])
