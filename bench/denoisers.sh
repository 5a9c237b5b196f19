#!/usr/bin/env bash
# Each denoiser on the shared bench's degraded clips at their own size and rate (no RIFE, no
# upscaler; colour-matched per shot group; FFV1), scored against the clean gt_lowres set.
# By hand, not in CI: ~45 s a setting on 2 cores, after bench/run.sh made the corpus.
#   bench/denoisers.sh ["SETTING" ...]     SETTING: [restore] lines separated by ';', e.g.
#   bench/denoisers.sh 'auto = false;deblock = 0.15;denoise = "degrain";denoise_strength = 2.0'
# Without arguments: none, dfttest 1, degrain 2, and auto.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_WORK=${BENCH_WORK:-$ROOT/bench/_work}
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
PY=${BENCH_VENV:-/tmp/bench-venv}/bin/python
CORPUS=$BENCH_WORK/corpus
[[ -f $CORPUS/manifest.json ]] || { echo "run bench/run.sh first (it makes the corpus)" >&2; exit 1; }
if [[ $# -eq 0 ]]; then
  set -- 'auto = false;deblock = 0.15' \
    'auto = false;deblock = 0.15;denoise = "dfttest";denoise_strength = 1.0' \
    'auto = false;deblock = 0.15;denoise = "degrain";denoise_strength = 2.0' \
    'denoise = "auto"'
fi
n=0
for setting in "$@"; do
  n=$((n + 1))
  OUT=$BENCH_WORK/runs/denoise-$n
  rm -rf "$OUT"; mkdir -p "$OUT"
  cat > "$OUT/preset.toml" <<TOML
[preset]
description = "bench: denoiser alone"
container = "mov"
[motion]
fps = 12
method = "repeat"
[upscale]
model = "off"
[frame]
width = 640
height = 360
[video]
encoder = "ffv1"
pixel_format = "yuv420p"
[audio]
codec = "aac"
[restore]
$(tr ';' '\n' <<< "$setting")
TOML
  "$ROOT/.venv/bin/python" -c '
import json, sys
for g in json.load(open(sys.argv[1]))["groups"]:
    print(g["reference"] + ".mp4", " ".join(c + ".mp4" for c in g["clips"]))
' "$CORPUS/manifest.json" | while read -r ref group; do
    files=(); for f in $group; do files+=("$CORPUS/degraded/$f"); done
    "$ROOT/.venv/bin/finishline" process "${files[@]}" --preset "$OUT/preset.toml" -o "$OUT" \
      --work "$OUT/jobs" -q --reference "$ref" > /dev/null 2>> "$OUT/process.log"
  done
  for f in "$OUT"/*.mov; do base=$(basename "$f"); mv "$f" "$OUT/${base%%.*}.mov"; done
  (cd "$SHARED" && $PY score.py "$OUT" "$CORPUS/gt_lowres" --no-vmaf > "$OUT/score.log" 2>&1)
  $PY - "$OUT/score.json" "$setting" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["aggregate"]
print(f"{sys.argv[2]:70} PSNR-Y {a['psnr_y']:.2f}  SSIM-Y {a['ssim_y']:.4f}  "
      f"flicker {a['tflicker_mad']:.3f}  lum. flicker {a['tflicker_global']:.3f}")
PY
done
