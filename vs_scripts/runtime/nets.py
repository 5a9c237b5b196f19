"""The networks behind the AI stages, loaded from weights files (used inside vspipe by
:mod:`vs_scripts.runtime.filters` and by ``finishline models verify``). torch is imported lazily."""

from __future__ import annotations

from pathlib import Path


def load_network(kind: str, path: str | Path, scale: int, device):  # type: ignore[no-untyped-def]
    """Build the network for ``kind`` ("rife", "srvgg" or "rrdb") and load the weights at
    ``path``. Real-ESRGAN weights may be the official ``.pth`` (``params_ema`` or ``params``)
    or what ``finishline models install`` builds offline; the key names are the same."""
    import torch

    if kind == "rife":
        from vsrife.IFNet_HDv3_v4_25 import IFNet

        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net = IFNet(1, False)
        net.load_state_dict(state, strict=False)
        return net.eval().to(device)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    params = _esrgan_params(blob)
    if kind == "rrdb":
        net = _rrdbnet(params)
        if net.scale != scale:
            raise ValueError(f"{path}: an RRDBNet x{net.scale}, not x{scale}")
        net.load_state_dict(params, strict=True, assign=True)
        return net.eval().to(device)
    from vsrealesrgan.srvgg_arch import SRVGGNetCompact

    num_conv = blob.get("num_conv", 16) if isinstance(blob.get("num_conv"), int) else 16
    net = SRVGGNetCompact(
        num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=num_conv, upscale=scale, act_type="prelu"
    )
    net.load_state_dict(params, strict=True)
    return net.eval().to(device)


def _esrgan_params(blob):  # type: ignore[no-untyped-def]
    return blob.get("params_ema", blob.get("params", blob))


def _rrdbnet(params):  # type: ignore[no-untyped-def]
    """An empty RRDBNet (ESRGAN / RealESRGAN_x4plus: 64 features, 23 blocks, growth 32, x4)
    shaped after ``params``: the x2/x1 variants pixel-unshuffle their input (12/48 channels).
    The definition is vsrealesrgan's (BasicSR's, key names included), so the official
    ``RealESRGAN_x4plus.pth`` and the offline build load alike, and TensorRT (vsrealesrgan)
    reads the same file."""
    import torch
    from vsrealesrgan.rrdbnet_arch import RRDBNet

    first = params["conv_first.weight"]
    scale = {3: 4, 12: 2, 48: 1}[int(first.shape[1])]
    blocks = sum(1 for k in params if k.startswith("body.") and k.endswith(".rdb1.conv1.weight"))
    grow = int(params["body.0.rdb1.conv1.weight"].shape[0])
    with torch.device("meta"):  # no random initialisation of 16.7M weights; assigned on load
        return RRDBNet(
            3, 3, scale=scale, num_feat=int(first.shape[0]), num_block=blocks, num_grow_ch=grow
        )


def esrgan_arch(path: str | Path) -> tuple[str, int]:
    """("srvgg" or "rrdb", network scale) of Real-ESRGAN weights, from their key names and
    shapes (memory-mapped: nothing but the file's index is read)."""
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
        blob = torch.load(path, map_location="cpu", weights_only=True)
    params = _esrgan_params(blob)
    if "conv_first.weight" in params:
        return "rrdb", {3: 4, 12: 2, 48: 1}[int(params["conv_first.weight"].shape[1])]
    if isinstance(blob.get("upscale"), int):
        return "srvgg", int(blob["upscale"])
    last = params[max((k for k in params if k.endswith(".weight")), key=_body_index)]
    return "srvgg", round((int(last.shape[0]) / 3) ** 0.5)


def _body_index(key: str) -> int:
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else -1


def rife_infer(net, img0, img1, t: float):  # type: ignore[no-untyped-def]
    """One RIFE 4.25 midpoint at time ``t`` for NCHW RGB in [0, 1] (any size; padded to 64)."""
    import torch
    import torch.nn.functional as F

    _, _, h, w = img0.shape
    pw, ph = -(-w // 64) * 64, -(-h // 64) * 64
    if (pw, ph) != (w, h):
        img0 = F.pad(img0, (0, pw - w, 0, ph - h))
        img1 = F.pad(img1, (0, pw - w, 0, ph - h))
    div = torch.tensor([(pw - 1.0) / 2.0, (ph - 1.0) / 2.0], dtype=img0.dtype, device=img0.device)
    gx = torch.linspace(-1.0, 1.0, pw, device=img0.device).view(1, 1, 1, pw).expand(-1, -1, ph, -1)
    gy = torch.linspace(-1.0, 1.0, ph, device=img0.device).view(1, 1, ph, 1).expand(-1, -1, -1, pw)
    grid = torch.cat([gx, gy], 1).to(img0.dtype)
    timestep = torch.full((1, 1, ph, pw), float(t), dtype=img0.dtype, device=img0.device)
    f0, f1 = net.encode(img0), net.encode(img1)
    out = net(img0, img1, timestep, div, grid, f0, f1)
    return out[:, :, :h, :w]
