"""Chunked encoding for real: a chunked run is the unchunked picture frame for frame, workers'
children run in their own device slots, and a daemon killed mid-job redoes only the chunks in
flight."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daemon.analysis import grading
from daemon.engine.presets import find_preset
from daemon.runtime.reader import QueueReader
from daemon.runtime.states import JobState
from tests.conftest import ffmpeg, make_clip
from tests.helpers import BIN, finishline, frame_hashes, streams, timestamps, wait_for
from tests.helpers import hosts_of as daemon_hosts


def cut_clip(path: Path, seconds: float = 1.5) -> Path:
    """testsrc2 then mandelbrot (a scene cut at ``seconds``), 160x90 at 12 fps, with a sine."""
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=12:duration={seconds}",
        "-f", "lavfi", "-i", "mandelbrot=size=160x90:rate=12",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={2 * seconds}",
        "-filter_complex",
        f"[1:v]trim=duration={seconds},setpts=PTS-STARTPTS[b];[0:v][b]concat=n=2:v=1:a=0[v]",
        "-map", "[v]", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", str(path),
    )  # fmt: skip
    return path


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env


def test_a_chunked_run_is_the_unchunked_picture(tmp_path: Path, env: dict[str, str]) -> None:
    """Lossless preset with the exposure stabiliser (±4 frames of context) and a scene cut:
    ten chunks by two workers give the same frames and timestamps as one piece."""
    src = cut_clip(tmp_path / "cut.mp4")
    whole, chunked = tmp_path / "whole.mkv", tmp_path / "chunked.mkv"
    common = ["--preset", "small-colour", "-q"]
    res = finishline(
        "process", str(src), *common, "-o", str(whole), "--chunk-seconds", "0", env=env
    )
    assert res.returncode == 0, res.stderr
    res = finishline(
        "-v", "process", str(src), *common, "-o", str(chunked), "--chunk-seconds", "1",
        "--workers", "2", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # 36 frames cut at 18 (the scene cut); two workers share them, so 1 s (12 frames) chunks
    # become chunks of 4-5 frames, the last of each worker's half halved (2 frames), each
    # reading 4 frames of context either side
    assert "10 chunks" in res.stderr
    assert frame_hashes(chunked) == frame_hashes(whole) and len(frame_hashes(whole)) == 36
    assert timestamps(chunked) == timestamps(whole)
    leftovers = [p.name for p in (tmp_path / "cache").rglob("chunks/*") if p.is_file()]
    assert not leftovers
    # the assessment's one decoding pass gave the cut and the index both runs' scripts read
    assert not list((tmp_path / "cache").rglob("index/*.bsindex"))
    assert len(list((tmp_path / "cache").rglob("batch-*/cut.*.source.0.bsindex"))) == 1


def test_the_assessment_finds_every_shot_start(tmp_path: Path) -> None:
    src = cut_clip(tmp_path / "cut.mp4", seconds=1.0)
    twice = tmp_path / "twice.mp4"  # cuts at 1.0 (inside the clip) and 2.0 (the copy)
    ffmpeg("-i", str(src), "-i", str(src), "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]",
           "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", str(twice))  # fmt: skip
    st = grading.analyse_clip(
        str(twice), matrix=1, transfer=1, primaries=1, color_range=0, index=str(tmp_path / "ix")
    )
    assert st.cuts == [1.0, 2.0, 3.0] and st.cut_at == 12
    assert (tmp_path / "ix.0.bsindex").is_file()


def test_lossy_chunks_keep_the_rate_and_every_timestamp(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """x265 chunks of 10 frames at 12 fps (their container durations are not exact): joined,
    the rate is 12/1 and the frames' times are the unchunked run's."""
    src = make_clip(tmp_path / "c.mp4", size="160x90", fps="12", seconds=2.5)
    outs = {}
    for name, seconds in (("whole", "0"), ("chunked", "1")):
        outs[name] = tmp_path / f"{name}.mp4"
        res = finishline(
            "process", str(src), "--preset", "small-x265", "-q", "-o", str(outs[name]),
            "--chunk-seconds", seconds, env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
    v = streams(outs["chunked"])["video"]
    assert (v["r_frame_rate"], int(v["nb_read_packets"])) == ("12/1", 30)
    assert sorted(map(float, timestamps(outs["chunked"]))) == sorted(
        map(float, timestamps(outs["whole"]))
    )


def running_slots(proc: subprocess.Popen[bytes], env: dict[str, str]) -> list[dict[str, str]]:
    """Until ``proc`` ends: at each look, the encoders running (of this test's environment;
    an encoder has the environment of the slot it encodes in), as CUDA_VISIBLE_DEVICES ->
    FINISHLINE_THREADS."""
    looks: list[dict[str, str]] = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        now: dict[str, str] = {}
        for pid in subprocess.run(["pgrep", "-f", "yuv4mpegpipe -i -"], capture_output=True,
                                  text=True).stdout.split():  # fmt: skip
            try:
                raw = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            child = dict(
                x.split("=", 1) for x in raw.decode(errors="replace").split("\0") if "=" in x
            )
            if child.get("XDG_RUNTIME_DIR") == env["XDG_RUNTIME_DIR"]:
                now[child.get("CUDA_VISIBLE_DEVICES", "?")] = child.get("FINISHLINE_THREADS", "?")
        looks.append(now)
        time.sleep(0.1)
    return looks


def test_each_worker_runs_in_its_own_slot(tmp_path: Path, env: dict[str, str]) -> None:
    """Two (pinned) GPUs, the run itself started with CUDA_VISIBLE_DEVICES=5,7 (the others
    left to other work): three workers asked, two run (one per GPU, said so), and each slot's
    children see their own GPU of the two, 5 or 7, and a thread budget; the budgets add up
    to the cores. (No GPU is needed: torch finds none behind either id and runs on the
    CPU.)"""
    src = make_clip(tmp_path / "long.mp4", size="320x180", fps="24", seconds=4.0)
    env = {**env, "FINISHLINE_GPUS": "2", "CUDA_VISIBLE_DEVICES": "5,7"}
    proc = subprocess.Popen(
        [str(BIN / "finishline"), "process", str(src), "--preset", "slow-x265", "-q",
         "-o", str(tmp_path / "o.mp4"), "--chunk-seconds", "1", "--workers", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen = {k: v for look in running_slots(proc, env) for k, v in look.items()}
    finally:
        _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert "--workers 3: this process may use 2 GPU(s), one worker each; running 2" in (
        err.decode()
    )
    assert set(seen) == {"5", "7"}, seen
    cores = len(os.sched_getaffinity(0))
    assert sum(int(v) for v in seen.values()) == max(2, cores)


DECODER_THREADS = """
import os
from vs_scripts.runtime.filters import load_source

clip = load_source(os.environ["CLIP"], fps=(12, 1))
clip.get_frame(3)
names = [open(f"/proc/self/task/{t}/comm").read() for t in os.listdir("/proc/self/task")]
print(sum(n.startswith("av:") for n in names))
"""


def test_the_source_decoder_keeps_to_the_slots_thread_budget(tmp_path: Path) -> None:
    """A slot's budget covers the source's decoder too: left to itself, libavcodec starts a
    decoding thread per core in every worker, and two workers on a 64-core server would run
    128 of them."""
    src = make_clip(tmp_path / "c.mp4")

    def decoder_threads(budget: str) -> int:
        run = subprocess.run(
            [str(BIN / "python"), "-c", DECODER_THREADS],
            env={**os.environ, "CLIP": str(src), "FINISHLINE_THREADS": budget},
            capture_output=True, text=True, timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert decoder_threads("3") == 3  # libavcodec's frame threads (named av:h264:dfN)
    assert decoder_threads("1") == 0  # one thread: it decodes in the caller's


def test_two_workers_finish_two_short_clips_at_once(tmp_path: Path, env: dict[str, str]) -> None:
    """Clips too short to chunk: with two workers, two clips are encoded at the same time,
    each in its own slot, and every clip is delivered."""
    clips = [
        make_clip(tmp_path / f"c{i}.mp4", size="320x180", fps="24", seconds=2.0) for i in range(3)
    ]
    env = {**env, "FINISHLINE_GPUS": "2"}
    proc = subprocess.Popen(
        [str(BIN / "finishline"), "process", *map(str, clips), "--preset", "slow-x265", "-q",
         "-o", str(tmp_path / "out"), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        looks = running_slots(proc, env)
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert {"0", "1"} in [set(look) for look in looks]  # both slots busy at one moment
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == [
        "c0.slow-x265.mp4", "c1.slow-x265.mp4", "c2.slow-x265.mp4",
    ]  # fmt: skip
    assert len(out.decode().split()) == 3


def chunking_daemon(tmp_path: Path, workers: int = 1) -> tuple[Path, Path]:
    """A daemon's root and config: ``workers`` workers, 1 s chunks of slow-x265."""
    root = tmp_path / "root"
    config = tmp_path / "daemon.toml"
    config.write_text(
        f'root = "{root}"\nworkers = {workers}\nsettle_seconds = 0.5\nbatch_window = 1.0\n'
        'chunk_seconds = 1.0\npresets = ["slow-x265"]\nmax_attempts = 3\n'
    )
    return root, config


def start_daemon(
    tmp_path: Path, root: Path, config: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "finishline"), "daemon", "--config", str(config)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "daemon.log").open("ab"),
    )  # fmt: skip
    wait_for(lambda: (root / "queue.db").exists() and (root / "hot" / "slow-x265").is_dir(), 30)
    return proc


def job_chunks(root: Path, job: int = 1):  # type: ignore[no-untyped-def]
    """Job ``job``'s chunks (live, or as kept after it) and the job."""
    r = QueueReader(root / "queue.db")
    try:
        return r.chunks(job), r.get(job)
    finally:
        r.close()


def test_a_chunked_job_cancelled_keeps_its_chunk_list_not_its_chunk_files(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """A user cancels a chunked daemon job after some chunks are done: every chunk stops,
    the helping worker's too (it rendered its chunk to the end), its source is filed in
    failed/, ``queue show`` still lists its chunks, and their files (the size of the output)
    are not left in the work folder, where a retry (run from failed/, in another folder)
    would never take them."""
    root, config = chunking_daemon(tmp_path, workers=2)
    daemon = start_daemon(tmp_path, root, config, env)
    try:
        src = make_clip(tmp_path / "long.mp4", size="320x180", fps="24", seconds=5.0)
        (root / "hot" / "slow-x265" / "long.mp4").write_bytes(src.read_bytes())
        wait_for(lambda: any(c.state == "done" for c in job_chunks(root)[0]), 240, "a chunk")
        cfg = ["--config", str(config)]
        assert finishline("queue", "cancel", "1", *cfg, env=env).returncode == 0
        wait_for(lambda: job_chunks(root)[1].state is JobState.CANCELLED, 120, "the cancel")
        wait_for(
            lambda: not any(encoding(h) for h in daemon_hosts(daemon.pid)), 10, "chunks stopped"
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    rows, job = job_chunks(root)
    assert (root / "failed" / "slow-x265" / "long.mp4").exists()
    assert any(c.state == "done" for c in rows) and len(rows) >= 3, rows
    assert "running" not in {c.state for c in rows}, rows  # a chunk in flight was stopped
    shown = finishline("queue", "show", "1", *cfg, env=env).stdout
    assert re.search(r"^ +0 +0-\d+ +done ", shown, re.M), shown
    work = Path(job.work_dir)
    assert work.is_dir() and not (work / "chunks").exists()
    assert not [p for p in work.rglob("*") if p.suffix in (".mov", ".mkv")]
    # every line of the job's chunks names the job, the helping worker's too
    log = (root / "logs" / "finishline.log").read_text()
    assert re.search(r"job=1 daemon\.engine\.pipeline: \d+ chunks of about", log), log
    assert not [ln for ln in log.splitlines() if re.search(r"job=- .*chunks? \d", ln)], log
    # retried, it lists no chunks until its next run plans them (that run's, not these)
    assert finishline("queue", "retry", "1", *cfg, env=env).returncode == 0
    assert job_chunks(root)[0] == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_kill_9_mid_chunks_redoes_only_the_chunks_in_flight(
    tmp_path: Path, env: dict[str, str], sig: signal.Signals
) -> None:
    """The daemon killed (or stopped with SIGTERM) mid-job: after a restart, finished chunks
    are not redone, one output is delivered, and nothing but the job's files is left. A kill
    counts a try against the job and each chunk in flight; a SIGTERM puts them back
    untried."""
    root, config = chunking_daemon(tmp_path)

    def start() -> subprocess.Popen[bytes]:
        return start_daemon(tmp_path, root, config, env)

    def chunks():  # type: ignore[no-untyped-def]
        return job_chunks(root)

    daemon = start()
    src = make_clip(tmp_path / "long.mp4", size="320x180", fps="24", seconds=5.0)
    (root / "hot" / "slow-x265" / "long.mp4").write_bytes(src.read_bytes())
    wait_for(lambda: sum(c.state == "done" for c in chunks()[0]) >= 2, 240, "two chunks done")
    # which worker and device run the job, and its chunks with their state, worker and tries
    # (the daemon held still meanwhile, so the rest of its chunks do not finish first)
    daemon.send_signal(signal.SIGSTOP)
    cfg = ["--config", str(config)]
    listing = finishline("queue", "list", *cfg, env=env).stdout
    assert re.search(r"\n +on \S+:w0 cpu \(\d+ threads\)\n", listing), listing
    assert re.search(r"\n +chunks: \d+ of \d+ done", listing), listing
    shown = finishline("queue", "show", "1", *cfg, env=env).stdout
    assert re.search(r"device: cpu \(\d+ threads\)", shown), shown
    chunk_line = re.compile(r"^ +(\d+) +(\d+)-(\d+) +(\w+) +(\d+) .*  (\S+)$", re.M)
    rows = chunk_line.findall(shown)
    assert len(rows) >= 3 and sum(r[3] == "done" for r in rows) >= 2, shown
    assert all(r[5].split("@")[0].endswith(":w0") for r in rows if r[3] == "done"), shown
    daemon.send_signal(sig)
    daemon.send_signal(signal.SIGCONT)  # a SIGTERM is acted on once it runs again
    daemon.wait(timeout=60)
    before = {c.index: c for c in chunks()[0]}
    done_before = {i for i, c in before.items() if c.state == "done"}
    daemon = start()
    try:
        wait_for(
            lambda: chunks()[1] is not None and chunks()[1].state is JobState.DONE, 300, "delivery"
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    job = chunks()[1]
    outputs = list((root / "out" / "slow-x265").glob("*.mp4"))
    assert [p.name for p in outputs] == ["long.mp4"]
    s = streams(outputs[0])
    assert int(s["video"]["nb_read_packets"]) == 120 and s["audio"]["codec_name"] == "aac"
    killed = sig == signal.SIGKILL
    assert job.attempts == int(killed) and done_before
    log = (root / "logs" / "finishline.log").read_text()
    assert f"({len(done_before)} done by an earlier run)" in log
    # after delivery queue show still lists the chunks: only those in flight ran twice
    after = {int(r[0]): (r[3], int(r[4])) for r in chunk_line.findall(
        finishline("queue", "show", "1", *cfg, env=env).stdout
    )}  # fmt: skip
    assert set(after) == set(before) and {st for st, _ in after.values()} == {"done"}, after
    in_flight = {i for i, c in before.items() if c.state == "running"}
    assert bool(in_flight) == killed  # a SIGTERM put them back itself
    assert {i for i, (_, tries) in after.items() if tries} == in_flight, after
    work = Path(job.work_dir)
    left = sorted(p.name for p in work.rglob("*") if p.is_file() and "index" not in p.parts)
    assert not [n for n in left if n.endswith((".mov", ".mkv"))], left  # no chunk or partial
    assert not list((root / "out" / "slow-x265").glob(".*"))


@pytest.mark.gpu
def test_two_workers_on_two_gpus_each_use_their_own(
    tmp_path: Path, env: dict[str, str], models_dir: Path
) -> None:
    """On a machine with two or more NVIDIA GPUs: two workers of an AI preset each run torch on
    their own GPU (read back from nvidia-smi's compute processes while the chunks run)."""
    from daemon.engine.slots import count_gpus

    if count_gpus() < 2:
        pytest.skip("needs two NVIDIA GPUs")
    src = make_clip(tmp_path / "ai.mp4", size="640x360", fps="12", seconds=6.0)
    env = {**env, "FINISHLINE_MODELS": str(models_dir)}
    proc = subprocess.Popen(
        [str(BIN / "finishline"), "process", str(src), "--preset", "small-ai", "-q",
         "-o", str(tmp_path / "o.mp4"), "--chunk-seconds", "1", "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    gpus_used: set[str] = set()
    while proc.poll() is None:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        gpus_used |= {line.split(",")[0] for line in out.splitlines() if line.strip()}
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert len(gpus_used) >= 2, gpus_used


def encoding(pid: int) -> bool:
    """A host in the middle of a chunk: its encoder child is running."""
    return bool(subprocess.run(["pgrep", "-P", str(pid)], capture_output=True).stdout.strip())


def test_a_host_starts_loading_before_its_first_chunk(env: dict[str, str]) -> None:
    """``process`` starts its slots' hosts before it assesses the clips: the filters and the
    preset's network library (torch) load while the assessment runs, not at the first chunk."""
    from daemon.engine.host import WarmHost

    host = WarmHost("cpu0", {**env, "FINISHLINE_THREADS": "1"}, 1, preload=("torch",))
    proc = host.start()
    try:
        assert host.start() is proc  # one process per slot
        maps = Path(f"/proc/{proc.pid}/maps")
        wait_for(lambda: "libtorch_cpu" in maps.read_text(), 180, "torch loaded in the host")
        assert "libvapoursynth" in maps.read_text()  # the filters too
        assert proc.poll() is None  # no request yet: it waits for one
    finally:
        host.stop()
    assert proc.poll() is not None


def hosts_of(env: dict[str, str]) -> set[int]:
    """The warm host processes (python -m daemon.engine.host) of this test's environment."""
    found = set()
    for pid in subprocess.run(["pgrep", "-f", "daemon.engine.host"], capture_output=True,
                              text=True).stdout.split():  # fmt: skip
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            if f"XDG_RUNTIME_DIR={env['XDG_RUNTIME_DIR']}".encode() in raw.split(b"\0"):
                found.add(int(pid))
    return found


def test_one_warm_host_renders_every_clip_and_a_dead_one_is_replaced(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """One worker, three clips: one host process renders them all (the script, the filters
    and their networks load once); killed mid-chunk, a new host retries the chunk and every
    clip is delivered."""
    clips = [
        make_clip(tmp_path / f"c{i}.mp4", size="320x180", fps="24", seconds=2.0) for i in range(3)
    ]
    proc = subprocess.Popen(
        [str(BIN / "finishline"), "process", *map(str, clips), "--preset", "slow-x265", "-q",
         "-o", str(tmp_path / "out"), "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: list[set[int]] = []
    killed = None
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            now = hosts_of(env)
            seen.append(now)
            # the hosts start before the clips are assessed: kill one while it encodes
            if killed is None and any(encoding(pid) for pid in now):
                killed = next(pid for pid in now if encoding(pid))
                os.kill(killed, signal.SIGKILL)  # mid-chunk: the host dies, not the run
            time.sleep(0.1)
    finally:
        _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert killed is not None
    pids = set().union(*seen)
    assert len(pids) == 2 and killed in pids, pids  # the first host, then its replacement
    assert all(len(s) <= 1 for s in seen)  # one worker: one host at a time
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == [
        "c0.slow-x265.mp4", "c1.slow-x265.mp4", "c2.slow-x265.mp4",
    ]  # fmt: skip
    assert not hosts_of(env)  # the run stopped its host


COUNTING_SCRIPT = """import vapoursynth as vs
with open(log, "a") as f:  # noqa: F821 (log arrives as a script argument)
    f.write("loaded\\n")
blank = vs.core.std.BlankClip(width=64, height=36, length=30, format=vs.YUV420P8, fpsnum=24)
clip = vs.core.std.FrameEval(blank, lambda n: blank.std.BlankClip(color=[{base} + 5 * n, 128, 128]))
clip.set_output()
"""


def test_a_host_goes_on_with_the_script_it_has_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's consecutive chunks on one host run from the script output it kept (loaded
    once, decoding goes on where it stopped); the frames are the whole run's. Another script,
    or the same one changed, is loaded anew; nothing is kept after a failed chunk, nor by a
    host left idle."""
    from daemon.engine.chunks import ChunkTask
    from daemon.engine.host import ChunkHost

    script, log = tmp_path / "count.vpy", tmp_path / "loads.txt"
    script.write_text(COUNTING_SCRIPT.format(base=16))
    log.write_text("")
    host = ChunkHost(1)

    def run(start: int, end: int, name: str) -> Path:
        out = tmp_path / f"{name}.mkv"
        vspipe = ["vspipe", "-c", "y4m", "--arg", f"log={log}", "-s", str(start), "-e",
                  str(end - 1), str(script), "-"]  # fmt: skip
        encoder = ["ffmpeg", "-v", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-", "-c:v",
                   "ffv1", "-f", "matroska", str(tmp_path / f"{name}.partial.mkv")]  # fmt: skip
        task = ChunkTask(0, start, end, vspipe, encoder, encoder[-1], str(out))
        result = host.run(task.to_json(), "")
        assert result["ok"], result
        return out

    def loads() -> int:
        return log.read_text().count("loaded")

    parts = [run(a, a + 10, f"part{a}") for a in (0, 10, 20)]
    assert loads() == 1  # three chunks, one load
    whole = run(0, 30, "whole")
    assert loads() == 1
    assert [h for p in parts for h in frame_hashes(p)] == frame_hashes(whole)
    script.write_text(COUNTING_SCRIPT.format(base=40))  # a new render of the job's script
    changed = run(0, 10, "changed")
    assert loads() == 2 and frame_hashes(changed) != frame_hashes(parts[0])
    script.write_text("raise RuntimeError('broken')\n")
    failed = host.run(
        ChunkTask(0, 0, 10, ["vspipe", str(script), "-"], ["true"], "p", "o").to_json(), ""
    )
    assert not failed["ok"] and host._kept is None  # a failed script keeps nothing
    script.write_text(COUNTING_SCRIPT.format(base=16))
    monkeypatch.setattr("daemon.engine.host.KEEP_S", 0.2)
    run(0, 10, "again")
    assert host._kept is not None
    wait_for(lambda: host._kept is None, 10, "the idle host lets go of the script")


def test_a_warm_host_checks_the_script_and_keeps_it_for_the_chunks(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The script check (what ``vspipe --info`` tells) is answered by a slot's host, which
    then renders the job's chunk from the script it loaded; a broken script's error comes
    back as the check's."""
    from daemon.core.errors import EncodeError
    from daemon.engine.chunks import ChunkTask
    from daemon.engine.host import WarmHost

    script, log = tmp_path / "count.vpy", tmp_path / "loads.txt"
    script.write_text(COUNTING_SCRIPT.format(base=16))
    log.write_text("")
    host = WarmHost("cpu0", {**env, "FINISHLINE_THREADS": "1"}, 1)
    vspipe = ["vspipe", "--arg", f"log={log}", str(script), "-"]
    try:
        assert host.info(["vspipe", "--info", *vspipe[1:]]) == 30
        out = tmp_path / "chunk.mkv"
        encoder = ["ffmpeg", "-v", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-", "-c:v",
                   "ffv1", "-f", "matroska", str(tmp_path / "chunk.partial.mkv")]  # fmt: skip
        task = ChunkTask(0, 0, 10, [*vspipe[:-2], "-e", "9", *vspipe[-2:]], encoder,
                         encoder[-1], str(out))  # fmt: skip
        host.run(task, lambda *_: None)
        assert len(frame_hashes(out)) == 10
        assert log.read_text().count("loaded") == 1  # loaded by the check, rendered from it
        script.write_text("raise RuntimeError('a broken script')\n")
        with pytest.raises(EncodeError) as err:
            host.info(["vspipe", "--info", str(script), "-"])
        assert "a broken script" in err.value.report()
    finally:
        host.stop()


@pytest.mark.allow_error_logs
def test_a_chunk_failing_for_good_stops_the_jobs_other_chunks(
    tmp_path: Path, test_presets: Path
) -> None:
    """Chunk 1's script goes missing (its vspipe fails for real) and it may be tried once:
    the job fails with that chunk's report, and its other chunk threads stop with it before
    it returns. Nothing is claimed or left running after, and the same warm hosts then
    finish the next clip."""
    from dataclasses import replace

    from daemon.engine.chunks import ChunkRow, ChunkStore
    from daemon.engine.finish import Engine
    from daemon.engine.host import HostPool
    from daemon.engine.pipeline import Chunking
    from daemon.engine.slots import plan_slots

    class Breaking(ChunkStore):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.claims: list[int] = []

        def claim(self, worker: str, **kw: object) -> ChunkRow | None:
            row = super().claim(worker, **kw)  # type: ignore[arg-type]
            if row is not None:
                self.claims.append(row.index)
                if row.index == 1 and row.job == "broken":
                    gone = str(tmp_path / "missing.vpy")
                    vspipe = [gone if a.endswith(".vpy") else a for a in row.task.vspipe]
                    row = replace(row, task=replace(row.task, vspipe=vspipe))
            return row

    clips = [make_clip(tmp_path / f"c{i}.mp4", seconds=4.0, audio=False) for i in range(2)]
    store = Breaking(tmp_path / "chunks.db")
    pool = HostPool(plan_slots(workers=2, cores=2))
    engine = Engine(find_preset("slow-x265"), work_root=tmp_path / "work")

    def chunking(job: str) -> Chunking:
        return Chunking(
            store=store, job=job, seconds=1.0, workers=2, place=pool.placer(), always=True,
            check=pool.check, max_attempts=1,
        )  # fmt: skip

    try:
        with pytest.raises(Exception, match="chunk 1") as info:
            engine.finish(clips[0], tmp_path / "broken.mp4", chunking=chunking("broken"))
        assert "missing.vpy" in str(getattr(info.value, "report", lambda: "")()) + str(info.value)
        # its chunk threads ended before it returned (no host still encodes a chunk of it);
        # the rest of its chunks were not run
        hosts = [h._proc.pid for h in pool._hosts.values() if h._proc is not None]
        encoding = [
            child for pid in hosts
            for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                        text=True).stdout.split()
        ]  # fmt: skip
        assert not encoding, encoding
        assert not [t.name for t in threading.enumerate() if t.name.startswith("chunks/")]
        claimed = list(store.claims)
        assert len(claimed) < 8, claimed
        assert store.rows("broken") == []  # forgotten: a rerun tries every chunk again
        time.sleep(1.0)
        assert store.claims == claimed
        result = engine.finish(clips[1], tmp_path / "next.mp4", chunking=chunking("next"))
        assert len(frame_hashes(result.output)) == 48
    finally:
        pool.close()
        store.close()


def test_chunks_of_a_run_stopped_before_a_preset_edit_are_not_taken(
    tmp_path: Path, test_presets: Path
) -> None:
    """A chunked run is stopped after its first chunk; the preset is then edited (a smaller
    frame). The next run of the clip makes every chunk anew (the earlier plan's file is
    removed, not joined into the output): its picture is the edited preset's, frame for
    frame."""
    from daemon.engine.chunks import ChunkStore
    from daemon.engine.finish import Engine
    from daemon.engine.pipeline import Cancelled, Chunking

    src = make_clip(tmp_path / "clip.mp4", seconds=3.0, audio=False)
    store = ChunkStore(tmp_path / "chunks.db")
    work = tmp_path / "work"

    def chunking(engine: Engine) -> Chunking:
        return Chunking(store=store, job=str(engine.work_dir(src)), seconds=1.0)

    def done() -> bool:
        return any(r.state == "done" for r in store.rows(str(engine.work_dir(src))))

    engine = Engine(find_preset("small-colour"), work_root=work, should_stop=done)
    with pytest.raises(Cancelled):
        engine.finish(src, tmp_path / "first.mkv", chunking=chunking(engine))
    chunk_files = [p for p in work.rglob("chunks/*") if p.is_file()]
    assert len(chunk_files) == 1, chunk_files  # the first chunk, kept for a rerun
    toml = test_presets / "small-colour.toml"
    smaller = toml.read_text().replace("width = 160\nheight = 90", "width = 128\nheight = 72")
    assert smaller != toml.read_text()
    toml.write_text(smaller)
    edited = Engine(find_preset("small-colour"), work_root=work)
    assert edited.work_dir(src) == engine.work_dir(src)  # the same job folder
    whole = edited.finish(src, tmp_path / "whole.mkv").output
    result = edited.finish(src, tmp_path / "chunked.mkv", chunking=chunking(edited))
    assert frame_hashes(result.output) == frame_hashes(whole) and len(frame_hashes(whole)) == 36
    assert not chunk_files[0].exists()
    assert not [p for p in work.rglob("chunks/*") if p.is_file()]
    store.close()


def test_a_chunk_given_back_after_the_jobs_own_threads_ended_is_taken_again(
    tmp_path: Path, test_presets: Path
) -> None:
    """Another worker (a daemon's helper) holds one chunk when the job's own thread runs out
    of chunks and ends; that worker's attempt then fails and the chunk goes back to the
    queue. The job takes it again itself and delivers: it does not wait for a free worker,
    which a busy or paused queue never has (it hung there)."""
    from daemon.engine.chunks import ChunkRow, ChunkStore
    from daemon.engine.finish import Engine
    from daemon.engine.pipeline import Chunking

    class Helped(ChunkStore):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.held: ChunkRow | None = None
            self.claims: list[tuple[str, int]] = []

        def claim(self, worker: str, **kw: object) -> ChunkRow | None:
            if self.held is None:  # the helper takes one before the job's thread starts
                self.held = super().claim("helper", job="job")
            row = super().claim(worker, **kw)  # type: ignore[arg-type]
            if row is not None:
                self.claims.append((worker, row.index))
            elif self.held is not None and not any(w == "helper" for w, _ in self.claims):
                self.claims.append(("helper", self.held.index))
                held = self.held  # after the job's thread has ended: the helper fails it
                threading.Timer(
                    1.0, lambda: self.failed(held, "helper's encoder died", max_attempts=3)
                ).start()
            return row

    src = make_clip(tmp_path / "clip.mp4", seconds=3.0, audio=False)
    store = Helped(tmp_path / "chunks.db")
    stop = threading.Event()
    engine = Engine(
        find_preset("small-colour"), work_root=tmp_path / "work", should_stop=stop.is_set
    )
    chunking = Chunking(store=store, job="job", seconds=1.0, worker="owner")
    outcome: list[object] = []
    runner = threading.Thread(
        target=lambda: outcome.append(engine.finish(src, tmp_path / "out.mkv", chunking=chunking)),
        daemon=True,
    )
    runner.start()
    runner.join(timeout=120)
    if runner.is_alive():  # the bug: stop the job before failing the test
        stop.set()
        runner.join(timeout=30)
    try:
        assert outcome, "the job never finished: the chunk given back was not taken again"
        assert store.held is not None
        taken = [w for w, i in store.claims if i == store.held.index]
        assert taken == ["helper", "owner"], store.claims
        assert len(frame_hashes(tmp_path / "out.mkv")) == 36
    finally:
        store.close()


BLANK_SCRIPT = """import vapoursynth as vs
vs.core.std.BlankClip(width=64, height=36, length=30, format=vs.YUV420P8, fpsnum=24).set_output()
"""


def test_a_chunk_short_of_its_range_is_not_done(tmp_path: Path) -> None:
    """Av1an's frame-mismatch check: a chunk whose output holds fewer frames than its range
    (here vspipe stops at frame 9 of a 0-19 chunk) fails with both counts, and leaves no
    output and no partial file behind; the full range is done."""
    from daemon.core.errors import EncodeError
    from daemon.core.tools import find_tool
    from daemon.engine.chunks import ChunkTask, run_chunk

    script = tmp_path / "blank.vpy"
    script.write_text(BLANK_SCRIPT)

    def run_pipe(first, second, total, on_frames) -> None:  # type: ignore[no-untyped-def]
        vspipe = subprocess.Popen(first, stdout=subprocess.PIPE)
        subprocess.run(second, stdin=vspipe.stdout, check=True)
        assert vspipe.wait() == 0

    def task(last: int, name: str) -> ChunkTask:
        out, partial = tmp_path / f"{name}.mkv", tmp_path / f"{name}.partial.mkv"
        vspipe = [find_tool("vspipe"), "-c", "y4m", "-s", "0", "-e", str(last), str(script), "-"]
        encoder = [find_tool("ffmpeg"), "-v", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-",
                   "-c:v", "ffv1", "-f", "matroska", str(partial)]  # fmt: skip
        return ChunkTask(0, 0, 20, vspipe, encoder, str(partial), str(out))

    with pytest.raises(EncodeError) as err:
        run_chunk(task(9, "short"), run_pipe, on_progress=lambda *_: None)
    assert "FRAME MISMATCH: chunk 0 holds 10 frames, expected 20" in err.value.report()
    assert not list(tmp_path.glob("short*.mkv"))
    run_chunk(task(19, "full"), run_pipe, on_progress=lambda *_: None)
    assert len(frame_hashes(tmp_path / "full.mkv")) == 20
    assert not (tmp_path / "full.partial.mkv").exists()
