"""AI stages and whole chains on an NVIDIA GPU (run by bench/gpu.sh; by hand, not in CI).

Per stage, in one VapourSynth process on generated frames: RIFE 4.25 at 1920x1080 (12 -> 24
fps), Real-ESRGAN 1920x1080 -> 3840x2160 in fp16 with torch and, when vsrealesrgan's TensorRT
path is available, as a TensorRT engine. End to end: `finishline process` of N clips with the
youtube-1080p and youtube-4k presets, with 1 worker and with one worker per GPU. Prints fps.
Without a GPU it says so, measures the same stages on the CPU at a small size, and exits 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FL = ROOT / ".venv" / "bin" / "finishline"


def frames_per_second(clip, n: int) -> float:  # type: ignore[no-untyped-def]
    clip.get_frame(0)  # warm-up: models loaded, engines built
    t0 = time.perf_counter()
    for i in range(1, min(n, clip.num_frames - 1) + 1):
        clip.get_frame(i)
    return min(n, clip.num_frames - 1) / (time.perf_counter() - t0)


def stages(gpu: bool, width: int, height: int, n: int) -> None:
    import vapoursynth as vs

    from daemon.engine.models import model_dir, require
    from vs_scripts.runtime import filters as fl

    core = vs.core
    backend = fl.Backend.CUDA if gpu else fl.Backend.AUTO
    precision = fl.Precision.FP16 if gpu else fl.Precision.AUTO
    src = core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=n + 2,
                             fpsnum=12, fpsden=1)  # fmt: skip
    src = core.std.Expr(src, ["X 7 * Y 3 * + N 11 * + 97 % 97 /"] * 3)  # moving texture
    rife = fl.interpolate_rife(src, fps=(24, 1), model=str(require("rife-4.25")),
                               backend=backend, precision=precision)  # fmt: skip
    print(f"RIFE {width}x{height} 12->24:            {frames_per_second(rife, n):7.2f} fps")
    model = str(require("realesr-animevideov3"))
    up = fl.upscale_esrgan(src, model=model, scale=2, tile=0, backend=backend, precision=precision)
    print(
        f"Real-ESRGAN {width}x{height} x2 ({precision.value}): {frames_per_second(up, n):7.2f} fps"
    )
    if gpu:
        try:
            trt = fl.upscale_esrgan(src, model=model, scale=2, tile=0, backend=backend,
                                    precision=precision, tensorrt=True,
                                    engine_cache=str(model_dir() / "tensorrt"))  # fmt: skip
            print(f"Real-ESRGAN TensorRT fp16:          {frames_per_second(trt, n):7.2f} fps")
        except Exception as exc:  # no TensorRT in this environment
            print(f"Real-ESRGAN TensorRT: not available ({exc})")


def chains(gpus: int, seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="fl-gpu-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
    clips = []
    for i in range(max(1, gpus)):
        clip = work / f"c{i}.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size=1280x720:rate=12:duration={seconds},noise=alls=10:allf=t",
             "-f", "lavfi", "-i", f"sine=duration={seconds}", "-c:v", "libx264", "-crf", "30",
             "-pix_fmt", "yuv420p", "-metadata", f"title={i}", "-c:a", "aac", "-shortest",
             str(clip)], check=True,
        )  # fmt: skip
        clips.append(clip)
    frames = round(seconds * 24) * len(clips)
    for preset in ("youtube-1080p", "youtube-4k"):
        for workers in sorted({1, max(1, gpus)}):
            out = work / f"{preset}-{workers}"
            t0 = time.monotonic()
            res = subprocess.run(
                [str(FL), "process", *map(str, clips), "--preset", preset, "-q", "-o", str(out),
                 "--workers", str(workers), "--chunk-seconds", str(max(1.0, seconds / 4))],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            dt = time.monotonic() - t0
            state = "" if res.returncode == 0 else f"  FAILED: {res.stderr.strip()[-200:]}"
            print(f"{preset:14} {len(clips)} clip(s), {workers} worker(s): "
                  f"{frames / dt:7.2f} fps end to end ({dt:.0f} s){state}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=4.0, help="clip length for the chains")
    args = ap.parse_args()
    from daemon.engine.slots import count_gpus

    gpus = count_gpus()
    if gpus == 0:
        print("no NVIDIA GPU here: CPU figures at 320x180 only (run this on a GPU server for "
              "the real ones); exit 0")  # fmt: skip
        stages(False, 320, 180, min(args.frames, 6))
        return
    print(f"{gpus} NVIDIA GPU(s)")
    stages(True, 1920, 1080, args.frames)
    chains(gpus, args.seconds)


if __name__ == "__main__":
    main()
