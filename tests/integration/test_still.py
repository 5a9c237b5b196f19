"""The before/after still: its 1:1 crop shows where the picture has detail, not a flat centre."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from daemon.engine import commands as C
from daemon.engine.measure import detail_focus
from tests.conftest import ffmpeg


def picture(path: Path, *, textured: bool) -> Path:
    """A flat grey 640x360 clip, with (``textured``) a patch of fine noise at its top left."""
    graph = "color=c=gray:s=640x360:r=24:d=0.5,format=yuv420p"
    if textured:
        graph = (
            f"{graph}[bg];color=c=gray:s=120x90:r=24:d=0.5,format=yuv420p,"
            "noise=alls=60:allf=t[patch];[bg][patch]overlay=40:30"
        )
    ffmpeg("-f", "lavfi", "-i", graph, "-c:v", "ffv1", str(path))
    return path


def grey_png(path: Path) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(180, 320)


def test_the_crop_goes_where_the_detail_is(tmp_path: Path) -> None:
    textured = picture(tmp_path / "textured.mkv", textured=True)
    flat = picture(tmp_path / "flat.mkv", textured=False)
    window = (160 / 640, 90 / 360)
    fx, fy = detail_focus(textured, 0.25, window)
    assert 0.1 < fx < 0.3 and 0.1 < fy < 0.4, (fx, fy)  # the patch spans x 40-160, y 30-120
    assert detail_focus(flat, 0.25, window) == (0.5, 0.5)
    assert detail_focus(tmp_path / "missing.mkv", 0.25, window) == (0.5, 0.5)
    png = tmp_path / "still.png"
    for focus, busy in (((fx, fy), True), ((0.5, 0.5), False)):
        cmd = C.still_command(src=str(textured), output=str(textured), png=str(png),
                              at_seconds=0.25, height=180, focus=focus)  # fmt: skip
        subprocess.run(cmd, check=True)
        crop = grey_png(png)[90:, 160:].astype(np.float32)  # the output's 1:1 crop
        assert bool(crop.std() > 20) is busy, (focus, crop.std())
