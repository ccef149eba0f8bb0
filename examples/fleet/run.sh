#!/usr/bin/env bash
# A fleet on one machine, without compose: one Redis, three `bridge serve` replicas, HAProxy in front.
#   examples/fleet/run.sh [bridge serve flags...]     e.g.  --agents examples/agents/korean/agents.toml
# Then open http://127.0.0.1:${FLEET_PORT:-8080}/ . Ctrl-C (or SIGTERM) stops everything; each replica
# hands its calls to the others as it goes. With no OPENAI_API_KEY one shared `bridge emulate` plays the
# API (the replicas must share one upstream for a takeover to find the call).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python3}"
PORT="${FLEET_PORT:-8080}"
REDIS_PORT="${FLEET_REDIS_PORT:-6390}"
BASE="${FLEET_REPLICA_BASE:-8180}"   # replicas on BASE+1..BASE+3
EMU_PORT="${FLEET_EMULATOR_PORT:-8170}"
DIR="${FLEET_DIR:-$(mktemp -d /tmp/bridge-fleet.XXXXXX)}"
mkdir -p "$DIR"

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
  --logfile "$DIR/redis.log" &
pids+=($!)
echo "redis pid $! port $REDIS_PORT"

if [ -z "${OPENAI_API_KEY:-}" ]; then
  "$PY" -m bridge emulate --host 127.0.0.1 --port "$EMU_PORT" >"$DIR/emulator.log" 2>&1 &
  pids+=($!)
  echo "emulator pid $! port $EMU_PORT"
  export OPENAI_API_KEY="sk-fleet-emulator-0000" OPENAI_BASE_URL="http://127.0.0.1:$EMU_PORT/v1"
fi

export BRIDGE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" BRIDGE_TRUST_FORWARDED=1
for i in 1 2 3; do
  "$PY" -m bridge serve --host 127.0.0.1 --port "$((BASE + i))" --replica-id "r$i" \
    --transcripts-dir "$DIR/transcripts-r$i" "$@" >"$DIR/r$i.out" 2>"$DIR/r$i.log" &
  pids+=($!)
  echo "replica r$i pid $! port $((BASE + i))"
done

export FLEET_BIND="127.0.0.1:$PORT" FLEET_R1="127.0.0.1:$((BASE + 1))" FLEET_R2="127.0.0.1:$((BASE + 2))" \
  FLEET_R3="127.0.0.1:$((BASE + 3))"
haproxy -f "$here/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
pids+=($!)
echo "haproxy pid $! port $PORT"
echo "fleet up: http://127.0.0.1:$PORT/ (logs in $DIR)"
wait
