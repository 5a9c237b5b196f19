#!/usr/bin/env bash
# Run finishline over the shared bench corpus (../shared/bench) and score it beside the ffmpeg
# baselines. By hand, not in CI: ~6 min for the corpus and baselines, then the pipeline.
#   bench/run.sh [PRESET]      (default bench/preset-720p.toml; e.g. presets/youtube-1080p.toml)
# Env: BENCH_WORK (default bench/_work), SHARED_BENCH (default ../shared/bench), BENCH_ARGS
# (more `finishline process` options, e.g. "--workers 2 --chunk-seconds 1" to cut the 2.5 s
# clips into chunks) and BENCH_TAG (a suffix for the run's folder, to keep runs side by side).
# Each run writes frames.md5 (per clip, the MD5 of all its decoded video frames): two runs of
# one preset with the same threads per worker (FFV1 is lossless) show the same picture when
# `diff` finds nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
export BENCH_WORK=${BENCH_WORK:-$ROOT/bench/_work}
PRESET=${1:-$ROOT/bench/preset-720p.toml}
FL=$ROOT/.venv/bin/finishline
PY=${BENCH_VENV:-/tmp/bench-venv}/bin/python
[[ -x $FL ]] || "$ROOT/scripts/setup.sh"

if [[ ! -f $BENCH_WORK/runs/summary.md ]]; then
  "$SHARED/run_all.sh"             # corpus + baselines + their scores
fi
CORPUS=$BENCH_WORK/corpus
NAME=finishline-$(basename "$PRESET" .toml)${BENCH_TAG:+-$BENCH_TAG}
OUT=$BENCH_WORK/runs/$NAME
rm -rf "$OUT"; mkdir -p "$OUT"
start=$(date +%s.%N)
# Each shot group is one batch (a user drops the takes of one scene together), so colour
# matching uses the group's clips; the manifest says which clips form a group.
"$ROOT/.venv/bin/python" -c '
import json, sys
m = json.load(open(sys.argv[1]))
for g in m["groups"]:   # the first name is the reference look the user picked
    print(g["reference"] + ".mp4", " ".join(c + ".mp4" for c in g["clips"]))
' "$CORPUS/manifest.json" | while read -r ref group; do
  files=()
  for f in $group; do files+=("$CORPUS/degraded/$f"); done
  # shellcheck disable=SC2086
  "$FL" process "${files[@]}" --preset "$PRESET" -o "$OUT" --work "$OUT/jobs" -q --reference "$ref" \
    ${BENCH_ARGS:-}
done
for f in "$OUT"/*.mov; do   # score.py wants OUT_DIR/clipNN.EXT
  base=$(basename "$f"); mv "$f" "$OUT/${base%%.*}.mov"
done
end=$(date +%s.%N)
shopt -s nullglob
: > "$OUT/frames.md5"
for f in "$OUT"/clip*.mov; do
  sum=$(ffmpeg -nostdin -v error -i "$f" -map 0:v -f md5 -)   # a failure stops the run here
  echo "$(basename "$f") $sum" >> "$OUT/frames.md5"
done
"$ROOT/.venv/bin/python" - "$OUT" "$start" "$end" <<'PY'
import json, pathlib, subprocess, sys
out, start, end = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
frames = 0
stages: dict[str, float] = {}
for res in sorted(out.glob("jobs/clip*/result.json")):
    data = json.loads(res.read_text())
    frames += data["frames"]
    for k, v in data["timings"].items():
        stages[k] = stages.get(k, 0.0) + v
wall = end - start
json.dump({"wall_s": round(wall, 1), "frames_out": frames, "fps": round(frames / wall, 3),
           "stages_s": {k: round(v, 1) for k, v in stages.items()}},
          open(out / "timing.json", "w"), indent=2)
print(f"{frames} frames in {wall:.1f}s = {frames / wall:.2f} fps; stages: {stages}")
PY
(cd "$SHARED" && $PY score.py "$OUT" "$CORPUS" && \
  $PY compare.py "$BENCH_WORK/runs/naive" "$BENCH_WORK/runs/classic" "$BENCH_WORK/runs/classic_cm" "$OUT") \
  | tee "$OUT/compare.md"
