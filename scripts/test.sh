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
# Everything, in two phases: first what can share the machine, on two pytest-xdist workers (unit and
# conformance tests, and the integration tests that time nothing finer than seconds); then, one at a time,
# the tests marked serial (tests/conftest.py): the shared PulseAudio devices, Chromium, and the ones that
# check timing to tens of milliseconds or measure the lab's network profiles.
status=0
python3 -m pytest -n 2 -m "not serial" tests/unit tests/conformance tests/integration tests/e2e "$@" || status=$?
python3 -m pytest -m serial tests/integration tests/e2e "$@" || status=$?
exit "$status"
