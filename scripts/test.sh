#!/usr/bin/env bash
# The test command (README, CI): set up, start the private PulseAudio daemon, lint, type-check, run every suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -x scripts/pulse-up.sh ] || [ -f scripts/pulse-up.sh ]; then
  eval "$(bash scripts/pulse-up.sh)"
  trap 'bash scripts/pulse-down.sh >/dev/null 2>&1 || true' EXIT
fi
ruff check bridge tests scripts
ruff format --check bridge tests scripts
python3 -m mypy
python3 -m pytest "$@"
