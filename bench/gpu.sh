#!/usr/bin/env bash
# GPU benchmark, ready to run on a server with NVIDIA GPUs (a few minutes): fps of each AI
# stage (RIFE at 1080p, Real-ESRGAN 1080p->4K fp16, with and without TensorRT) and of the
# youtube-1080p and youtube-4k chains with 1 worker and one per GPU. On a machine without a
# GPU it says so, prints CPU figures at a small size and exits 0.
#   bench/gpu.sh [--frames 24] [--seconds 4]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ -x $ROOT/.venv/bin/python ]] || "$ROOT/scripts/setup.sh"
"$ROOT/.venv/bin/finishline" models install >/dev/null
exec "$ROOT/.venv/bin/python" "$ROOT/bench/gpu.py" "$@"
