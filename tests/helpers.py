"""Helpers shared by the test modules (imported from here, never from another test module)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from vs_scripts.plan.media import AudioStream, MediaInfo

BIN = Path(sys.executable).parent


def finishline(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``finishline`` command (the venv's), capturing text output."""
    return subprocess.run(
        [str(BIN / "finishline"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def streams(path: Path) -> dict[str, dict]:
    """ffprobe's view: the first stream of each type (with packet counts) and ``format``."""
    res = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_packets",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            "file:" + str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(res.stdout)
    out = {}
    for s in data["streams"]:
        out.setdefault(s["codec_type"], s)
    out["format"] = data["format"]
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def loudness(path: Path) -> float:
    """Integrated loudness (LUFS) by ffmpeg's EBU R128 meter, independent of finishline's."""
    res = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-i",
            "file:" + str(path),
            "-map",
            "0:a:0",
            "-af",
            "ebur128",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tail = res.stderr[res.stderr.rindex("Integrated loudness") :]
    return float(tail.split("I:")[1].split("LUFS")[0])


def psnr(a: np.ndarray, b: np.ndarray, *, peak: float = 255.0) -> float:
    """PSNR in dB of two arrays on one scale: ``peak`` 255 for 8-bit code values, 1.0 for
    VapourSynth's float RGB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(peak**2 / mse))


def wait_for(cond: Callable[[], object], timeout: float, what: str = "condition") -> object:
    """Poll ``cond`` until it is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def media_info(**kw: object) -> MediaInfo:
    """Probe facts of a typical AI clip (640x360, 12 fps, 36 frames, AAC), fields overridable."""
    base = MediaInfo(
        path="/tmp/clip.mp4",
        container="mov,mp4",
        width=640,
        height=360,
        fps=Fraction(12),
        vfr=False,
        frame_count=36,
        duration=3.0,
        codec="h264",
        pixel_format="yuv420p",
        bit_depth=8,
        matrix=None,
        transfer=None,
        primaries=None,
        color_range=None,
        rotation=0,
        start_time=0.0,
        audio=(AudioStream(1, "aac", 44100, 2, 3.0, 0.0),),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def ncnn_reference(package: str, files: tuple[str, ...], x: np.ndarray) -> np.ndarray:
    """The ncnn runtime's output for ``x`` (CHW float32) from a package's .param/.bin, with
    the winograd, sgemm, fp16 and Vulkan paths off: the exact reference a conversion must
    match."""
    import ncnn

    from daemon.engine import models

    net = ncnn.Net()
    for opt in (
        "use_vulkan_compute",
        "use_winograd_convolution",
        "use_sgemm_convolution",
        "use_fp16_storage",
        "use_fp16_arithmetic",
        "use_fp16_packed",
    ):
        setattr(net.opt, opt, False)
    net.load_param(str(models._package_file(package, files[0])))
    net.load_model(str(models._package_file(package, files[1])))
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(x))
    _, out = ex.extract("output")
    return np.array(out)


def frame_hashes(path: Path) -> list[str]:
    """The MD5 of every decoded video frame (ffmpeg framemd5), in order."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split(",")[-1].strip() for line in out.splitlines() if not line.startswith("#")]


def timestamps(path: Path) -> list[str]:
    """Presentation time of every video packet, in file order."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time"]
    cmd += ["-of", "csv=p=0", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()


def hosts_of(pid: int) -> set[int]:
    """The warm host processes (python -m daemon.engine.host) the daemon ``pid`` started."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    return {
        int(line.split()[0])
        for line in out.splitlines()[1:]
        if line.split()[1] == str(pid) and "daemon.engine.host" in line
    }
