"""Parallel workers and chunks on this machine: scaling, the cost of splitting, and the cost
of chunking. By hand, not in CI (minutes):

    .venv/bin/python bench/parallel.py [--seconds 60] [--preset small-x265] [--size 320x180]

Runs ``finishline process`` on one generated clip four ways, each pinned with ``taskset``:
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


def run(label: str, cpus: str, src: Path, out: Path, preset: str, workers: int, chunk: float,
        env: dict[str, str]) -> float:  # fmt: skip
    # a fresh work folder each: every run indexes and assesses the clip as a new job would
    # (a shared one let later runs reuse the first run's index and assessment)
    cmd = ["taskset", "-c", cpus, str(FL), "process", str(src), "--preset", preset, "-q",
           "-o", str(out), "--overwrite", "--workers", str(workers),
           "--chunk-seconds", str(chunk), "--work", str(out.with_suffix(".work"))]  # fmt: skip
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.monotonic() - t0
    if res.returncode != 0:
        sys.exit(f"{label} failed: {res.stderr}")
    stages = next((ln.split("; ")[1] for ln in res.stderr.splitlines() if "; probe " in ln), "")
    print(f"{label:34} {dt:7.1f} s   {stages.strip()}", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", default="24")
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--preset", default="small-x265", help="name (tests/data/presets_ok) or .toml")
    ap.add_argument("--chunk", type=float, default=10.0, help="chunk seconds")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs at least 2 cores")
    work = Path(tempfile.mkdtemp(prefix="fl-parallel-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"),
           "FINISHLINE_PRESETS": str(ROOT / "tests" / "data" / "presets_ok")}  # fmt: skip
    src = work / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={args.size}:rate={args.fps}:duration={args.seconds},noise=alls=12:allf=t",
         "-f", "lavfi", "-i", f"sine=duration={args.seconds}", "-c:v", "libx264", "-crf", "30",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(src)], check=True,
    )  # fmt: skip
    print(
        f"{args.seconds:g} s {args.size}@{args.fps} through {args.preset}, chunks {args.chunk:g} s"
    )
    a = run(
        "A 1 worker x 1 core, chunked", "0", src, work / "a.mp4", args.preset, 1, args.chunk, env
    )
    b = run(
        "B 2 workers x 1 core, chunked", "0,1", src, work / "b.mp4", args.preset, 2, args.chunk, env
    )
    c = run(
        "C 1 worker x 2 cores, chunked", "0,1", src, work / "c.mp4", args.preset, 1, args.chunk, env
    )
    d = run("D 1 worker x 1 core, whole", "0", src, work / "d.mp4", args.preset, 1, 0, env)
    print(f"scaling B/A: {a / b:.2f}x (target >= 1.8)")
    print(f"splitting, B against C: {c / b:.2f}x (target >= 0.95)")
    print(f"chunking, A against D: {100 * (a / d - 1):+.1f} % (target <= +5 %)")


if __name__ == "__main__":
    main()
