"""Stage-by-stage throughput of the VapourSynth chain on one clip (run by hand).

    .venv/bin/python bench/stages.py CLIP [--frames 24] [--preset bench/preset-720p.toml]

Builds the chain cumulatively (source, +deblock/denoise, +RIFE, +Real-ESRGAN, +fit/output)
and times N output frames of each, so the cost of each stage is the difference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.core.probe import probe
from daemon.engine.models import require
from daemon.engine.presets import find_preset
from vs_scripts.plan.render import plan_script
from vs_scripts.runtime import filters as fl


def timed(clip: vs.VideoNode, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(min(n, clip.num_frames)):
        clip.get_frame(i)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--preset", default="bench/preset-720p.toml")
    ap.add_argument("--upto", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    preset = find_preset(args.preset)
    media = probe(args.clip)
    plan = plan_script(preset, media)
    sc = plan.source_colour
    chain: list[tuple[str, vs.VideoNode]] = []
    clip = fl.load_source(args.clip, fps=(plan.source_fps.numerator, plan.source_fps.denominator))
    clip = fl.tag_colour(
        clip, matrix=sc.matrix, transfer=sc.transfer, primaries=sc.primaries, color_range=sc.range
    )
    chain.append(("source", clip))
    clip = fl.denoise_dfttest(
        fl.deblock(clip, strength=preset.restore.deblock), strength=preset.restore.denoise_strength
    )
    chain.append(("deblock+denoise", clip))
    if plan.interpolate:
        clip = fl.interpolate_rife(
            clip,
            fps=(plan.fps.numerator, plan.fps.denominator),
            model=str(require(preset.motion.model)),
        )
        chain.append(("rife", clip))
    if plan.upscale:
        clip = fl.upscale_esrgan(
            clip,
            model=str(require(preset.upscale.model)),
            scale=preset.upscale.scale,
            tile=preset.upscale.tile,
        )
        chain.append(("esrgan", clip))
    clip = fl.to_output(
        fl.fit_frame(clip, width=plan.width, height=plan.height),
        vs.YUV420P10,
        matrix=1,
        transfer=1,
        primaries=1,
        color_range=1,
    )
    chain.append(("fit+output", clip))
    n = args.frames
    if args.upto is not None:  # child: time one cumulative chain in a fresh core (no cache)
        name, node = chain[args.upto]
        k = n if Fraction(node.fps.numerator, node.fps.denominator) == plan.fps else n // 2
        print(f"{name}\t{timed(node, k) * (n / max(1, k)):.3f}")
        return
    print(
        f"{media.width}x{media.height} @ {media.fps} -> {plan.width}x{plan.height} @ "
        f"{plan.fps}; {n} output frames; {vs.core.num_threads} threads"
    )
    prev = 0.0
    for i in range(len(chain)):
        res = subprocess.run(
            [sys.executable, *sys.argv, "--upto", str(i)],
            capture_output=True,
            text=True,
            check=True,
        )
        name, secs_text = res.stdout.strip().splitlines()[-1].split("\t")
        secs = float(secs_text)
        print(
            f"  {name:16} cumulative {secs:7.2f}s  stage {secs - prev:7.2f}s  "
            f"({n / secs:5.2f} fps cumulative)"
        )
        prev = secs


if __name__ == "__main__":
    main()
