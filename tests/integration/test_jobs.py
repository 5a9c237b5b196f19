"""The daemon's job lifecycle, driven in-process: a real queue, real presets and the real
worker running real vspipe/ffmpeg, without a watcher (jobs are added as intake would). Covers
re-runs, retries, cancels, long names, one-frame clips, crash leftovers, full disks."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daemon.runtime.config import DaemonConfig
from daemon.runtime.housekeeping import clean_leftovers, file_given_up
from daemon.runtime.queue import Queue
from daemon.runtime.states import JobState
from daemon.runtime.worker import Worker, report_path
from tests.conftest import DATA, ffmpeg, make_clip
from tests.helpers import digest, finishline, streams, wait_for

PRESET = "small-x265"


class Harness:
    """A daemon root with a queue and one worker, jobs added the way intake adds them."""

    def __init__(self, root: Path, **cfg: object) -> None:
        self.cfg = DaemonConfig(root=root, settle_seconds=0.0, batch_window=1.0, **cfg)  # type: ignore[arg-type]
        for folder in (self.cfg.hot, self.cfg.out, self.cfg.work, self.cfg.done, self.cfg.failed):
            folder.mkdir(parents=True, exist_ok=True)
        self.queue = Queue(self.cfg.db)
        self.stop = threading.Event()
        self.worker = Worker("test:w0", self.cfg, self.queue, self.stop)

    def drop(self, src: Path, *, preset: str = PRESET, name: str | None = None) -> int:
        folder = self.cfg.hot / preset
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (name or src.name)
        shutil.copy(src, target)
        batch = self.queue.add_batch(preset, "drop-test")
        return self.queue.add_job(
            str(target), name=target.name, preset=preset, content_hash=digest(target),
            batch_id=batch,
        )  # fmt: skip

    def run_next(self) -> None:
        job = self.queue.claim_next(self.worker.name)
        assert job is not None, "nothing queued"
        self.worker.run(job)

    def job(self, job_id: int):  # type: ignore[no-untyped-def]
        job = self.queue.get(job_id)
        assert job is not None
        return job


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FINISHLINE_PRESETS", str(DATA / "presets_ok"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    h = Harness(tmp_path / "root")
    yield h
    h.queue.close()


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 160x90, 12 fps, 1 s testsrc2 clip with a sine track."""
    return make_clip(tmp_path_factory.mktemp("good") / "good.mp4", seconds=1.0)


def test_requeue_of_a_done_job_runs_it_again_and_replaces_its_output(harness, good_clip):
    job_id = harness.drop(good_clip)
    harness.run_next()
    first = harness.job(job_id)
    assert first.state is JobState.DONE
    out, src = Path(first.output), Path(first.src)
    assert src.parent == harness.cfg.done / PRESET
    old = out.stat().st_mtime_ns
    requeued = harness.queue.requeue(job_id)
    assert requeued.state is JobState.QUEUED and requeued.replace_output
    harness.run_next()
    again = harness.job(job_id)
    assert again.state is JobState.DONE and not again.replace_output
    assert Path(again.output) == out and out.stat().st_mtime_ns != old  # replaced in place
    assert Path(again.src) == src and src.exists()  # the one source stays in done/
    assert sorted(p.name for p in (harness.cfg.out / PRESET).glob("*.mp4")) == ["good.mp4"]
    assert sorted(p.name for p in src.parent.iterdir()) == ["good.mp4"]


@pytest.mark.allow_error_logs
def test_retries_keep_one_source_and_one_current_report(harness, good_clip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n" * 50)
    job_id = harness.drop(broken)
    harness.run_next()
    failed_dir = harness.cfg.failed / PRESET
    for _ in range(2):  # fails again after a retry: still one source, one report
        job = harness.job(job_id)
        assert job.state is JobState.FAILED
        assert sorted(p.name for p in failed_dir.iterdir()) == [
            "broken.mp4",
            "broken.mp4.error.txt",
        ]
        report = (failed_dir / "broken.mp4.error.txt").read_text()
        assert str(failed_dir / "broken.mp4") in report and "/hot/" not in report
        harness.queue.retry(job_id)
        harness.run_next()
    shutil.copy(good_clip, failed_dir / "broken.mp4")  # the user fixes the file, retries
    harness.queue.retry(job_id)
    harness.run_next()
    assert harness.job(job_id).state is JobState.DONE
    assert not list(failed_dir.iterdir())  # the stale report went with the source
    assert (harness.cfg.done / PRESET / "broken.mp4").exists()


def test_a_user_cancel_is_reported_as_such_and_leaves_no_stale_progress(harness, good_clip):
    job_id = harness.drop(good_clip)
    job = harness.queue.claim_next(harness.worker.name)
    harness.queue.progress(job_id, stage="encode", frame=10, total=48, fps=1.3, eta_s=30)
    harness.queue.cancel(job_id)  # running: flagged, the worker stops at its next check
    harness.worker.run(job)
    cancelled = harness.job(job_id)
    assert cancelled.state is JobState.CANCELLED
    assert (cancelled.frame, cancelled.total, cancelled.fps, cancelled.eta_s) == (0, 0, 0.0, None)
    assert "cancelled on request" in cancelled.report and "re-export" not in cancelled.report
    retried = harness.queue.retry(job_id)
    assert (retried.state, retried.frame, retried.stage) == (JobState.QUEUED, 0, "")


@pytest.mark.allow_error_logs
def test_long_names_get_reports_and_whole_batches_finish(harness, good_clip, tmp_path):
    stem = "x" * 246
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video\n")
    bad_id = harness.drop(bad, name=f"{stem}.mp4")
    harness.run_next()
    job = harness.job(bad_id)
    assert job.state is JobState.FAILED
    report = report_path(Path(job.src))
    assert report.exists() and len(report.name.encode()) <= 255
    good_id = harness.drop(good_clip, preset="small-colour", name=f"{'y' * 240}.mp4")
    harness.run_next()
    assert harness.job(good_id).state is JobState.DONE, harness.job(good_id).error


def test_a_one_frame_clip_is_delivered(harness, tmp_path):
    one = tmp_path / "one.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=12", "-frames:v", "1",
           "-pix_fmt", "yuv420p", str(one))  # fmt: skip
    job_id = harness.drop(one)
    harness.run_next()
    job = harness.job(job_id)
    assert job.state is JobState.DONE, job.error
    res = finishline("process", str(one), "--preset", PRESET, "-o", str(tmp_path / "o.mp4"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert int(streams(tmp_path / "o.mp4")["video"]["nb_read_packets"]) == 1


@pytest.mark.allow_error_logs
def test_after_a_crash_leftovers_go_and_a_crash_loop_ends_in_failed(harness, good_clip):
    out = harness.cfg.out / PRESET
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".good.partial.mp4"
    partial.write_bytes(b"half")
    work = harness.cfg.work / "good-small-x265-abc"
    work.mkdir()
    (work / "video.123.456.mov").write_bytes(b"x")
    (work / "script.vpy").write_text("# kept")
    delivered = out / "keep.mp4"
    delivered.write_bytes(b"a delivered file")
    removed = clean_leftovers(harness.cfg)
    assert sorted(p.name for p in removed) == [".good.partial.mp4", "video.123.456.mov"]
    assert delivered.exists() and (work / "script.vpy").exists()

    job_id = harness.drop(good_clip)
    for _ in range(3):  # three hard kills while it ran
        harness.queue.claim_next("dead")
        recovered = harness.queue.recover()
    assert harness.job(job_id).state is JobState.FAILED
    file_given_up(harness.cfg, harness.queue, recovered)
    job = harness.job(job_id)
    src = Path(job.src)
    assert src.parent == harness.cfg.failed / PRESET and src.exists()
    assert not list((harness.cfg.hot / PRESET).iterdir())  # the next start will not queue it
    assert "interrupted" in report_path(src).read_text() and job.report


def test_a_matroska_output_with_audio_passes_qc(tmp_path, good_clip, monkeypatch):
    folder = tmp_path / "presets"
    folder.mkdir()
    text = (DATA / "presets_ok" / "small-x265.toml").read_text()
    (folder / "small-mkv.toml").write_text(text.replace('container = "mp4"', 'container = "mkv"'))
    monkeypatch.setenv("FINISHLINE_PRESETS", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = finishline(
        "process", str(good_clip), "--preset", "small-mkv", "-o", str(tmp_path / "o.mkv")
    )
    assert res.returncode == 0, res.stderr
    assert streams(tmp_path / "o.mkv")["audio"]["codec_name"] == "aac"


def test_a_loose_clip_waits_only_the_short_window_and_says_so(harness, good_clip):
    job_id = harness.drop(good_clip, preset="small-colour")
    job = harness.queue.claim_next(harness.worker.name)
    seen: list[tuple[str, str | None]] = []
    t = threading.Thread(target=harness.worker.run, args=(job,))
    t0 = time.monotonic()
    t.start()
    while t.is_alive():
        j = harness.job(job_id)
        seen.append((j.stage, j.note))
        time.sleep(0.05)
    t.join()
    assert harness.job(job_id).state is JobState.DONE
    notes = [n for s, n in seen if s == "batching"]
    assert notes and "waiting for more clips" in notes[0] and "until" in notes[0]
    assert time.monotonic() - t0 < 60


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return res.returncode == 0


@pytest.mark.allow_error_logs
def test_a_full_disk_fails_cleanly_and_retry_works_once_space_is_free(
    tmp_path, good_clip, monkeypatch
):
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "3m"):
        pytest.skip(
            "cannot mount a tmpfs here (needs root and mount); the full-disk case is untested"
        )
    try:
        monkeypatch.setenv("FINISHLINE_PRESETS", str(DATA / "presets_ok"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        h = Harness(small / "root")
        job_id = h.drop(good_clip)
        filler = small / "filler"
        with filler.open("wb") as fh, pytest.raises(OSError):  # leave almost nothing free
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        runner = threading.Thread(target=h.worker.run_forever, kwargs={"idle": 0.2})
        runner.start()  # the daemon's worker loop: it must survive the full disk
        try:
            time.sleep(8)
            assert runner.is_alive()
            filler.unlink()  # space again: a held job finishes; a failed one can be retried

            def settled() -> bool:
                return h.job(job_id).state in (JobState.DONE, JobState.FAILED)

            wait_for(settled, 120, "the worker to settle the job")
            job = h.job(job_id)
            print(f"disk full: the job ended {job.state} ({job.error or 'no error'})")
            assert Path(job.src).exists(), "the database says where the source is"
            if job.state is JobState.FAILED:
                assert report_path(Path(job.src)).exists() or job.report
                h.queue.retry(job_id)
                wait_for(lambda: h.job(job_id).state is JobState.DONE, 120, "the retry")
        finally:
            h.stop.set()
            runner.join(timeout=60)
        assert h.job(job_id).state is JobState.DONE
        h.queue.close()
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
