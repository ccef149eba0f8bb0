#!/usr/bin/env bash
# The full latency lab (docs/benchmarks.md): every transport x profile, 20 trials each (~13 min, root).
# Extra arguments go to `bridge bench`, e.g. scripts/bench.sh --profiles clean --trials 5
set -euo pipefail
cd "$(dirname "$0")/.."
exec bridge bench --transports webrtc,ws --profiles clean,wifi,lossy,mobile --trials 20 --out out/bench -v "$@"
