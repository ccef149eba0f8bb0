#!/usr/bin/env bash
# The full latency lab (docs/benchmarks.md): every transport x profile, 16 trials each, stock aiortc on the
# four original profiles (~16 min on the 2-core lab machine, root); then the WebRTC downlink policies on a
# virtual clock (CPU-independent, ~40 s) into out/bench/downlink.md. Extra arguments go to `bridge bench`,
# e.g. scripts/bench.sh --profiles clean --trials 5
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
bridge bench --transports webrtc,ws --profiles clean,wifi,lossy,mobile,cell-edge,congested-wifi --trials 16 \
  --stock clean,wifi,lossy,mobile --out out/bench -v "$@" || status=$?
mkdir -p out/bench
python -m bridge.bench.downlink --seconds 60 --seeds 3 | tee out/bench/downlink.md
exit "$status"
