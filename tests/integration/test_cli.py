"""The command line's edges: `render` prints what `process` runs (and its header reproduces
it when pasted), output paths are checked before any work, `queue` finds the running daemon,
pipes and missing values end in one sentence, never a traceback."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.helpers import BIN, finishline, wait_for


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env


def test_render_prints_the_script_process_runs_and_its_header_reproduces_it(
    clip_factory, tmp_path: Path, env: dict[str, str]
) -> None:
    src = clip_factory("r.mp4", size="160x90", fps="12", seconds=0.5)
    work = tmp_path / "work"
    shown = finishline("render", str(src), "--preset", "small-colour", "--work", str(work), env=env)
    assert shown.returncode == 0, shown.stderr
    res = finishline(
        "process", str(src), "--preset", "small-colour", "--work", str(work), "-o",
        str(tmp_path / "o.mkv"), env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (script,) = [p for p in work.rglob("script.vpy") if "batch-" not in str(p.parent)]
    assert script.read_text() == shown.stdout  # the same assessment, the same script
    header = next(
        line for line in shown.stdout.splitlines() if "vspipe" in line and "--arg" in line
    )
    command = header.lstrip("# ").split(" | ")[0]
    argv = shlex.split(command)
    assert argv[0].endswith("vspipe") and any(a.startswith("cache=") for a in argv)
    out = subprocess.run(argv, capture_output=True, cwd="/", timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.startswith(b"YUV4MPEG2 ") and out.stdout.count(b"FRAME\n") == 6


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("x.mov", "writes MP4 files; name the output x.mp4"),
        ("/nonexistent/dir/x.mp4", "does not exist; create it first"),
    ],
)
def test_bad_output_paths_are_refused_before_any_work(
    clip_factory, tmp_path: Path, env: dict[str, str], output: str, message: str
) -> None:
    src = clip_factory("o.mp4", size="160x90", fps="12", seconds=0.5)
    target = output if output.startswith("/") else str(tmp_path / output)
    res = finishline("process", str(src), "--preset", "small-x265", "-o", target, env=env)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not Path("/nonexistent").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("seconds", ["nan", "-5", "ten"])
def test_a_bad_chunk_length_is_refused_before_any_work(
    clip_factory, tmp_path: Path, env: dict[str, str], seconds: str
) -> None:
    """Not a traceback after the assessment (``nan`` reached the planner) or a silent
    whole-clip run (a negative length)."""
    src = clip_factory("o.mp4", size="160x90", fps="12", seconds=0.5)
    out = tmp_path / "o-out.mp4"
    res = finishline(
        "process", str(src), "--preset", "small-x265", "-o", str(out), "--chunk-seconds", seconds,
        env=env,
    )  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert f"--chunk-seconds: {seconds!r} is not a number of seconds, 0 or more" in res.stderr
    assert not out.exists()


def test_queue_finds_the_running_daemon_and_edges_are_one_sentence(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "var"
    config = tmp_path / "daemon.toml"
    config.write_text(f'root = "{tmp_path / "elsewhere"}"\n')
    daemon = subprocess.Popen(
        [str(BIN / "finishline"), "daemon", "--config", str(config), "--root", str(root)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (root / "queue.db").exists(), 30, "the daemon to start")
        listed = wait_for(
            lambda: (r := finishline("queue", "list", env=env)).returncode == 0 and r, 30
        )
        assert "daemon: running" in listed.stdout and str(root) in listed.stderr
        no_value = finishline("queue", "priority", "1", env=env)
        assert no_value.returncode == 1 and "--priority N" in no_value.stderr
        piped = subprocess.run(
            f"{shlex.quote(str(BIN / 'finishline'))} queue list --limit 500 | head -c 10",
            shell=True, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    assert sys.executable  # the venv's python ran the daemon


def test_hdr_is_refused_or_tone_mapped_never_mislabelled(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from tests.conftest import ffmpeg
    from tests.helpers import streams

    hdr = tmp_path / "hdr.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=12:duration=0.5",
        "-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le",
        "-color_trc", "smpte2084", "-color_primaries", "bt2020", "-colorspace", "bt2020nc",
        str(hdr),
    )  # fmt: skip
    refused = finishline(
        "process", str(hdr), "--preset", "small-x265", "-o", str(tmp_path / "a.mp4"), env=env
    )
    assert refused.returncode == 1 and "is HDR (PQ" in refused.stderr
    assert 'hdr = "tonemap"' in refused.stderr and not (tmp_path / "a.mp4").exists()
    presets = tmp_path / "presets"
    presets.mkdir()
    text = (DATA / "presets_ok" / "small-x265.toml").read_text()
    (presets / "small-hdr.toml").write_text(text + '\n[colour]\nhdr = "tonemap"\n')
    env = {**env, "FINISHLINE_PRESETS": str(presets)}
    out = tmp_path / "b.mp4"
    done = finishline("-v", "process", str(hdr), "--preset", "small-hdr", "-o", str(out), env=env)
    assert done.returncode == 0, done.stderr
    v = streams(out)["video"]
    assert (v["color_transfer"], v["color_primaries"]) == ("bt709", "bt709")
    script = next((tmp_path / "cache").rglob("hdr-small-hdr-*/script.vpy")).read_text()
    assert "tone-mapped to SDR" in script and "fl.tonemap_to_sdr" in script
