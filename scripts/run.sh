#!/usr/bin/env bash
# `make run`: the daemon on the embedded default (./var, SQLite, local workers), with the TUI
# attached when there is a terminal. Without one (a service manager, a pipe) the daemon runs in
# the foreground. Quitting the TUI stops the daemon gracefully (running jobs are re-queued).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-var}
FL=.venv/bin/finishline
if [[ -t 0 && -t 1 ]]; then
  mkdir -p "$ROOT/logs"
  "$FL" daemon --root "$ROOT" 2>>"$ROOT/logs/daemon-stderr.log" &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
  sleep 1
  "$FL" tui --root "$ROOT"
else
  exec "$FL" daemon --root "$ROOT"
fi
