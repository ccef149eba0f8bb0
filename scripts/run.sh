#!/usr/bin/env bash
# The main job: set up, then `bridge run` with your arguments. Offline on the built-in emulator when no
# OPENAI_API_KEY is set. With no arguments and no sound card, it speaks a generated sentence into the
# model from a .wav "microphone" and records the reply to out/demo-reply.wav.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
if [ $# -gt 0 ]; then exec bridge run "$@"; fi
if python3 -c "import sounddevice as sd, sys; sys.exit(0 if sd.query_devices() else 1)" 2>/dev/null; then
  exec bridge run
fi
mkdir -p out
python3 -m bridge.app.demo_input out/demo-input.wav
echo "run: no sound card found: using out/demo-input.wav as the microphone, recording to out/demo-reply.wav"
exec bridge run --input out/demo-input.wav --output out/demo-reply.wav --duration 12 \
  --transcript out/demo-transcript.jsonl
