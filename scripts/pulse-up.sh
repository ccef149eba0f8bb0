#!/usr/bin/env bash
# Start a private PulseAudio daemon with virtual devices for the real sounddevice path.
#
#   spk       null sink, the speaker (record what was played with: parecord -d spk.monitor)
#   micsink   null sink; inject "speech" with: paplay -d micsink speech.wav
#   mic       remap source of micsink.monitor, the default source (what sd.InputStream hears)
#
# Recipe and traps: ../shared/ENVIRONMENT.md "sounddevice / PortAudio". norewinds=1 (trap 2) and the
# permanent low-latency parec readers on both monitors (trap 1: idle null sinks render in 2 s blocks).
# Idempotent: if a daemon already answers in $BRIDGE_PULSE_DIR it is reused.
# Prints the environment to use, e.g.:  eval "$(scripts/pulse-up.sh)"
set -euo pipefail

BASE=${BRIDGE_PULSE_DIR:-/tmp/bridge-pulse}
mkdir -p "$BASE/run" "$BASE/home"
chmod 700 "$BASE/run"
export XDG_RUNTIME_DIR=$BASE/run HOME=$BASE/home
export PULSE_SERVER=unix:$BASE/run/pulse/native
unset PULSE_SINK PULSE_SOURCE

if ! command -v pulseaudio >/dev/null; then
  echo "pulse-up: pulseaudio is not installed (apt-get install -y --no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins)" >&2
  exit 1
fi

wait_until() {  # wait_until SECONDS CMD...: poll every 50 ms
  local deadline=$(( $(date +%s%N) + $1 * 1000000000 )); shift
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s%N) > deadline )); then return 1; fi
    sleep 0.05
  done
}

reader_alive() { [[ -f "$BASE/$1.pid" ]] && kill -0 "$(cat "$BASE/$1.pid")" 2>/dev/null; }

if ! pactl info >/dev/null 2>&1; then
  pulseaudio --daemonize=yes --system=false --exit-idle-time=-1 -n \
    --log-target=file:"$BASE/pulse.log" \
    --load="module-native-protocol-unix auth-anonymous=1" \
    --load="module-null-sink sink_name=spk rate=48000 channels=1 norewinds=1" \
    --load="module-null-sink sink_name=micsink rate=48000 channels=1 norewinds=1" \
    --load="module-remap-source source_name=mic master=micsink.monitor" \
    --load="module-always-sink"
  if ! wait_until 10 pactl info; then
    echo "pulse-up: daemon did not answer within 10 s (log: $BASE/pulse.log)" >&2
    exit 1
  fi
fi
pactl set-default-sink spk
pactl set-default-source mic

started_reader=0
for mon in spk micsink; do
  if ! reader_alive "$mon"; then
    nohup parec -d "$mon.monitor" --latency-msec=10 >/dev/null 2>&1 &
    echo $! >"$BASE/$mon.pid"
    started_reader=1
  fi
done
# Wait until both keep-alive readers are connected, then give the null sinks time to leave their
# 2 s idle rendering blocks (the recipe's settle time; ENVIRONMENT.md measured 2.2 s).
wait_until 5 bash -c '[[ $(pactl list short source-outputs | wc -l) -ge 2 ]]'
if (( started_reader )); then sleep 2.2; fi

echo "export XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR"
echo "export PULSE_SERVER=$PULSE_SERVER"
