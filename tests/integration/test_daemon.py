"""The daemon for real: a `finishline daemon` process, inotify on temporary folders, SQLite,
vspipe and ffmpeg children, kill -9 and SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.runtime.queue import Queue
from daemon.runtime.states import JobState
from tests.conftest import DATA, make_clip
from tests.helpers import finishline, hosts_of, streams, wait_for

BIN = Path(sys.executable).parent
PRESET = "small-x265"
SLOW = "slow-x265"  # pinned heavy denoise: an encode long enough to interrupt


class DaemonRunner:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.config = root.parent / "daemon.toml"
        self.config.write_text(
            f'root = "{root}"\nworkers = 2\nsettle_seconds = 1.0\nbatch_window = 5.0\n'
            f'presets = ["{PRESET}", "{SLOW}"]\nmax_attempts = 3\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root.parent / "daemon-stderr.log"

    @property
    def hot(self) -> Path:
        return self.root / "hot" / PRESET

    @property
    def slow(self) -> Path:
        return self.root / "hot" / SLOW

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "finishline"), "daemon", "--config", str(self.config)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        wait_for(lambda: self.hot.is_dir() and (self.root / "queue.db").exists(), 30)
        time.sleep(0.5)  # observer scheduled

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def queue(self) -> Queue:
        return Queue(self.root / "queue.db")

    def jobs(self):  # type: ignore[no-untyped-def]
        q = self.queue()
        try:
            return q.jobs()
        finally:
            q.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[DaemonRunner]:
    env = dict(os.environ)
    env["FINISHLINE_PRESETS"] = str(DATA / "presets_ok")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    r = DaemonRunner(tmp_path / "root", env)
    yield r
    if r.proc is not None:
        r.proc.kill()
        r.proc.wait()


def children_of(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,ppid,comm"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if line.split()[1] == str(pid)]


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def all_done(r: DaemonRunner, n: int) -> bool:
    jobs = r.jobs()
    return len(jobs) == n and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)


def test_slow_copy_is_taken_once_after_it_is_complete(runner: DaemonRunner, tmp_path: Path) -> None:
    runner.start()
    src = make_clip(tmp_path / "slow.mp4", size="160x90", fps="12", seconds=1.0)
    data = src.read_bytes()
    target = runner.hot / "slow.mp4"
    step = max(1, len(data) // 8)
    for i in range(0, len(data), step):  # a copy that reopens the file for every chunk
        with target.open("ab") as fh:
            fh.write(data[i : i + step])
        time.sleep(0.3)
        assert runner.jobs() == [], "taken before the copy finished"
    wait_for(lambda: all_done(runner, 1), 60, "the job")
    (job,) = runner.jobs()
    assert job.state is JobState.DONE and job.size == len(data)
    assert job.work_dir and (Path(job.work_dir) / "script.vpy").exists()  # the TUI reads it
    assert int(streams(Path(job.output))["video"]["nb_read_packets"]) == 12
    assert (runner.root / "done" / PRESET / "slow.mp4").read_bytes() == data
    assert not target.exists()
    assert runner.stop() == 0


def test_twenty_clips_dropped_at_once_all_finish(runner: DaemonRunner, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    base = make_clip(staging / "base.mp4", size="160x90", fps="12", seconds=0.5)
    names = []
    for i in range(20):  # distinct content (metadata title) so none is a duplicate
        out = staging / f"clip{i:02d}.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-i",
                str(base),
                "-c",
                "copy",
                "-metadata",
                f"title=take {i}",
                str(out),
            ],
            check=True,
        )
        names.append(out.name)
    runner.start()
    for name in names:
        os.rename(staging / name, runner.hot / name)
    wait_for(lambda: all_done(runner, 20), 240, "20 jobs")
    jobs = runner.jobs()
    assert {j.state for j in jobs} == {JobState.DONE}
    assert sorted(p.name for p in (runner.root / "out" / PRESET).glob("*.mp4")) == names
    assert len({j.batch_id for j in jobs}) == 1  # dropped together: one batch
    assert runner.stop() == 0


def test_workers_keep_their_warm_hosts_from_job_to_job(
    runner: DaemonRunner, tmp_path: Path
) -> None:
    """Four clips, one after another, on two workers: every encode runs in a worker's warm
    host (the script's libraries load once per worker, not once per clip), at most one host
    per worker; the daemon's stop takes its hosts with it."""
    runner.start()
    assert runner.proc is not None
    seen: set[int] = set()
    for i in range(4):
        # distinct lengths, so none is a duplicate of another
        make_clip(tmp_path / f"c{i}.mp4", size="160x90", fps="12", seconds=1.0 + i / 4)
        shutil.copy(tmp_path / f"c{i}.mp4", runner.hot / f"c{i}.mp4")

        def finished(n: int = i + 1) -> bool:
            seen.update(hosts_of(runner.proc.pid))
            return all_done(runner, n)

        wait_for(finished, 90, f"clip {i}")
    assert all(j.state is JobState.DONE for j in runner.jobs())
    assert 1 <= len(seen) <= 2, seen  # two workers: two hosts at most, for four jobs
    assert runner.stop() == 0
    assert not any(alive(h) for h in seen)


def test_without_hosts_each_encode_is_a_vspipe(runner: DaemonRunner, tmp_path: Path) -> None:
    """``FINISHLINE_HOSTS=0``: the workers start a vspipe per encode and no host."""
    runner.env["FINISHLINE_HOSTS"] = "0"
    runner.start()
    assert runner.proc is not None
    make_clip(tmp_path / "v.mp4", size="160x90", fps="12", seconds=1.0)
    shutil.copy(tmp_path / "v.mp4", runner.slow / "v.mp4")
    kinds: set[str] = set()
    hosts: set[int] = set()

    def finished() -> bool:
        kinds.update(line.split()[2] for line in children_of(runner.proc.pid))
        hosts.update(hosts_of(runner.proc.pid))
        return all_done(runner, 1)

    wait_for(finished, 90, "the job")
    assert runner.jobs()[0].state is JobState.DONE
    assert "vspipe" in kinds and not hosts, (kinds, hosts)
    assert runner.stop() == 0


def test_kill_9_during_encode_then_restart_finishes_exactly_once(
    runner: DaemonRunner, tmp_path: Path
) -> None:
    runner.start()
    src = make_clip(tmp_path / "long.mp4", size="640x360", fps="24", seconds=8.0)
    shutil.copy(src, runner.slow / ".long.mp4.part")
    os.rename(runner.slow / ".long.mp4.part", runner.slow / "long.mp4")

    def encoding() -> bool:
        jobs = runner.jobs()
        return bool(jobs) and jobs[0].stage == "encode" and jobs[0].frame > 0

    wait_for(encoding, 60, "the encode to start")
    pid = runner.proc.pid
    assert children_of(pid), "the encode runs in child processes"
    hosts = hosts_of(pid)
    assert hosts, "in a worker's warm host"
    runner.proc.send_signal(signal.SIGKILL)
    runner.proc.wait()
    runner.proc = None
    time.sleep(0.5)
    leftover = subprocess.run(
        ["pgrep", "-f", str(runner.root / "work")], capture_output=True, text=True
    ).stdout.split()
    assert not leftover, "children must die with the daemon"
    wait_for(lambda: not any(alive(h) for h in hosts), 10, "its warm hosts to die too")
    assert (runner.slow / "long.mp4").exists(), "the source is untouched until delivery"

    runner.start()
    wait_for(lambda: all_done(runner, 1), 180, "the re-run")
    (job,) = runner.jobs()
    assert job.state is JobState.DONE and job.attempts == 1
    outputs = list((runner.root / "out" / SLOW).glob("*.mp4"))
    assert [p.name for p in outputs] == ["long.mp4"]  # once, no partials, no -1 copies
    assert int(streams(outputs[0])["video"]["nb_read_packets"]) == 192
    assert (runner.root / "done" / SLOW / "long.mp4").exists()
    assert not (runner.slow / "long.mp4").exists()
    assert runner.stop() == 0


def test_sigterm_requeues_the_running_job(runner: DaemonRunner, tmp_path: Path) -> None:
    runner.start()
    src = make_clip(tmp_path / "term.mp4", size="640x360", fps="24", seconds=8.0)
    shutil.copy(src, runner.slow / "term.mp4")
    wait_for(lambda: runner.jobs() and runner.jobs()[0].frame > 0, 60, "the encode")
    t0 = time.monotonic()
    assert runner.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - t0 < 20
    (job,) = runner.jobs()
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert (runner.slow / "term.mp4").exists()
    assert not list((runner.root / "out" / SLOW).glob("*.mp4"))


@pytest.mark.allow_error_logs
def test_bad_files_fail_with_reports_while_a_good_clip_succeeds(
    runner: DaemonRunner, tmp_path: Path
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    make_clip(staging / "good.mp4", size="160x90", fps="12", seconds=1.0)
    (staging / "empty.mp4").write_bytes(b"")
    (staging / "notes.mp4").write_text("not a video\n" * 100)
    other = make_clip(tmp_path / "other.mp4", size="160x90", fps="24", seconds=1.0)
    (staging / "truncated.mp4").write_bytes(other.read_bytes()[: other.stat().st_size // 2])
    runner.start()
    for p in sorted(staging.iterdir()):
        os.rename(p, runner.hot / p.name)
    wait_for(lambda: all_done(runner, 4), 120, "4 jobs")
    states = {j.name: j.state for j in runner.jobs()}
    assert states == {
        "good.mp4": "done",
        "empty.mp4": "failed",
        "notes.mp4": "failed",
        "truncated.mp4": "failed",
    }
    failed = runner.root / "failed" / PRESET
    for name in ("empty.mp4", "notes.mp4", "truncated.mp4"):
        assert (failed / name).exists()
        report = (failed / f"{name}.error.txt").read_text()
        assert "What failed:" in report and "What to try:" in report
    assert (runner.root / "out" / PRESET / "good.mp4").exists()
    # the daemon is still alive and still working
    shutil.copy(other, runner.hot / "after.mp4")
    wait_for(lambda: all_done(runner, 5), 60, "a job after the failures")
    # retry goes through the queue interface: the source comes back from failed/
    res = finishline("queue", "list", "--config", str(runner.config))
    assert res.returncode == 0 and "failed" in res.stdout
    assert runner.stop() == 0


def test_same_content_twice_is_not_processed_twice(runner: DaemonRunner, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", size="160x90", fps="12", seconds=0.5)
    runner.start()
    shutil.copy(clip, runner.hot / "a.mp4")
    wait_for(lambda: all_done(runner, 1), 60, "first")
    shutil.copy(clip, runner.hot / "a-again.mp4")
    note = runner.root / "done" / PRESET / "a-again.mp4.duplicate.txt"
    wait_for(note.exists, 30, "the duplicate note")
    assert len(runner.jobs()) == 1
    assert "same content as job 1" in note.read_text()
    assert runner.stop() == 0


def test_queue_cli_pause_resume_and_priority(runner: DaemonRunner, tmp_path: Path) -> None:
    runner.start()
    cfg = ["--config", str(runner.config)]
    assert "paused" in finishline("queue", "pause", *cfg).stdout
    clip = make_clip(tmp_path / "p.mp4", size="160x90", fps="12", seconds=0.5)
    shutil.copy(clip, runner.hot / "p.mp4")
    wait_for(lambda: runner.jobs(), 30, "the job to be queued")
    time.sleep(1.5)
    (job,) = runner.jobs()
    assert job.state is JobState.QUEUED  # paused: nothing claimed
    assert (
        "priority 7" in finishline("queue", "priority", str(job.id), "--priority", "7", *cfg).stdout
    )
    finishline("queue", "resume", *cfg)
    wait_for(lambda: all_done(runner, 1), 60, "the job after resume")
    listing = finishline("queue", "list", *cfg).stdout
    assert "daemon: running" in listing and "done" in listing
    assert runner.stop() == 0


def test_a_batch_folder_with_a_manifest_is_assembled_once(
    runner: DaemonRunner, tmp_path: Path
) -> None:
    staging = tmp_path / "staging" / "reel"
    staging.mkdir(parents=True)
    make_clip(staging / "a.mp4", size="160x90", fps="12", seconds=1.0)
    make_clip(staging / "b.mp4", size="320x180", fps="12", seconds=1.0)
    (staging / "assembly.toml").write_text('order = ["b.mp4", "a.mp4"]\ncrossfade_frames = 3\n')
    runner.start()
    os.rename(staging, runner.hot / "reel")
    seq = runner.root / "out" / PRESET / "reel.mp4"
    wait_for(seq.exists, 120, "the assembled sequence")
    assert int(streams(seq)["video"]["nb_read_packets"]) == 12 + 12 - 3
    q = runner.queue()
    try:
        wait_for(lambda: q.batch(q.jobs()[0].batch_id).assembly_state == "done", 10, "state")
        batch = q.batch(q.jobs()[0].batch_id)
        assert batch.assembly_output == str(seq)
    finally:
        q.close()
    time.sleep(2)  # nothing assembles it a second time
    assert sorted(p.name for p in seq.parent.glob("reel*.mp4")) == ["reel.mp4"]
    assert (runner.root / "out" / PRESET / "reel.qc.json").exists()
    assert runner.stop() == 0
