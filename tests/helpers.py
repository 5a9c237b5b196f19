"""Helpers shared by the test modules (imported from here, never from another test module)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

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
