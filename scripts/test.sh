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
if [ "$#" -gt 0 ] && [[ "$1" != -* ]]; then
  python3 -m pytest "$@"  # a chosen part (paths first): as asked
  exit
fi
# Everything, in two phases: the unit and conformance tests need no real time and share both cores
# (pytest-xdist); the integration and browser tests play audio and time networks in real time, one at a time.
status=0
python3 -m pytest -n 2 tests/unit tests/conformance "$@" || status=$?
python3 -m pytest tests/integration tests/e2e "$@" || status=$?
exit "$status"
