"""Assessment and colour matching across a batch.

* :func:`analyse_clip` samples frames of a clip (up to its first scene cut) at a small size and
  measures noise, blockiness, sharpness, exposure flicker, duplicated frames and its colour
  distribution in CIELAB.
* :func:`choose_reference` takes the user's reference (a ``ref`` marker in the file name) or the
  clip that needs the least correction, and says why.
* :func:`fit_match` first registers the clip's sampled frames onto the reference's (SIFT +
  RANSAC homography: takes of one scene share a background) and fits a primary grade
  (saturation, contrast, gamma, white-balance gains, exposure, offsets) to the corresponding
  pixels, robustly. Where nothing registers it falls back to statistics in CIELAB: a monotone
  tone curve on L* from trimmed percentiles and an offset plus chroma scale on a*, b*; and
  refuses clips of another scene instead of forcing them.
* :func:`bake_lut` turns the correction into a 33³ ``.cube`` (Resolve/ffmpeg ``lut3d``) with a
  strength setting, highlight roll-off and skin-tone protection.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from daemon.core.files import atomic_write

PERCENTILES = (2.0, 10.0, 25.0, 50.0, 75.0, 90.0, 98.0)


# -- colour space (BT.709 primaries = sRGB primaries, D65) ------------------------------------


_colour_lock = threading.Lock()
_colour_module = None


def _colour():  # type: ignore[no-untyped-def]
    """colour-science, imported once and quietly (it warns about optional plotting packages).
    Its import quietens warnings process-wide for a moment, which is not safe from two threads
    at once: a second caller waits for the first one's import."""
    global _colour_module
    if _colour_module is None:
        with _colour_lock:
            if _colour_module is None:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    import colour
                _colour_module = colour
    return _colour_module


def load_colour_science() -> None:
    """Start importing colour-science (a second or more of Python) in the background, where it
    overlaps the clips' first decode (BestSource indexes with the GIL released)."""

    def run() -> None:
        with contextlib.suppress(Exception):  # a failed import fails the first real use
            _colour()

    # not a daemon thread: an interpreter must not exit under an import half done
    threading.Thread(target=run, name="colour-import").start()


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    c = _colour()
    return c.XYZ_to_Lab(c.sRGB_to_XYZ(np.clip(rgb, 0.0, 1.0)))


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    c = _colour()
    return c.XYZ_to_sRGB(c.Lab_to_XYZ(lab))


def delta_e(lab1: np.ndarray, lab2: np.ndarray) -> float:
    return float(_colour().delta_E(lab1, lab2, method="CIE 2000"))


# -- assessment --------------------------------------------------------------------------------


@dataclass(slots=True)
class ClipStats:
    name: str
    frames_sampled: int
    lab_mean: list[float]
    lab_percentiles: list[list[float]]  # L, a, b at PERCENTILES
    ab_std: float
    noise: float  # robust sigma of the luma high-pass, in 8-bit code values
    blockiness: float  # 8x8 grid edge energy / off-grid edge energy (1 = no blocking)
    sharpness: float  # mean gradient magnitude of luma, 8-bit code values per pixel
    flicker: float  # std of frame-to-frame mean-luma change after detrending, in %
    duplicate_ratio: float  # share of sampled neighbours that are identical
    cut_at: int | None  # first scene cut found (frame index), if any
    # mean |frame - its motion-compensated neighbours' average| (luma, 8-bit code values): the
    # temporal noise a motion-compensated denoiser can remove (grain, compression shimmer)
    temporal_noise: float = 0.0
    # the same residual without motion compensation divided into it: < 1 where following the
    # motion explains the picture (a temporal denoiser is safe), ~1 where it does not
    motion_fit: float = 1.0
    saliency_x: list[float] = field(default_factory=list)  # share of saliency per column bin
    saliency_y: list[float] = field(default_factory=list)  # ... per row bin
    # where every shot starts (seconds from the first frame): a chunk boundary there is free
    cuts: list[float] = field(default_factory=list)
    # the sampled frames (uint8 RGB), kept in memory for registration; never serialised
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("samples", None)
        return out


def noise_sigma(luma: np.ndarray) -> float:
    """Immerkær's fast noise estimate (robust median form), 8-bit code values."""
    y = luma * 255.0
    lap = (
        y[:-2, :-2]
        - 2 * y[:-2, 1:-1]
        + y[:-2, 2:]
        - 2 * y[1:-1, :-2]
        + 4 * y[1:-1, 1:-1]
        - 2 * y[1:-1, 2:]
        + y[2:, :-2]
        - 2 * y[2:, 1:-1]
        + y[2:, 2:]
    )
    return float(np.median(np.abs(lap)) * math.sqrt(math.pi / 2) / 6.0 * 1.4826 / 1.0)


def blockiness(luma: np.ndarray) -> float:
    """Edge energy on the 8-pixel grid against elsewhere (full-resolution luma)."""
    d = np.abs(np.diff(luma, axis=1))
    cols = np.arange(d.shape[1])
    on = d[:, (cols % 8) == 7].mean()
    off = d[:, (cols % 8) != 7].mean()
    dv = np.abs(np.diff(luma, axis=0))
    rows = np.arange(dv.shape[0])
    on_v = dv[(rows % 8) == 7, :].mean()
    off_v = dv[(rows % 8) != 7, :].mean()
    return float((on + on_v) / max(1e-6, off + off_v))


def sharpness(luma: np.ndarray) -> float:
    gy, gx = np.gradient(luma * 255.0)
    return float(np.mean(np.hypot(gx, gy)))


def exposure_flicker(means: list[float]) -> float:
    """Frame-to-frame change of mean luma in %, after removing slow trends (real lighting
    changes, pans), from the mean luma of consecutive frames."""
    if len(means) < 2:
        return 0.0
    changes = np.diff(means) * 100 / max(1e-6, float(np.mean(means)))
    if len(changes) < 3:
        return float(np.std(changes))
    changes = changes - np.convolve(changes, np.ones(5) / 5, mode="same")
    return float(np.std(changes[2:-2])) if len(changes) > 4 else float(np.std(changes))


def spectral_saliency(luma: np.ndarray) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) of a small luma image."""
    from scipy.ndimage import gaussian_filter, uniform_filter

    f = np.fft.fft2(luma)
    log_amp = np.log(np.abs(f) + 1e-8)
    residual = log_amp - uniform_filter(log_amp, size=3, mode="wrap")
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(f)))) ** 2
    return gaussian_filter(sal, sigma=max(1.0, luma.shape[1] / 32))


def saliency_profiles(frames: list[np.ndarray], bins: int = 32) -> tuple[list[float], list[float]]:
    """Where a clip's subject is: spectral-residual saliency plus motion between the sampled
    frames, summed over columns and rows into ``bins`` shares each (each list sums to 1)."""
    small = []
    for rgb in frames:
        y = rgb.mean(axis=-1)
        fy, fx = max(1, y.shape[0] // 36), max(1, y.shape[1] // 64)
        h, w = y.shape[0] // fy * fy, y.shape[1] // fx * fx
        small.append(y[:h, :w].reshape(h // fy, fy, w // fx, fx).mean(axis=(1, 3)))
    total = np.zeros_like(small[0])
    for y in small:
        sal = spectral_saliency(y)
        total += sal / max(1e-12, float(sal.sum()))
    for a, b in itertools.pairwise(small):
        motion = np.abs(b - a)
        if motion.sum() > 1e-6:
            total += motion / float(motion.sum())

    def profile(v: np.ndarray) -> list[float]:
        edges = np.linspace(0, len(v), bins + 1)
        out = [
            float(v[int(a) : max(int(a) + 1, int(b))].sum()) for a, b in itertools.pairwise(edges)
        ]
        t = sum(out) or 1.0
        return [round(x / t, 5) for x in out]

    return profile(total.sum(axis=0)), profile(total.sum(axis=1))


def analyse_frames(
    name: str,
    frames: list[np.ndarray],
    full_luma: list[np.ndarray],
    frame_means: list[float],
    cut_at: int | None = None,
) -> ClipStats:
    """Stats from sampled RGB frames (small, float 0..1, HxWx3), full-size luma samples and
    the mean luma of every frame (before the first cut). The colour statistics are taken in a
    second thread beside the rest (numpy leaves the GIL), a sample at a time: 0.14 s for 12
    samples of 320x180 on two cores here, against 0.20-0.28 s with the stack converted whole."""
    _colour()  # imported first (it may still be loading in the background): scipy with it
    stack = np.stack(frames)

    def colour_stats() -> tuple[list[float], list[list[float]], float]:
        # a sample at a time: the same values, converted 3x sooner than the whole stack at
        # once (whose float64 intermediates, 16 MB each for 12 samples, fall out of the cache)
        lab = np.concatenate([rgb_to_lab(f.reshape(-1, 3)) for f in frames])
        pct = np.percentile(lab, PERCENTILES, axis=0).T  # 3 x len(PERCENTILES)
        ab_std = float(np.sqrt(lab[:, 1].var() + lab[:, 2].var()))
        return [float(x) for x in lab.mean(axis=0)], pct.tolist(), ab_std

    with ThreadPoolExecutor(1, thread_name_prefix="colour-stats") as side:
        colour_side = side.submit(colour_stats)
        dups = [float(np.abs(a - b).max()) < 1e-4 for a, b in itertools.pairwise(frames)]
        sal_x, sal_y = saliency_profiles(frames)
        samples = (np.clip(stack, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        noise = float(np.median([noise_sigma(y) for y in full_luma]))
        block = float(np.median([blockiness(y) for y in full_luma]))
        sharp = float(np.median([sharpness(y) for y in full_luma]))
        lab_mean, lab_percentiles, ab_std = colour_side.result()
    return ClipStats(
        name=name,
        frames_sampled=len(frames),
        lab_mean=lab_mean,
        lab_percentiles=lab_percentiles,
        ab_std=ab_std,
        noise=noise,
        blockiness=block,
        sharpness=sharp,
        flicker=exposure_flicker(frame_means),
        duplicate_ratio=float(np.mean(dups)) if dups else 0.0,
        cut_at=cut_at,
        saliency_x=sal_x,
        saliency_y=sal_y,
        samples=samples,
    )


def analyse_clip(
    path: str,
    *,
    matrix: int,
    transfer: int,
    primaries: int,
    color_range: int,
    samples: int = 12,
    small: tuple[int, int] = (320, 180),
    index: str = "",
    cores: int = 1,
    reader=None,  # type: ignore[no-untyped-def]
    keyframes: Sequence[int] = (),
) -> ClipStats:
    """Decode sampled frames with VapourSynth (in-process) and measure them. With ``index``
    (a path without extension) BestSource's index is written there for the job's script to
    read, so the clip is indexed (decoded end to end) once, not twice. ``cores``: the cores
    this clip may use, as decoder threads; with more than one the measuring pass after the
    index is split into parts (:func:`pass_parts`), each decoded by its own reader of the
    index at once: the same numbers, sooner. ``reader``: what :func:`open_source` returned
    for the same ``path``, ``index`` and ``cores`` (opened while the clip was probed).
    ``keyframes``: the clip's keyframes (frame numbers), where the parts may start."""
    import vapoursynth as vs

    core = vs.core
    cache = _cache(index)
    first = reader if reader is not None else open_source(path, index=index, cores=cores)
    from vs_scripts.runtime.filters import range_props

    if first.format.color_family == vs.RGB:
        matrix = 0  # RGB pictures (PNG, QuickTime Animation) carry no YUV matrix
    props = {"_Matrix": matrix, "_Transfer": transfer, "_Primaries": primaries}
    props |= range_props(color_range)
    n = first.num_frames
    parts = pass_parts(n, cores, keyframes=keyframes) if index else [(0, n)]
    per = max(1, cores // len(parts))
    # split: each part its own reader of the index, the cores shared out between them
    readers = [first] if len(parts) == 1 else [
        core.bs.VideoSource(path, threads=per, **cache) for _ in parts
    ]  # fmt: skip
    del first  # not kept open beside them
    guess = _sample_indices(n, samples)
    noise_at = noise_indices(n) if n >= 3 else []

    def walk(part: int) -> _Walk:
        lo, hi = parts[part]
        w = _Walk(core.std.SetFrameProps(readers[part], **props), small)
        # the samples a clip without a cut gets are taken as the pass goes by (the source
        # frame is still in BestSource's cache), not by seeking back to them afterwards: a
        # decode saved. A noise sample needs its neighbours, so a later part takes the ones
        # whose frames it decodes itself; one it cannot is measured after the pass.
        probe = noise_probe(w.clip) if noise_at else None
        tiny = w.tiny
        for i, f in enumerate(core.std.PlaneStats(tiny, tiny[1:] + tiny[-1])[lo:hi].frames(), lo):
            w.stats.append((float(f.props["PlaneStatsDiff"]), float(f.props["PlaneStatsAverage"])))
            w.durations.append(
                f.props.get("_DurationNum", 1) / max(1, f.props.get("_DurationDen", 24))
            )
            if i in guess:
                w.taken["rgb", i] = w.rgb_at(i)
            if i in guess[:: max(1, len(guess) // 4)]:
                w.taken["luma", i] = w.luma_at(i)
            if probe is not None and i - 1 in noise_at and i - 2 >= lo:
                w.measured[i - 1] = probe(i - 1)
        return w

    if len(parts) == 1:
        walks = [walk(0)]
    else:
        with ThreadPoolExecutor(len(parts), thread_name_prefix="measure") as pool:
            walks = list(pool.map(walk, range(len(parts))))
    w0 = walks[0]
    stats = [s for w in walks for s in w.stats]
    times = list(itertools.accumulate((d for w in walks for d in w.durations), initial=0.0))
    taken = {k: v for w in walks for k, v in w.taken.items()}
    measured = {k: v for w in walks for k, v in w.measured.items()}
    diffs = [d for d, _ in stats]
    med = float(np.median(diffs)) if diffs else 0.0
    starts = [i + 1 for i, d in enumerate(diffs[:-1]) if d > max(0.12, 5 * med)]
    cut_at = starts[0] if starts else None
    usable = cut_at or n
    idx = _sample_indices(usable, samples)
    frames = [taken["rgb", i] if ("rgb", i) in taken else w0.rgb_at(i) for i in idx]
    full = [
        taken["luma", i] if ("luma", i) in taken else w0.luma_at(i)
        for i in idx[:: max(1, len(idx) // 4)]
    ]
    means = [avg for _, avg in stats[:usable]]  # flicker needs consecutive frames
    out = analyse_frames(Path(path).name, frames, full, means, cut_at)
    out.temporal_noise, out.motion_fit = temporal_noise(w0.clip, usable=usable, known=measured)
    out.cuts = [round(times[i], 6) for i in starts]
    return out


def _cache(index: str) -> dict[str, object]:
    return {"cachemode": 4, "cachepath": index} if index else {"cachemode": 0}


def open_source(path: str, *, index: str = "", cores: int = 1):  # type: ignore[no-untyped-def]
    """BestSource's reader of ``path``: opening it indexes the clip (decodes it end to end),
    which needs no probe, so :func:`analyse_clip`'s caller can run the two at once. Decoder
    threads: the clip's cores (BestSource's own default counts every core of the machine, a
    cpuset or a slot's share not)."""
    import vapoursynth as vs

    return vs.core.bs.VideoSource(path, threads=max(1, cores), **_cache(index))


class _Walk:
    """One part of :func:`analyse_clip`'s pass: its reader's clips and what it measured."""

    def __init__(self, clip, small: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
        import vapoursynth as vs

        core = vs.core
        self.clip = clip
        self.rgb = core.resize.Bilinear(clip, small[0], small[1], format=vs.RGBS)
        self.luma = core.resize.Point(clip, format=vs.GRAYS, matrix_s="709")
        self.tiny = core.resize.Bilinear(clip, 32, 18, format=vs.GRAYS, matrix_s="709")
        self.stats: list[tuple[float, float]] = []
        self.durations: list[float] = []  # each frame's, to place the cuts in time
        self.taken: dict[tuple[str, int], np.ndarray] = {}
        self.measured: dict[int, tuple[float, float]] = {}

    def rgb_at(self, i: int) -> np.ndarray:
        return np.stack([np.asarray(self.rgb.get_frame(i)[p]) for p in range(3)], axis=-1)

    def luma_at(self, i: int) -> np.ndarray:
        return np.asarray(self.luma.get_frame(i)[0]).copy()


#: the fewest frames a part of the measuring pass gets: a new reader first decodes from the
#: keyframe before its part (AI generators' GOPs run up to ~10 s), which a short part would
#: not repay
PASS_PART_FRAMES = 240


#: source frames after a keyframe where a part may start: BestSource's seek preroll (20) and
#: the noise probe's reach back (2), so its reader first decodes that keyframe's GOP
PART_SEEK_MARGIN = 24


def pass_parts(
    frames: int, cores: int, *, least: int | None = None, keyframes: Sequence[int] = ()
) -> list[tuple[int, int]]:
    """Half-open frame ranges, in order, splitting a clip's measuring pass over ``cores``:
    as many parts as cores, but none shorter than ``least`` frames (:data:`PASS_PART_FRAMES`).
    ``keyframes`` (source frames): a part's start moves, by up to a quarter of a part and
    only where no part becomes shorter than ``least``, to :data:`PART_SEEK_MARGIN` frames
    after the nearest one, so its reader does not first decode most of a GOP that the part
    before it decodes too."""
    least = max(1, least or PASS_PART_FRAMES)
    k = max(1, min(cores, frames // least))
    edges = [frames * j // k for j in range(k + 1)]
    entries = sorted({e for f in keyframes if 0 < (e := f + PART_SEEK_MARGIN) < frames})
    for j in range(1, k):
        i = bisect.bisect_left(entries, edges[j])
        for near in sorted(entries[max(0, i - 1) : i + 1], key=lambda e: abs(e - edges[j])):
            if (
                abs(near - edges[j]) <= frames // k // 4
                and near - edges[j - 1] >= least
                and edges[j + 1] - near >= least
            ):
                edges[j] = near  # a quarter of a part each way: the edges stay in order
                break
    return list(itertools.pairwise(edges))


def _sample_indices(usable: int, samples: int) -> list[int]:
    """``samples`` frames spread evenly over the first ``usable`` (first and last included)."""
    return sorted({round(i * (usable - 1) / max(1, samples - 1)) for i in range(samples)})


def noise_probe(clip):  # type: ignore[no-untyped-def]
    """For :func:`temporal_noise`: a function giving, at frame ``i`` (not the first or last),
    (mean |frame - its motion-compensated neighbours' average|, the same without motion
    compensation), on luma (a centre crop of at most 960x540 at the source's own resolution)."""
    import vapoursynth as vs

    core = vs.core
    y = core.resize.Point(clip, format=vs.GRAY16, matrix_s="709")  # the matrix: RGB sources
    if y.width > 960 or y.height > 540:  # a centre crop at the source's own scale: a downscale
        w, h = min(960, y.width), min(540, y.height)  # would average the noise away
        y = core.std.CropAbs(y, w, h, (y.width - w) // 4 * 2, (y.height - h) // 4 * 2)
    sup = core.mv.Super(y, pel=1)
    vectors = [core.mv.Analyse(sup, isb=b, delta=1, blksize=16, overlap=8) for b in (True, False)]
    # thscd2=255: never call a frame a scene change (MVTools would return it uncompensated)
    back, fwd = (core.mv.Compensate(y, sup, v, thscd1=16320, thscd2=255) for v in vectors)

    def luma(c, i: int) -> np.ndarray:  # type: ignore[no-untyped-def]
        return np.asarray(c.get_frame(i)[0]).astype(np.float32) / 256.0

    def at(i: int) -> tuple[float, float]:
        here = luma(y, i)
        return (
            float(np.mean(np.abs(here - (luma(back, i) + luma(fwd, i)) / 2))),
            float(np.mean(np.abs(here - (luma(y, i - 1) + luma(y, i + 1)) / 2))),
        )

    return at


def noise_indices(usable: int, samples: int = 6) -> list[int]:
    """The frames :func:`temporal_noise` measures: spread over the first ``usable``, each with
    both neighbours inside them."""
    return sorted({round(1 + i * (usable - 3) / max(1, samples - 1)) for i in range(samples)})


def temporal_noise(
    clip,  # type: ignore[no-untyped-def]
    *,
    usable: int,
    samples: int = 6,
    known: dict[int, tuple[float, float]] | None = None,
) -> tuple[float, float]:
    """(temporal noise, motion fit) of ``clip`` (see :class:`ClipStats`), from MVTools'
    compensation of each sampled frame from its two neighbours (see :func:`noise_probe`);
    ``known`` holds frames already measured."""
    if usable < 3:
        return 0.0, 1.0
    known = known or {}
    probe = None
    residual, still = [], []
    for i in noise_indices(usable, samples):
        if i not in known:
            probe = probe or noise_probe(clip)
            known[i] = probe(i)
        residual.append(known[i][0])
        still.append(known[i][1])
    res, raw = float(np.median(residual)), float(np.median(still))
    return round(res, 3), round(res / raw, 3) if raw > 1e-6 else 1.0


# -- the reference -----------------------------------------------------------------------------


def is_marked_reference(name: str) -> bool:
    stem = Path(name).stem.lower()
    return any(
        tok in ("ref", "reference")
        for tok in stem.replace("-", "_")
        .replace(".", "_")
        .replace("[", "_")
        .replace("]", "_")
        .split("_")
    )


def choose_reference(stats: list[ClipStats]) -> tuple[str, str]:
    """(name, reason)."""
    marked = [s for s in stats if is_marked_reference(s.name)]
    if marked:
        return marked[0].name, "marked as the reference in its file name"
    if len(stats) == 1:
        return stats[0].name, "the only clip"
    # needs the least correction: closest to the batch's median look
    med = np.median(np.array([s.lab_mean for s in stats]), axis=0)
    dist = [delta_e(np.array(s.lab_mean), med) for s in stats]
    best = int(np.argmin(dist))
    return stats[best].name, (
        f"closest to the batch's median look (ΔE00 {dist[best]:.2f}; others "
        + ", ".join(
            f"{s.name} {d:.2f}" for s, d in zip(stats, dist, strict=False) if s is not stats[best]
        )
        + ")"
    )


# -- fitting -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Match:
    name: str
    reference: str
    applied: bool
    reason: str
    l_in: list[float] = field(default_factory=list)
    l_out: list[float] = field(default_factory=list)
    ab_offset: list[float] = field(default_factory=lambda: [0.0, 0.0])
    ab_centre: list[float] = field(default_factory=lambda: [0.0, 0.0])
    chroma_scale: float = 1.0
    delta_e_before: float = 0.0
    method: str = "statistics"  # or "registered"
    grade: list[float] = field(default_factory=list)  # GRADE_KEYS, for "registered"
    pairs: int = 0  # corresponding pixels the registered fit used

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        if self.grade:
            out["grade"] = dict(zip(GRADE_KEYS, (round(v, 4) for v in self.grade), strict=True))
        return out


# -- registration: the shared background tells the cast directly ------------------------------

#: a colourist's primary grade, applied in this order (the inverse of how a cast is usually
#: made): saturation, contrast about mid-grey, gamma, white balance gains (linear light, green
#: fixed) with exposure, then an offset per channel
GRADE_KEYS = (
    "saturation",
    "contrast",
    "gamma",
    "gain_r",
    "gain_b",
    "exposure",
    "offset_r",
    "offset_g",
    "offset_b",
)
IDENTITY_GRADE = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0)
GRADE_BOUNDS = (
    (0.5, 1.8),
    (0.6, 1.6),
    (0.6, 1.6),
    (0.7, 1.4),
    (0.7, 1.4),
    (0.6, 1.6),
    (-0.1, 0.1),
    (-0.1, 0.1),
    (-0.1, 0.1),
)
_LUMA709 = np.array([0.2126, 0.7152, 0.0722])


def apply_grade(rgb: np.ndarray, g: list[float] | tuple[float, ...]) -> np.ndarray:
    """The grade on gamma-encoded RGB in 0..1 (any shape ending in 3)."""
    sat, contrast, gamma, gain_r, gain_b, exposure, *offset = g
    y = np.clip(rgb, 0.0, 1.0)
    luma = (y @ _LUMA709)[..., None]
    y = luma + sat * (y - luma)
    y = (y - 0.5) * contrast + 0.5
    y = np.clip(y, 1e-6, 1.0) ** gamma
    lin = y**2.2 * np.array([gain_r, 1.0, gain_b]) * exposure
    return np.clip(np.clip(lin, 0.0, 1.0) ** (1 / 2.2) + np.array(offset), 0.0, 1.0)


def register_pairs(
    src: np.ndarray, ref: np.ndarray, *, min_inliers: int = 25, step: int = 3
) -> tuple[np.ndarray, np.ndarray] | None:
    """Corresponding pixels of two takes of one scene: each sampled ``src`` frame is matched
    (SIFT, ratio test, RANSAC homography) to the ``ref`` frame it overlaps best, warped onto
    it, and the overlap (eroded at the edges) gives pixel pairs. ``None`` when no frame
    registers: a different scene, or too little shared texture."""
    import cv2

    def gray(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.mean(axis=-1).astype(np.uint8))

    sift = cv2.SIFT_create(nfeatures=1500)
    refs = [sift.detectAndCompute(gray(r), None) for r in ref]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    got_s, got_r = [], []
    for frame in src:
        ks, ds = sift.detectAndCompute(gray(frame), None)
        if ds is None or len(ks) < min_inliers:
            continue
        best = None
        for j, (kr, dr) in enumerate(refs):
            if dr is None or len(kr) < min_inliers:
                continue
            knn = matcher.knnMatch(ds, dr, k=2)
            good = [m for m, n in (x for x in knn if len(x) == 2) if m.distance < 0.75 * n.distance]
            if len(good) < min_inliers:
                continue
            p1 = np.float32([ks[m.queryIdx].pt for m in good])
            p2 = np.float32([kr[m.trainIdx].pt for m in good])
            h, inliers = cv2.findHomography(p1, p2, cv2.RANSAC, 3.0)
            if h is None:
                continue
            count = int(inliers.sum())
            if count >= min_inliers and (best is None or count > best[0]):
                best = (count, j, h)
        if best is None:
            continue
        _, j, h = best
        height, width = ref[j].shape[:2]
        warped = cv2.warpPerspective(frame.astype(np.float32), h, (width, height))
        valid = cv2.warpPerspective(
            np.ones(frame.shape[:2], np.uint8), h, (width, height), flags=cv2.INTER_NEAREST
        )
        valid = cv2.erode(valid, np.ones((7, 7), np.uint8)) > 0
        got_s.append(warped[valid][::step] / 255.0)
        got_r.append(ref[j][valid][::step] / 255.0)
    if not got_s:
        return None
    return np.concatenate(got_s), np.concatenate(got_r)


#: corresponding pixel pairs a grade is fitted on (measured: 83,000 pairs of a 4-clip test batch
#: took 5 minutes on 2 cores; 8,000 fit the same grade to 0.01 in 20 s)
FIT_PAIRS = 8000


def fit_grade(src: np.ndarray, ref: np.ndarray, *, keep: float = 80.0) -> list[float]:
    """The grade taking ``src`` pixels to their ``ref`` partners: a robust (L1) fit, then a
    least-squares refit on the ``keep`` % best-agreeing pairs, so moving subjects and small
    misregistrations (the rest) do not pull it."""
    from scipy.optimize import minimize

    if len(src) > FIT_PAIRS:  # a fixed, even sample: the fit's cost no longer grows with size
        pick = np.random.default_rng(0).choice(len(src), FIT_PAIRS, replace=False)
        src, ref = src[pick], ref[pick]
    first = minimize(
        lambda g: float(np.mean(np.abs(apply_grade(src, g) - ref))),
        list(IDENTITY_GRADE),
        method="Powell",
        bounds=GRADE_BOUNDS,
    )
    err = np.abs(apply_grade(src, first.x) - ref).sum(axis=1)
    sel = err <= np.percentile(err, keep)
    second = minimize(
        lambda g: float(np.mean((apply_grade(src[sel], g) - ref[sel]) ** 2)),
        first.x,
        method="L-BFGS-B",
        bounds=GRADE_BOUNDS,
    )
    return [float(v) for v in second.x]


def scene_distance(a: ClipStats, b: ClipStats) -> float:
    """How different two clips' content is, beyond what a colour cast explains: compares the
    *shape* of their L* distributions (spread and skew) and chroma spread."""
    pa, pb = np.array(a.lab_percentiles[0]), np.array(b.lab_percentiles[0])
    spread_a, spread_b = pa[-1] - pa[0], pb[-1] - pb[0]
    ratio = max(spread_a, spread_b) / max(1e-3, min(spread_a, spread_b))
    na = (pa - pa[3]) / max(1e-3, spread_a)
    nb = (pb - pb[3]) / max(1e-3, spread_b)
    shape = float(np.abs(na - nb).mean())
    chroma = max(a.ab_std, b.ab_std) / max(1e-3, min(a.ab_std, b.ab_std))
    return float(
        max(ratio - 1, 0) + 4 * shape + max(chroma - 1, 0) * 0.5 + abs(pa[3] - pb[3]) / 40.0
    )


def fit_match(src: ClipStats, ref: ClipStats, *, max_distance: float = 1.6) -> Match:
    if src.name == ref.name:
        return Match(src.name, ref.name, False, "this is the reference")
    before = delta_e(np.array(src.lab_mean), np.array(ref.lab_mean))
    if src.samples is not None and ref.samples is not None:
        found = register_pairs(src.samples, ref.samples)
        if found is not None and len(found[0]) >= 2000:
            grade = fit_grade(*found)
            return Match(
                src.name,
                ref.name,
                True,
                f"matched on {len(found[0])} corresponding pixels of the scene both show",
                delta_e_before=before,
                method="registered",
                grade=grade,
                pairs=len(found[0]),
            )
    dist = scene_distance(src, ref)
    if dist > max_distance:
        return Match(
            src.name,
            ref.name,
            False,
            f"too different from the reference to match (scene distance {dist:.2f} > "
            f"{max_distance}); left as it is: it looks like another scene",
            delta_e_before=before,
        )
    l_in = list(src.lab_percentiles[0])
    l_out = list(ref.lab_percentiles[0])
    # keep the curve monotone with slopes in [0.5, 2]
    for i in range(1, len(l_in)):
        dx = max(1e-3, l_in[i] - l_in[i - 1])
        slope = (l_out[i] - l_out[i - 1]) / dx
        l_out[i] = l_out[i - 1] + dx * min(2.0, max(0.5, slope))
    ab_src = np.array(src.lab_mean[1:])
    ab_ref = np.array(ref.lab_mean[1:])
    scale = float(min(1.4, max(0.7, ref.ab_std / max(1e-3, src.ab_std))))
    return Match(
        src.name,
        ref.name,
        True,
        "matched to the reference",
        l_in=l_in,
        l_out=l_out,
        ab_offset=(ab_ref - ab_src).tolist(),
        ab_centre=ab_src.tolist(),
        chroma_scale=scale,
        delta_e_before=before,
    )


def apply_match(
    lab: np.ndarray, m: Match, *, strength: float = 1.0, protect_skin: bool = True
) -> np.ndarray:
    """The correction on Lab values (N x 3)."""
    if not m.applied or strength <= 0:
        return lab
    out = lab.copy()
    L = lab[:, 0]
    # the curve through the percentile pairs; below the first from black, above the last
    # parallel to identity (slope 1), capped at white
    xs = [0.0, *m.l_in, 100.0]
    ys = [0.0, *m.l_out, min(100.0, m.l_out[-1] + (100.0 - m.l_in[-1]))]
    ys[-1] = max(ys[-2], ys[-1])
    out[:, 0] = np.interp(L, xs, ys)
    centre = np.array(m.ab_centre)
    ab = (lab[:, 1:] - centre) * m.chroma_scale + centre + np.array(m.ab_offset)
    out[:, 1:] = ab
    weight = np.full(len(lab), float(strength))
    # highlight roll-off: fade the correction out above L* 90 so whites do not clip or tint
    weight *= 1.0 - np.clip((L - 90.0) / 10.0, 0.0, 1.0) * 0.7
    if protect_skin:
        hue = np.degrees(np.arctan2(lab[:, 2], lab[:, 1])) % 360
        chroma = np.hypot(lab[:, 1], lab[:, 2])
        skin = (hue > 20) & (hue < 70) & (chroma > 10) & (chroma < 50) & (L > 25) & (L < 85)
        # skin keeps its hue: only the lightness part of the correction applies fully
        out[skin, 1:] = lab[skin, 1:] + (out[skin, 1:] - lab[skin, 1:]) * 0.5
    return lab + (out - lab) * weight[:, None]


def bake_lut(m: Match, *, size: int = 33, strength: float = 1.0) -> np.ndarray:
    """size³ x 3 RGB table, red fastest (the .cube order)."""
    grid = np.linspace(0.0, 1.0, size)
    b, g, r = np.meshgrid(grid, grid, grid, indexing="ij")
    rgb = np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)
    if not m.applied:
        return rgb
    if m.method == "registered":
        # measured on corresponding pixels, so applied as fitted, skin and highlights included
        # (the fit reproduces what the reference shows there)
        return np.clip(rgb + (apply_grade(rgb, m.grade) - rgb) * strength, 0.0, 1.0)
    lab = apply_match(rgb_to_lab(rgb), m, strength=strength)
    out = lab_to_rgb(lab)
    # soft clip instead of hard clip near the gamut edges
    return np.clip(out, 0.0, 1.0)


def write_cube(path: Path, table: np.ndarray, *, title: str) -> None:
    size = round(len(table) ** (1 / 3))
    lines = [
        f'TITLE "{title}"',
        f"LUT_3D_SIZE {size}",
        "DOMAIN_MIN 0.0 0.0 0.0",
        "DOMAIN_MAX 1.0 1.0 1.0",
    ]
    lines += [f"{r:.6f} {g:.6f} {b:.6f}" for r, g, b in table]
    atomic_write(path, "\n".join(lines) + "\n")
