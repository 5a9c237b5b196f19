"""Intake against a real queue and real files: names that are not UTF-8, FIFOs and links to
devices, writers that close and reopen, live presets, and one daemon per root."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.runtime import running
from daemon.runtime.intake import Intake, NotRegularFile, Pending, content_hash
from daemon.runtime.queue import Queue
from daemon.runtime.reader import QueueReader
from daemon.runtime.service import PresetWatch, judge_presets
from daemon.runtime.watcher import make_observer
from tests.conftest import DATA, make_clip
from tests.helpers import wait_for

BIN = Path(sys.executable).parent
PRESET = "small-x265"
BAD_NAME = b"bad\xff.mp4"


# -- direct: an Intake on a real queue -------------------------------------------------------------


class Rig:
    """An :class:`Intake` on ``tmp_path`` with one preset folder, polled like the daemon's main
    loop (each poll must return quickly: the main thread never waits on a file)."""

    def __init__(self, root: Path, *, settle: float = 0.3) -> None:
        self.root = root
        self.hot = root / "hot"
        self.folder = self.hot / "P"
        self.folder.mkdir(parents=True)
        self.queue = Queue(root / "queue.db")
        self.intake = Intake(
            self.queue,
            self.hot,
            settle_seconds=settle,
            batch_window=5.0,
            max_attempts=3,
            presets={"P"},
        )
        self.ids: list[int] = []
        self.slowest = 0.0

    def poll(self) -> list[int]:
        t0 = time.monotonic()
        new = self.intake.poll()
        self.slowest = max(self.slowest, time.monotonic() - t0)
        self.ids += new
        return new

    def poll_for(self, seconds: float, until: Callable[[], object] | None = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll()
            if until is not None and until():
                return
            time.sleep(0.05)
        if until is not None:
            raise AssertionError(f"not reached within {seconds} s")

    def names(self) -> list[str]:
        return sorted(j.name for j in self.queue.jobs())

    def close(self) -> None:
        self.intake.close()
        self.queue.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path / "root")
    yield r
    r.close()


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


def test_the_settle_clock_ignores_close_events_and_restarts_on_every_event() -> None:
    p = Pending(-1, -1.0, 0.0)
    p.observe(100, 1.0, now=10.0)
    assert not p.settled(10.5, settle=3.0)  # no close shortcut
    p.touch(12.0)  # closed and reopened: an event restarts the clock
    assert not p.settled(14.9, settle=3.0) and p.settled(15.0, settle=3.0)


def test_a_name_that_is_not_utf8_is_reported_once_and_left_alone(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bad = os.path.join(os.fsencode(rig.folder), BAD_NAME)
    with open(bad, "wb") as fh:
        fh.write(b"\0" * 1000)
    (rig.folder / "good.mp4").write_bytes(b"\1" * 1000)
    assert rig.intake.scan() == 2
    rig.poll_for(5, until=lambda: rig.ids)
    for _ in range(3):  # more events for it: still one report
        rig.intake.notice(os.fsdecode(bad))
        rig.poll_for(0.5)
    assert rig.names() == ["good.mp4"]
    assert len(warnings_about(caplog, r"P/bad\xff.mp4")) == 1
    assert "not valid UTF-8" in warnings_about(caplog, r"bad\xff")[0]
    assert os.path.exists(bad)
    assert list(rig.intake.problems()) == [r"P/bad\xff.mp4"]


@pytest.mark.timeout(60)
def test_fifos_devices_and_links_out_of_the_tree_are_refused_without_blocking(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.mkfifo(rig.folder / "p.mp4")
    os.symlink("/dev/zero", rig.folder / "zero.mp4")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"\2" * 1000)
    os.symlink(outside, rig.folder / "out.mp4")
    os.symlink(rig.folder / "missing.mp4", rig.folder / "broken.mp4")
    os.mkfifo(rig.folder / ".fifo")
    os.symlink(rig.folder / ".fifo", rig.folder / "tofifo.mp4")  # a link in the tree
    (rig.folder / "good.mp4").write_bytes(b"\1" * 1000)
    rig.intake.scan()
    rig.poll_for(5, until=lambda: rig.ids)
    refused = ("p.mp4", "zero.mp4", "out.mp4", "broken.mp4", "tofifo.mp4")
    for name in refused:
        rig.intake.notice(rig.folder / name)
    rig.poll_for(1.0)
    assert rig.names() == ["good.mp4"]
    assert rig.slowest < 0.5, f"a poll took {rig.slowest:.2f} s"
    assert "a FIFO" in warnings_about(caplog, "P/p.mp4")[0]
    assert "links to /dev/zero, outside" in warnings_about(caplog, "P/zero.mp4")[0]
    assert "outside its hot folder" in warnings_about(caplog, "P/out.mp4")[0]
    assert "link to nothing" in warnings_about(caplog, "P/broken.mp4")[0]
    assert "a FIFO" in warnings_about(caplog, "P/tofifo.mp4")[0]
    for name in refused:
        assert len(warnings_about(caplog, f"P/{name}")) == 1, name
    # a FIFO replaced by a regular file is taken
    os.unlink(rig.folder / "p.mp4")
    (rig.folder / "p.mp4").write_bytes(b"\3" * 1000)
    rig.intake.notice(rig.folder / "p.mp4")
    rig.poll_for(5, until=lambda: len(rig.ids) == 2)
    assert rig.names() == ["good.mp4", "p.mp4"]


@pytest.mark.timeout(30)
def test_hashing_a_fifo_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "f.mp4"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match="a FIFO"):
        content_hash(fifo)  # opened O_NONBLOCK and refused by fstat before any read


@pytest.mark.allow_error_logs
def test_an_unexpected_error_on_one_file_never_leaves_poll(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_add = rig.queue.add_job
    calls = []

    def flaky(*args: object, **kwargs: object) -> int:
        calls.append(args)
        if len(calls) <= 3:
            raise RuntimeError("disk on fire")
        return real_add(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.queue, "add_job", flaky)
    (rig.folder / "a.mp4").write_bytes(b"\1" * 1000)
    rig.intake.scan()
    rig.poll_for(10, until=lambda: rig.ids)  # never raises; tried again and taken
    assert rig.names() == ["a.mp4"] and len(calls) == 4
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "a.mp4" in errors[0].getMessage()


@pytest.mark.timeout(60)
def test_a_writer_that_closes_and_reopens_is_taken_once_when_still(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    r = Rig(tmp_path / "root", settle=1.2)
    observer = make_observer(r.hot, r.intake, polling=False)  # real close events
    observer.start()
    try:
        target = r.folder / "upload.mp4"
        chunks = [bytes([i]) * 9000 for i in range(6)]

        def writer() -> None:
            for chunk in chunks:  # open, write, close, pause shorter than the settle time
                with target.open("ab") as fh:
                    fh.write(chunk)
                time.sleep(0.6)

        t = threading.Thread(target=writer)
        t.start()
        while t.is_alive():
            assert r.poll() == [], "taken while the writer was still writing"
            time.sleep(0.05)
        r.poll_for(5, until=lambda: r.ids)
        (job,) = r.queue.jobs()
        assert job.size == 6 * 9000
        # a change after it was queued: not a second job while the first is queued
        with target.open("ab") as fh:
            fh.write(b"late")
        r.poll_for(3.0)
        assert [j.id for j in r.queue.jobs()] == [job.id]
        noted = [m.getMessage() for m in caplog.records if "changed after" in m.getMessage()]
        assert len(noted) == 1 and f"job {job.id}" in noted[0]
    finally:
        observer.stop()
        observer.join(5)
        r.close()


# -- presets, live ---------------------------------------------------------------------------------


@pytest.fixture
def preset_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "presets"
    shutil.copytree(DATA / "presets_ok", folder)
    monkeypatch.setenv("FINISHLINE_PRESETS", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return folder


def test_judge_presets_names_each_hot_folder_problem() -> None:
    found = {"a": Path("a.toml"), "b": Path("b.toml"), "c": Path("c.toml")}
    valid, problems = judge_presets(
        ["a", "b"], found, {"b": "bad key"}, ["a", "b", "z", ".trash"], configured=False
    )
    assert valid == {"a"}
    assert set(problems) == {"b", "z"}
    assert "bad key" in problems["b"] and "no preset named 'z'" in problems["z"]
    valid, problems = judge_presets(["a", "x"], found, {}, ["c"], configured=True)
    assert valid == {"a"} and "does not exist" in problems["x"]
    assert "daemon.toml" in problems["c"]


def test_presets_are_picked_up_live_and_problems_reported_once(
    preset_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hot, out = tmp_path / "root" / "hot", tmp_path / "root" / "out"
    watch = PresetWatch(hot, out)
    watch.refresh()
    assert PRESET in watch.valid and (hot / PRESET).is_dir() and (out / PRESET).is_dir()
    shutil.copy(preset_env / f"{PRESET}.toml", preset_env / "fresh.toml")
    assert watch.refresh() == ({"fresh"}, set())
    assert (hot / "fresh").is_dir() and (out / "fresh").is_dir()
    (preset_env / "broken.toml").write_text("[encode]\ncodec = 42\n")
    (hot / "typo").mkdir()
    for _ in range(3):
        watch.refresh()
    assert "broken" not in watch.valid and not (hot / "broken").exists()
    assert len(warnings_about(caplog, "hot folder broken")) == 1
    assert len(warnings_about(caplog, "hot folder typo")) == 1
    assert set(watch.problems) == {"broken", "typo"}
    (preset_env / "fresh.toml").rename(preset_env / "fresh2.toml")  # renamed
    assert watch.refresh() == ({"fresh2"}, {"fresh"})
    assert "no preset named 'fresh'" in watch.problems["fresh"]
    (preset_env / "broken.toml").unlink()
    watch.refresh()
    assert set(watch.problems) == {"typo", "fresh"}


def test_intake_problems_are_stored_for_the_tui(tmp_path: Path) -> None:
    q = Queue(tmp_path / "queue.db")
    try:
        assert q.intake_problems() == {}
        q.set_intake_problems({"hot/typo": "no preset named 'typo'"})
    finally:
        q.close()
    reader = QueueReader(tmp_path / "queue.db")
    try:
        assert reader.intake_problems() == {"hot/typo": "no preset named 'typo'"}
    finally:
        reader.close()


# -- one daemon per root ---------------------------------------------------------------------------


def test_a_root_is_locked_while_held_and_free_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "run").mkdir()
    root = tmp_path / "root"
    lock = running.acquire(root)
    try:
        assert running.running_roots() == [root]
        with pytest.raises(running.DaemonAlreadyRunning, match=f"pid {os.getpid()} on "):
            running.acquire(root)
    finally:
        lock.release()
    assert running.running_roots() == []
    assert not list((tmp_path / "run" / "finishline").iterdir())
    running.acquire(root).release()  # free again


def daemon_env(tmp_path: Path, presets: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FINISHLINE_PRESETS"] = str(presets)
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache")):
        env[var] = str(tmp_path / sub)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    (tmp_path / "run").mkdir(exist_ok=True)
    return env


def start_daemon(root: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "finishline"), "daemon", "--root", str(root), "--settle", "0.5"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


def beating(root: Path, pid: int) -> bool:
    if not (root / "queue.db").exists():
        return False
    q = QueueReader(root / "queue.db")
    try:
        alive, beat_pid, _ = q.daemon_status(stale_after=1.0)
    finally:
        q.close()
    return alive and beat_pid == pid


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_second_daemon_on_one_root_refuses_and_a_crashed_one_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: list[subprocess.Popen[bytes]]
) -> None:
    env = daemon_env(tmp_path, DATA / "presets_ok")
    monkeypatch.setenv("XDG_RUNTIME_DIR", env["XDG_RUNTIME_DIR"])
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    root = tmp_path / "root"
    first = start_daemon(root, env, tmp_path / "first.log")
    procs.append(first)
    wait_for(lambda: beating(root, first.pid), 60, "the first daemon")
    assert running.running_roots() == [root]
    second = subprocess.run(
        [str(BIN / "finishline"), "daemon", "--root", str(root), "--settle", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1, second.stderr  # one sentence
    assert f"pid {first.pid} on " in second.stderr and "already running" in second.stderr
    assert first.poll() is None and beating(root, first.pid)  # untouched
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert running.running_roots() == []  # the kernel dropped the lock with the process
    third = start_daemon(root, env, tmp_path / "third.log")
    procs.append(third)
    wait_for(lambda: beating(root, third.pid), 60, "a daemon after the crash")
    log = root / "logs" / "finishline.log"
    wait_for(lambda: log.read_text().count("finishline daemon: root") == 2, 30, "its start")
    assert running.running_roots() == [root]
    third.send_signal(signal.SIGTERM)
    assert third.wait(timeout=30) == 0
    assert running.running_roots() == []
    assert not list((tmp_path / "run" / "finishline").glob("daemon-*.json"))


def test_the_daemon_survives_bad_files_and_takes_new_presets_live(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    presets = tmp_path / "presets"
    shutil.copytree(DATA / "presets_ok", presets)
    env = daemon_env(tmp_path, presets)
    root = tmp_path / "root"
    q = Queue(root / "queue.db")
    q.pause()  # nothing is encoded: this is about intake
    daemon = start_daemon(root, env, tmp_path / "daemon.log")
    procs.append(daemon)
    try:
        wait_for(lambda: beating(root, daemon.pid), 60, "the daemon")
        hot = root / "hot" / PRESET
        os.mkfifo(hot / "p.mp4")
        os.symlink("/dev/zero", hot / "zero.mp4")
        with open(os.path.join(os.fsencode(hot), BAD_NAME), "wb") as fh:
            fh.write(b"\0" * 100)
        clip = make_clip(tmp_path / "c.mp4", size="160x90", fps="12", seconds=0.5)
        shutil.copy(clip, hot / "good.mp4")
        wait_for(lambda: q.jobs(), 30, "the good clip to be queued")
        time.sleep(1.0)
        assert beating(root, daemon.pid), "the heartbeat stopped"
        shutil.copy(presets / f"{PRESET}.toml", presets / "fresh.toml")
        wait_for((root / "hot" / "fresh").is_dir, 30, "the new preset's hot folder")
        shutil.copy(clip, root / "hot" / "fresh" / "good.mp4")
        wait_for(lambda: len(q.jobs()) == 2, 30, "a clip in the new preset's folder")
        (presets / "broken.toml").write_text("[encode]\ncodec = 42\n")
        wait_for(lambda: "hot/broken" in q.intake_problems(), 30, "the broken preset")
        time.sleep(4.5)  # a few more refreshes
        assert daemon.poll() is None and beating(root, daemon.pid)
        assert {j.preset for j in q.jobs()} == {PRESET, "fresh"}
        problems = q.intake_problems()
        assert {f"hot/{PRESET}/p.mp4", f"hot/{PRESET}/zero.mp4"} <= set(problems)
        assert rf"hot/{PRESET}/bad\xff.mp4" in problems
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        q.close()
    log = (root / "logs" / "finishline.log").read_text(encoding="utf-8")
    for name in ("p.mp4", "zero.mp4", r"bad\xff.mp4"):
        assert log.count(f"not taking {PRESET}/{name}") == 1, name
    assert log.count("hot folder broken:") == 1
    assert "Traceback" not in log
