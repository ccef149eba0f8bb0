#!/usr/bin/env bash
# Stop the private PulseAudio daemon started by scripts/pulse-up.sh (same $BRIDGE_PULSE_DIR).
set -uo pipefail

BASE=${BRIDGE_PULSE_DIR:-/tmp/bridge-pulse}
export XDG_RUNTIME_DIR=$BASE/run HOME=$BASE/home
export PULSE_SERVER=unix:$BASE/run/pulse/native

for mon in spk micsink; do
  if [[ -f "$BASE/$mon.pid" ]]; then
    kill "$(cat "$BASE/$mon.pid")" 2>/dev/null || true
    rm -f "$BASE/$mon.pid"
  fi
done
pulseaudio --kill 2>/dev/null || pactl exit 2>/dev/null || true
for _ in $(seq 100); do
  pactl info >/dev/null 2>&1 || exit 0
  sleep 0.05
done
echo "pulse-down: daemon in $BASE still answers" >&2
exit 1
