"""The fidelity <-> detail control of the upscaler: 0 is a plain resize (nothing invented),
1 the network's full detail, in between a blend; the preset key reaches the script."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import vapoursynth as vs

from daemon.engine import models
from tests.helpers import media_info, psnr
from vs_scripts.plan.preset import load_preset
from vs_scripts.plan.render import render_script
from vs_scripts.runtime import filters as fl

core = vs.core


def frame(clip: vs.VideoNode) -> np.ndarray:
    f = clip.get_frame(0)
    return np.stack([np.asarray(f[p]) for p in range(3)])


def rgbs(pics: list[np.ndarray]) -> vs.VideoNode:
    """An RGBS clip of ``pics``, one a frame: (3, h, w) planes, or (h, w) for all three."""
    height, width = pics[0].shape[-2:]
    blank = core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=len(pics))

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = pics[n][p] if pics[n].ndim == 3 else pics[n]
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def textured(width: int = 48, height: int = 32) -> vs.VideoNode:
    rng = np.random.default_rng(3)
    return rgbs([rng.random((3, height, width), dtype=np.float32)])


def test_detail_zero_is_a_plain_resize_and_one_the_network(models_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("FINISHLINE_MODELS", str(models_dir))
    src = textured()
    model = str(models.model_path("realesr-animevideov3"))
    kw = {"model": model, "scale": 2, "backend": fl.Backend.CPU, "precision": fl.Precision.FP32}
    full = frame(fl.upscale_esrgan(src, **kw))
    none = frame(fl.upscale_esrgan(src, detail=0.0, **kw))
    half = frame(fl.upscale_esrgan(src, detail=0.5, **kw))
    plain = frame(core.resize.Spline36(src, 96, 64))
    assert psnr(none, plain, peak=1.0) > 60  # nothing invented
    assert psnr(full, plain, peak=1.0) < 40  # the network's own detail
    np.testing.assert_allclose(half, (none + full) / 2, atol=1e-4)


def test_the_preset_key_reaches_the_script() -> None:
    text = '[upscale]\nmodel = "realesr-animevideov3"\nscale = 2\ndetail = 0.3\n'
    preset = load_preset(text, source="t.toml", name="t")
    media = media_info()
    script = render_script(preset, media)
    assert "detail=0.3" in script
    plain = render_script(
        load_preset(text.replace("detail = 0.3\n", ""), source="t", name="t"), media
    )
    assert "detail=" not in plain


def moving(frames: int, *, noise: float, shift: int = 2, size: tuple[int, int] = (128, 96)):
    """(truth base + texture, the same with fresh per-frame noise on the texture, smooth base):
    a picture panning ``shift`` pixels a frame, as RGBS clips."""
    width, height = size
    rng = np.random.default_rng(7)
    pad = shift * frames
    yy, xx = np.mgrid[0:height, 0 : width + pad].astype(np.float32)
    tone = 0.3 + 0.4 * xx / (width + pad) + 0.1 * np.sin(yy / 9)
    texture = 0.08 * (rng.random((height, width + pad), dtype=np.float32) - 0.5)

    window = [slice(n * shift, n * shift + width) for n in range(frames)]
    truth = [tone[:, w] + texture[:, w] for w in window]
    noisy = [t + noise * (rng.random(t.shape, dtype=np.float32) - 0.5) for t in truth]
    return rgbs(truth), rgbs(noisy), rgbs([tone[:, w] for w in window])


def luma_error(a: vs.VideoNode, b: vs.VideoNode, n: int) -> float:
    return float(np.sqrt(np.mean((frame(a[n]) - frame(b[n])) ** 2)))


def test_stabilise_keeps_detail_that_moves_with_the_picture_and_drops_shimmer() -> None:
    truth, shimmering, base = moving(7, noise=0.06)
    steady = fl.stabilise(shimmering, strength=1.0)
    for n in (2, 3, 4):  # frames with two neighbours on each side
        before, after = luma_error(shimmering, truth, n), luma_error(steady, truth, n)
        assert after < 0.75 * before, (n, before, after)
    # the texture that pans with the picture is kept: still far closer to the truth than the
    # smooth picture it sits on
    assert luma_error(steady, truth, 3) < 0.5 * luma_error(base, truth, 3)
    assert abs(frame(steady[3]).mean() - frame(truth[3]).mean()) < 2e-3  # tone kept
    assert fl.stabilise(shimmering, strength=0.0) is shimmering


def test_stabilise_reaches_the_script() -> None:
    text = '[upscale]\nmodel = "realesr-animevideov3"\nscale = 2\nstabilise = 1.0\n'
    script = render_script(load_preset(text, source="t.toml", name="t"), media_info())
    assert "clip = fl.stabilise(clip, strength=1.0)" in script
