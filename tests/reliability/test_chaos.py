"""`kill -9` chaos: a daemon killed at random moments of a batch, restarted each time, must
deliver every clip exactly once, intact, and leave nothing half-written in out/ or work/.

The default run does a few rounds; the long one (`-m slow`) twenty. The seed is printed so a
failing round can be replayed (FINISHLINE_CHAOS_SEED)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from daemon.runtime.reader import QueueReader, QueueUnavailable
from tests.conftest import DATA, make_clip
from tests.helpers import BIN, streams, wait_for

PRESET = "small-x265"


def run_chaos(tmp_path: Path, *, clips: int, rounds: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    root = tmp_path / "root"
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'root = "{root}"\nworkers = 2\nsettle_seconds = 0.5\nbatch_window = 1.0\n'
        f'chunk_seconds = 1.0\npresets = ["{PRESET}"]\nmax_attempts = 100\n'
    )
    env = {
        **os.environ,
        "FINISHLINE_PRESETS": str(DATA / "presets_ok"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    log = (tmp_path / "daemon.log").open("ab")

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [str(BIN / "finishline"), "daemon", "--config", str(config)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        wait_for(lambda: (root / "hot" / PRESET).is_dir(), 30, "the daemon to start")
        return proc

    def jobs():  # type: ignore[no-untyped-def]
        try:
            r = QueueReader(root / "queue.db")
        except QueueUnavailable:  # not made yet
            return []
        try:
            return r.jobs()
        finally:
            r.close()

    staging = tmp_path / "staging"
    staging.mkdir()
    for i in range(clips):  # some long enough to be chunked (2 s of output at 1 s chunks)
        make_clip(  # distinct bytes: the same content twice would be a duplicate, not a job
            staging / f"c{i}.mp4", size="160x90", fps="12", seconds=2.5 if i % 2 else 1.0,
            extra=("-metadata", f"title=c{i}"),
        )  # fmt: skip
    proc = start()
    for i in range(clips):
        (staging / f"c{i}.mp4").rename(root / "hot" / PRESET / f"c{i}.mp4")
    kills = 0
    for _ in range(rounds):
        try:
            wait_for(lambda: not all(j.state == "done" for j in jobs()) or not jobs(), 5)
        except AssertionError:
            break  # everything finished before this round
        proc_wait = rng.uniform(0.3, 5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=proc_wait)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = start()
    try:
        wait_for(
            lambda: len(jobs()) == clips and all(j.state == "done" for j in jobs()),
            300,
            f"every clip done (seed {seed})",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    outputs = sorted((root / "out" / PRESET).glob("*.mp4"))
    assert [p.name for p in outputs] == sorted(f"c{i}.mp4" for i in range(clips)), seed
    for out in outputs:  # intact: every frame of its source (12 fps: 1 s or 2.5 s)
        want = 30 if int(out.stem[1:]) % 2 else 12
        assert int(streams(out)["video"]["nb_read_packets"]) == want, (out, seed)
    sources = sorted(p.name for p in (root / "done" / PRESET).iterdir())
    assert sources == sorted(f"c{i}.mp4" for i in range(clips)), seed  # none lost, one each
    left_out = [p.name for p in (root / "out").rglob(".*")]
    left_work = [
        str(p.relative_to(root)) for p in (root / "work").rglob("*")
        if p.is_file() and (p.suffix in (".mov", ".mkv") or ".partial" in p.name)
    ]  # fmt: skip
    assert not left_out and not left_work, (left_out, left_work, seed)
    return {"clips": clips, "kills": kills, "delivered": len(outputs)}


def _seed() -> int:
    return int(os.environ.get("FINISHLINE_CHAOS_SEED", random.randrange(1 << 30)))


def test_kill_9_at_random_moments_delivers_each_clip_once(tmp_path: Path) -> None:
    seed = _seed()
    print(f"chaos seed {seed}")
    result = run_chaos(tmp_path, clips=4, rounds=3, seed=seed)
    print(f"chaos: {result}")


@pytest.mark.slow
def test_kill_9_twenty_rounds(tmp_path: Path) -> None:
    seed = _seed()
    print(f"chaos seed {seed}")
    result = run_chaos(tmp_path, clips=6, rounds=20, seed=seed)
    print(f"chaos: {result}")
