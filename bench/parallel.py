"""Parallel workers and chunks on this machine: scaling, the cost of splitting, and the cost
of chunking. By hand, not in CI (minutes):

    .venv/bin/python bench/parallel.py [--seconds 60] [--preset small-x265] [--size 320x180]
                                       [--clips N]

Runs ``finishline process`` on one generated clip (or a batch of N) four ways, each pinned
with ``taskset``:
  A  1 worker  x 1 core,  chunked        B  2 workers x 1 core each, chunked
  C  1 worker  x 2 cores, chunked        D  1 worker  x 1 core,  unchunked
and prints wall times and the ratios the issue asks for: B/A scaling (target >= 1.8x),
B against C (splitting must cost nothing: >= 0.95x), D against A (chunking <= 5 % slower).
Quote ratios from one run: this machine is noisy.
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
FL = ROOT / ".venv" / "bin" / "finishline"


def run(label: str, cpus: str, srcs: list[Path], out: Path, preset: str, workers: int,
        chunk: float, env: dict[str, str]) -> float:  # fmt: skip
    # a fresh work folder each: every run indexes and assesses the clip as a new job would
    # (a shared one let later runs reuse the first run's index and assessment)
    cmd = ["taskset", "-c", cpus, str(FL), "process", *map(str, srcs), "--preset", preset, "-q",
           "-o", str(out), "--overwrite", "--workers", str(workers),
           "--chunk-seconds", str(chunk), "--work", str(out.with_suffix(".work"))]  # fmt: skip
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if res.returncode != 0:
        sys.exit(f"{label} failed: {res.stderr}")
    stages = [ln.split("; ")[1] for ln in res.stderr.splitlines() if "; probe " in ln]
    print(f"{label:34} {dt:7.1f} s   {stages[0] if len(stages) == 1 else ''}", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", default="24")
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--preset", default="small-x265", help="name (tests/data/presets_ok) or .toml")
    ap.add_argument("--chunk", type=float, default=10.0, help="chunk seconds")
    ap.add_argument("--clips", type=int, default=1, help="a batch of this many clips")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs at least 2 cores")
    work = Path(tempfile.mkdtemp(prefix="fl-parallel-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"),
           "FINISHLINE_PRESETS": str(ROOT / "tests" / "data" / "presets_ok")}  # fmt: skip
    srcs = [work / f"clip{i}.mp4" for i in range(args.clips)]
    for i, src in enumerate(srcs):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size={args.size}:rate={args.fps}:duration={args.seconds},"
             f"noise=alls=12:allf=t:all_seed={i + 1}",
             "-f", "lavfi", "-i", f"sine=duration={args.seconds}", "-c:v", "libx264", "-crf",
             "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(src)], check=True,
        )  # fmt: skip
    batch = f"{args.clips} clips of " if args.clips > 1 else ""
    print(
        f"{batch}{args.seconds:g} s {args.size}@{args.fps} through {args.preset}, "
        f"chunks {args.chunk:g} s",
        flush=True,
    )

    def out(name: str) -> Path:
        return work / (name if args.clips > 1 else f"{name}.mp4")

    a = run("A 1 worker x 1 core, chunked", "0", srcs, out("a"), args.preset, 1, args.chunk, env)
    b = run("B 2 workers x 1 core, chunked", "0,1", srcs, out("b"), args.preset, 2, args.chunk, env)
    c = run("C 1 worker x 2 cores, chunked", "0,1", srcs, out("c"), args.preset, 1, args.chunk, env)
    d = run("D 1 worker x 1 core, whole", "0", srcs, out("d"), args.preset, 1, 0, env)
    print(f"scaling B/A: {a / b:.2f}x (target >= 1.8)")
    print(f"splitting, B against C: {c / b:.2f}x (target >= 0.95)")
    print(f"chunking, A against D: {100 * (a / d - 1):+.1f} % (target <= +5 %)")


if __name__ == "__main__":
    main()
