"""The networks behind the AI stages, loaded from weights files (used inside vspipe by
:mod:`vs_scripts.runtime.filters` and by ``finishline models verify``). torch is imported lazily."""

from __future__ import annotations

from pathlib import Path


def load_network(kind: str, path: str | Path, scale: int, device):  # type: ignore[no-untyped-def]
    """Build the network for ``kind`` ("rife" or "srvgg") and load the weights at ``path``."""
    import torch

    if kind == "rife":
        from vsrife.IFNet_HDv3_v4_25 import IFNet

        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        net = IFNet(1, False)
        net.load_state_dict(state, strict=False)
        return net.eval().to(device)
    from vsrealesrgan.srvgg_arch import SRVGGNetCompact

    blob = torch.load(path, map_location="cpu", weights_only=True)
    params = blob.get("params", blob.get("params_ema", blob))
    num_conv = blob.get("num_conv", 16) if isinstance(blob.get("num_conv"), int) else 16
    net = SRVGGNetCompact(
        num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=num_conv, upscale=scale, act_type="prelu"
    )
    net.load_state_dict(params, strict=True)
    return net.eval().to(device)


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
