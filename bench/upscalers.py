"""Upscalers on photoreal frames: each model against the ground truth of the shared bench
(by hand, not in CI; realesrgan-x4plus takes ~20 s a 640x360 frame on 2 CPU cores).

    .venv/bin/python bench/upscalers.py [CORPUS] [--clips clip03,clip04]

For one frame in the middle of each degraded clip (640x360), upscale x2 with a plain Spline36
resize, realesr-animevideov3 and realesrgan-x4plus (keep_tone on, as the presets run them)
and compare with the clean 1280x720 frame (gt_lowfps: the same instant): PSNR-Y and a
high-frequency energy ratio (detail present / detail in the truth). animevideov3 also runs at
``[upscale] detail = 0.5``. Writes 1:1 crops of the truth's most detailed 320x180 region
(source x2 nearest | each model | truth) as PNG under bench/_work/upscalers/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def decode(path: Path, index: int, size: tuple[int, int]) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"select=eq(n\\,{index})",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(size[1], size[0], 3).astype(np.float32) / 255


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / max(1e-12, float(np.mean((a - b) ** 2)))))


def hf(y: np.ndarray) -> float:
    return float(np.mean(np.abs(np.diff(y, axis=0))) + np.mean(np.abs(np.diff(y, axis=1))))


def busiest(y: np.ndarray, size: tuple[int, int] = (320, 180), step: int = 16) -> tuple[int, int]:
    """(x, y) of the ``size`` window of ``y`` with the most gradient energy."""
    e = np.zeros_like(y)
    e[:, 1:] += np.abs(np.diff(y, axis=1))
    e[1:, :] += np.abs(np.diff(y, axis=0))
    w, h = size
    best = max(
        (
            (x, t)
            for t in range(0, y.shape[0] - h + 1, step)
            for x in range(0, y.shape[1] - w + 1, step)
        ),
        key=lambda p: float(e[p[1] : p[1] + h, p[0] : p[0] + w].sum()),
    )
    return best


def upscale(rgb: np.ndarray, model: str | None, detail: float) -> np.ndarray:
    import vapoursynth as vs

    from daemon.engine.models import require
    from vs_scripts.runtime import filters as fl

    core = vs.core
    h, w, _ = rgb.shape
    blank = core.std.BlankClip(width=w, height=h, format=vs.RGBS, length=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = rgb[:, :, p]
        return out

    clip = core.std.ModifyFrame(blank, blank, fill)
    if model is None:
        up = core.resize.Spline36(clip, w * 2, h * 2)
    else:
        up = fl.upscale_esrgan(clip, model=str(require(model)), scale=2, detail=detail)
    f = up.get_frame(0)
    return np.clip(np.stack([np.asarray(f[p]) for p in range(3)], axis=-1), 0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("corpus", nargs="?", default=str(ROOT / "bench" / "_work" / "corpus"))
    ap.add_argument("--clips", default="", help="comma-separated clip names (default: all)")
    args = ap.parse_args()
    wanted = set(filter(None, args.clips.split(",")))
    corpus = Path(args.corpus)
    out = ROOT / "bench" / "_work" / "upscalers"
    out.mkdir(parents=True, exist_ok=True)
    models = {"spline36": (None, 1.0), "animevideov3 d0.5": ("realesr-animevideov3", 0.5),
              "animevideov3": ("realesr-animevideov3", 1.0),
              "x4plus": ("realesrgan-x4plus", 1.0)}  # fmt: skip
    totals = {k: [] for k in models}
    print(f"{'clip':8} " + " ".join(f"{k:>22}" for k in models) + "   (PSNR-Y dB / HF ratio / s)")
    from PIL import Image

    for src in sorted((corpus / "degraded").glob("clip*.mp4")):
        if wanted and src.stem not in wanted:
            continue
        n = int(subprocess.run(
            ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
             "stream=nb_read_packets", "-of", "csv=p=0", str(src)],
            capture_output=True, text=True, check=True).stdout.strip().split(",")[0])  # fmt: skip
        i = n // 2
        low = decode(src, i, (640, 360))
        truth = decode(corpus / "gt_lowfps" / f"{src.stem}.mkv", i, (1280, 720))
        cells = []
        x, y = busiest(luma(truth))
        crops = [np.repeat(np.repeat(low[y // 2 : y // 2 + 90, x // 2 : x // 2 + 160], 2, 0), 2, 1)]
        for name, (model, detail) in models.items():
            t0 = time.monotonic()
            up = upscale(low, model, detail)
            dt = time.monotonic() - t0
            p = psnr(luma(up), luma(truth))
            r = hf(luma(up)) / hf(luma(truth))
            totals[name].append((p, r, dt))
            cells.append(f"{p:6.2f} / {r:4.2f} / {dt:5.1f}")
            crops.append(up[y : y + 180, x : x + 320])
        crops.append(truth[y : y + 180, x : x + 320])
        Image.fromarray((np.concatenate(crops, axis=1) * 255).astype(np.uint8)).save(
            out / f"{src.stem}-crops.png"
        )
        print(f"{src.stem:8} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"{'mean':8} " + " ".join(
        f"{np.mean([t[0] for t in v]):6.2f} / {np.mean([t[1] for t in v]):4.2f} / "
        f"{np.mean([t[2] for t in v]):5.1f}" for v in totals.values()))  # fmt: skip
    print(f"crops (source x2 nearest | {' | '.join(models)} | truth): {out}")


if __name__ == "__main__":
    main()
