"""Parallel workers and chunks on this machine: scaling, the cost of splitting, and the cost
of chunking. By hand, not in CI (minutes):

    .venv/bin/python bench/parallel.py [--seconds 60] [--preset small-x265] [--size 320x180]
                                       [--clips N] [--rounds R] [--ceiling] [--keep]

Runs ``finishline process`` on one generated clip (or a batch of N) four ways, each pinned
with ``taskset``:
  A  1 worker  x 1 core,  chunked        B  2 workers x 1 core each, chunked
  C  1 worker  x 2 cores, chunked        D  1 worker  x 1 core,  unchunked
and prints wall times and the ratios the issue asks for: B/A scaling (target >= 1.8x),
B against C (splitting must cost nothing: >= 0.95x), D against A (chunking <= 5 % slower).
With ``--rounds R`` the four run R times, interleaved, and the ratios use each one's best
time. ``--ceiling`` adds E, two A runs at once, one per core: 2A/E is what two cores give
this work on this machine at all (shared caches, memory, a virtual machine's neighbours),
the ceiling for B/A; B/A over 2A/E is how much of it one clip split over two workers
gets. Quote ratios from one run of the bench: this machine is noisy.

``taskset`` alone does not hold x265 to its cores: libx265 moves its pool threads onto every
core of their NUMA node (libnuma), so a "1 core" run borrows the other core for part of its
encode (its CPU seconds exceed its wall time). ``--cpuset`` (root, cgroup v1 or v2 cpuset)
runs each configuration in a cpuset cgroup instead, which no thread can leave.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FL = ROOT / ".venv" / "bin" / "finishline"


def run(label: str, cpus: str, srcs: list[Path], out: Path, preset: str, workers: int,
        chunk: float, env: dict[str, str],
        confine: Callable[[str], list[str]]) -> float:  # fmt: skip
    # a fresh work folder each: every run indexes and assesses the clip as a new job would
    # (a shared one let later runs reuse the first run's index and assessment)
    cmd = [*confine(cpus), str(FL), "process", *map(str, srcs), "--preset", preset, "-q",
           "-o", str(out), "--overwrite", "--workers", str(workers),
           "--chunk-seconds", str(chunk), "--work", str(out.with_suffix(".work"))]  # fmt: skip
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        # this child's own resource use, with its descendants' (hosts, vspipe, x265, ffmpeg)
        _, status, use = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        dt, cpu = time.monotonic() - t0, use.ru_utime + use.ru_stime
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        sys.exit(f"{label} failed: {stderr}")
    stages = [ln.split("; ")[1] for ln in stderr.splitlines() if "; probe " in ln]
    # CPU seconds of the whole tree (hosts, vspipe, x265, ffmpeg): more than A's means the
    # work itself got slower (shared caches, memory, oversubscribed threads), not just serial
    print(f"{label:34} {dt:7.1f} s  cpu {cpu:6.1f} s   {stages[0] if len(stages) == 1 else ''}",
          flush=True)  # fmt: skip
    return dt


def taskset(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus]


def cpuset_cgroup(cpus: str) -> list[str]:
    """A command prefix that runs the command in a cpuset cgroup of ``cpus`` (made on first
    use; left for the next run)."""
    v1 = Path("/sys/fs/cgroup/cpuset")
    root = v1 if v1.is_dir() else Path("/sys/fs/cgroup")
    group = root / f"finishline-bench-{cpus.replace(',', '_')}"
    if not group.is_dir():
        if root == v1:
            group.mkdir()
            (group / "cpuset.mems").write_text((root / "cpuset.mems").read_text())
        else:  # v2: the cpuset controller enabled for the root's children
            (root / "cgroup.subtree_control").write_text("+cpuset")
            group.mkdir()
        (group / "cpuset.cpus").write_text(cpus)
    procs = group / ("tasks" if root == v1 else "cgroup.procs")
    return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fps", default="24")
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--preset", default="small-x265", help="name (tests/data/presets_ok) or .toml")
    ap.add_argument("--chunk", type=float, default=10.0, help="chunk seconds")
    ap.add_argument("--clips", type=int, default=1, help="a batch of this many clips")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of A B C D; each its best")
    ap.add_argument("--ceiling", action="store_true", help="also E: A on each core at once")
    ap.add_argument("--cpuset", action="store_true", help="confine runs with cpuset cgroups")
    ap.add_argument("--keep", action="store_true", help="keep the clips and outputs")
    args = ap.parse_args()
    confine = cpuset_cgroup if args.cpuset else taskset
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs at least 2 cores")
    work = Path(tempfile.mkdtemp(prefix="fl-parallel-"))
    done = False
    try:
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

        configs = {
            "A": ("A 1 worker x 1 core, chunked", "0", 1, args.chunk),
            "B": ("B 2 workers x 1 core, chunked", "0,1", 2, args.chunk),
            "C": ("C 1 worker x 2 cores, chunked", "0,1", 1, args.chunk),
            "D": ("D 1 worker x 1 core, whole", "0", 1, 0.0),
        }
        # rounds of A B C D, interleaved: the machine's speed drifts (up to 40 % here) and a run
        # is only slower than its configuration can be, never faster, so each takes its best
        times: dict[str, list[float]] = {k: [] for k in configs}
        for r in range(args.rounds):
            if args.rounds > 1:
                print(f"round {r + 1} of {args.rounds}", flush=True)
            for key, (label, cpus, workers, chunk) in configs.items():
                times[key].append(
                    run(
                        label,
                        cpus,
                        srcs,
                        out(f"{key.lower()}{r}"),
                        args.preset,
                        workers,
                        chunk,
                        env,
                        confine,
                    )
                )
            if args.ceiling:  # A on each core at once: what two cores give this work here
                with ThreadPoolExecutor(2) as pool:
                    pair = [
                        pool.submit(run, f"E A on core {k}, two at once", str(k), srcs,
                                    out(f"e{k}{r}"), args.preset, 1, args.chunk, env, confine)
                        for k in (0, 1)
                    ]  # fmt: skip
                    times.setdefault("E", []).append(max(f.result() for f in pair))
        a, b, c, d = (min(times[k]) for k in configs)
        if args.rounds > 1:
            print("best of each: " + ", ".join(f"{k} {min(v):.1f} s" for k, v in times.items()))
        ceiling = 2 * a / min(times["E"]) if args.ceiling else None
        if ceiling is not None:
            print(f"the machine's ceiling, 2A/E: {ceiling:.2f}x")
        print(f"scaling B/A: {a / b:.2f}x (target >= 1.8)")
        if ceiling is not None:  # what B leaves on the table: serial steps, idle cores, chunks
            print(f"B/A against the ceiling: {100 * a / b / ceiling:.0f} %")
        print(f"splitting, B against C: {c / b:.2f}x (target >= 0.95)")
        print(f"chunking, A against D: {100 * (a / d - 1):+.1f} % (target <= +5 %)")
        done = True
    finally:  # the clips and outputs (~80 MB for a 60 s clip), kept when a run failed
        if args.keep or not done:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
