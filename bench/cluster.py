"""Chunks on a Ray cluster against the local engine, on one machine. By hand, not in CI
(minutes; needs Ray: pip install 'finishline[ray]'):

    .venv/bin/python bench/cluster.py [--seconds 8] [--preset slow-x265] [--size 320x180]

1. Overhead per chunk: one clip cut into chunks of 2 frames (the work in a chunk is next to
   nothing, so its wall time is what a chunk costs), run by one local worker (a vspipe and an
   encoder per chunk) and by one Ray slot (a placement, two actor calls, the script run in the
   warm actor, an encoder). Target: Ray's extra cost <= 0.5 s per chunk.
2. Throughput: the same clip in 1 s chunks of real work on a simulated cluster of 1 node,
   then 2 nodes, one CPU each (every node on 127.0.0.1; the actors and their encoders keep to
   one thread). Target: >= 1.8x. The head's own stages (probe, script check, join, mux,
   verify) do not scale; the encode stage is reported alone too.
3. The same on a batch of ``--clips`` such clips, run as ``finishline process`` runs a batch
   (up to one clip in flight per slot, so one clip's head stages overlap another's chunks).

Only 127.0.0.1 is used (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on the loopback).
Quote figures from one run: this machine is noisy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MB = 1024 * 1024


def make_clip(path: Path, seconds: float, size: str, fps: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate={fps}:duration={seconds},noise=alls=12:allf=t",
         "-an", "-c:v", "libx264", "-crf", "30", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def finish(preset: str, src: Path, out: Path, work: Path, seconds: float, pool=None):  # type: ignore[no-untyped-def]
    """One run; returns (wall s, encode stage s, chunks)."""
    wall, encodes, chunks = finish_batch(preset, [src], out.parent, work, seconds, pool, out.stem)
    return wall, encodes[0], chunks


def finish_batch(preset: str, srcs: list[Path], folder: Path, work: Path, seconds: float,
                 pool=None, name: str = "batch"):  # type: ignore[no-untyped-def]  # fmt: skip
    """The clips as ``process`` runs a batch: up to one clip in flight per slot, each clip's
    chunks placed on the slots. Returns (wall s, each clip's encode stage s, chunks)."""
    from concurrent.futures import ThreadPoolExecutor

    from daemon.engine.chunks import ChunkStore
    from daemon.engine.finish import Engine
    from daemon.engine.pipeline import Chunking
    from daemon.engine.presets import find_preset

    store = ChunkStore(work / f"{name}.db")
    engine = Engine(find_preset(preset), work_root=work / name, threads=1)
    slots = pool.slots({}) if pool else 1
    extra = {"place": pool.placer(), "always": True, "workers": slots} if pool else {}
    counted: list[int] = []
    done = store.done
    store.done = lambda row: (counted.append(row.index), done(row))[-1]  # type: ignore[method-assign]

    def one(src: Path) -> float:
        chunking = Chunking(store=store, job=f"{name}-{src.stem}", seconds=seconds, **extra)
        out = folder / (name + ".mp4" if len(srcs) == 1 else f"{name}-{src.stem}.mp4")
        result = engine.finish(src, out, chunking=chunking, overwrite=True)
        return next(t.seconds for t in result.timings if t.stage == "encode")

    t0 = time.monotonic()
    with ThreadPoolExecutor(max(1, min(slots, len(srcs)))) as clips:
        encodes = list(clips.map(one, srcs))
    wall = time.monotonic() - t0
    store.close()
    return wall, encodes, len(counted)


def cluster(nodes: int):  # type: ignore[no-untyped-def]
    import ray
    from ray.cluster_utils import Cluster

    node = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 80 * MB}
    c = Cluster(
        initialize_head=True, connect=True, head_node_args={**node, "include_dashboard": False}
    )
    for _ in range(nodes - 1):
        c.add_node(**node)
    c.wait_for_nodes()
    return ray, c


def pool_on_cluster():  # type: ignore[no-untyped-def]
    from daemon.runtime.cluster import ClusterPool
    from daemon.runtime.config import ClusterConfig

    pool = ClusterPool(ClusterConfig(engine="ray", cpus_per_slot=1))
    pool.connect()
    return pool


def pin(pool) -> None:  # type: ignore[no-untyped-def]
    """Each actor (every thread of it, so the encoders it starts too) on a core of its own:
    Ray's ``num_cpus`` is only bookkeeping. Reads the pool's members (a bench may)."""
    cores = sorted(os.sched_getaffinity(0))
    for i, m in enumerate(pool._members):
        pid = m.info["pid"]
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), {cores[i % len(cores)]})


def ray_share(pool, n: int = 50) -> float:  # type: ignore[no-untyped-def]
    """Seconds Ray itself adds to a chunk: a placement and a release, the run call's and one
    progress call's round trips (measured with a call that does nothing)."""
    import ray

    t0 = time.monotonic()
    for _ in range(n):
        with pool.placer()(lambda: False):
            handle = pool._members[0].handle
            ray.get(handle.progress.remote())
            ray.get(handle.progress.remote())
    return (time.monotonic() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fps", default="24")
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--preset", default="slow-x265", help="name (tests/data/presets_ok) or .toml")
    ap.add_argument("--clips", type=int, default=4, help="clips in the batch of part 3")
    args = ap.parse_args()
    os.environ["FINISHLINE_PRESETS"] = str(ROOT / "tests" / "data" / "presets_ok")
    os.environ["FINISHLINE_THREADS"] = "1"
    work = Path(tempfile.mkdtemp(prefix="fl-cluster-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    src = make_clip(work / "clip.mp4", args.seconds, args.size, args.fps)
    batch = [make_clip(work / f"b{i}.mp4", args.seconds, args.size, args.fps)
             for i in range(args.clips)]  # fmt: skip
    tiny = 2 / float(args.fps)  # two frames per chunk

    print(f"{args.seconds:g} s {args.size}@{args.fps} through {args.preset}", flush=True)
    _, local_enc, n = finish(args.preset, src, work / "local-tiny.mp4", work, tiny)
    print(f"1. local, 1 worker: {n} chunks of 2 frames, encode {local_enc:.1f} s "
          f"= {local_enc / n:.3f} s per chunk", flush=True)  # fmt: skip

    ray, c = cluster(1)
    try:
        pool = pool_on_cluster()
        finish(args.preset, src, work / "warm.mp4", work, 0, pool)  # the actor starts
        pin(pool)
        print(f"   Ray's own share of a chunk (placement, calls): {ray_share(pool):.4f} s")
        _, ray_enc, n = finish(args.preset, src, work / "ray-tiny.mp4", work, tiny, pool)
        extra = (ray_enc - local_enc) / n
        print(f"   Ray, 1 slot:      {n} chunks of 2 frames, encode {ray_enc:.1f} s "
              f"= {ray_enc / n:.3f} s per chunk; Ray's extra cost {extra:+.3f} s per chunk "
              "(target <= 0.5)", flush=True)  # fmt: skip
        one = finish(args.preset, src, work / "one.mp4", work, 1.0, pool)
        one_b = finish_batch(args.preset, batch, work, work, 1.0, pool, "one-batch")
        pool.close()
    finally:
        ray.shutdown()
        c.shutdown()

    ray, c = cluster(2)
    try:
        pool = pool_on_cluster()
        finish(args.preset, src, work / "warm3.mp4", work, 1.0, pool)  # both actors up
        pin(pool)
        two = finish(args.preset, src, work / "two.mp4", work, 1.0, pool)
        two_b = finish_batch(args.preset, batch, work, work, 1.0, pool, "two-batch")
        pool.close()
    finally:
        ray.shutdown()
        c.shutdown()
    print(f"2. 1 node:  {one[2]} chunks, wall {one[0]:.1f} s, encode {one[1]:.1f} s")
    print(f"   2 nodes: {two[2]} chunks, wall {two[0]:.1f} s, encode {two[1]:.1f} s")
    print(f"   throughput 2 nodes / 1 node: {one[0] / two[0]:.2f}x wall, "
          f"{one[1] / two[1]:.2f}x encode (target >= 1.8)")  # fmt: skip
    print(f"3. a batch of {len(batch)} such clips, up to one in flight per slot: 1 node "
          f"{one_b[0]:.1f} s, 2 nodes {two_b[0]:.1f} s: {one_b[0] / two_b[0]:.2f}x "
          "(target >= 1.8)")  # fmt: skip


if __name__ == "__main__":
    main()
