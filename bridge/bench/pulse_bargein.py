"""Barge-in stop through REAL audio devices (PulseAudio virtual devices, issue #18): speech onset at the
microphone -> the reply silent at the speaker, WebRTC and WS side by side.

The same duplex harness as :mod:`bridge.bench.pulse_m2e` (one PortAudio stream plays into ``micsink`` and
records ``spk.monitor``, so both share one sample clock) plays the lab's turn chain
(:func:`bridge.bench.signals.turn_plan`: a question, then bursts that each talk over the reply to the one
before) into ``bridge run`` on the default devices with its exact barge-in, against ``bridge emulate
--behaviour tone``. Each barge-in's stop is the end of the interrupted reply in the recording minus the
onset of the burst that interrupted it. The harness's own loop (``micsink`` -> ``micsink.monitor``) is
measured the same way and printed beside it. Calls alternate transports, several each. Needs a running
daemon: ``BRIDGE_PULSE_DIR=/tmp/bridge-pulse-lab eval "$(scripts/pulse-up.sh)"``.

    python -m bridge.bench.pulse_bargein --calls 3 --turns 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bridge.bench import signals
from bridge.bench.pulse_m2e import _free_port, _stop, _wait_port, play_and_record, run_harness, start_bridge
from bridge.bench.signals import segments

BLOCK = 240  # 5 ms harness blocks
THINK_MS = 200
REPLY_S = 3.0
VAD_SILENCE_MS = 500


def stops(plan: signals.Plan, heard: np.ndarray) -> list[float]:
    """Barge-in stops (ms): the interrupted reply's end minus the onset of the burst that talked over it."""
    segs = segments(heard)
    out = []
    for k, (_, b) in enumerate(plan.bursts[:-1]):
        nxt = plan.bursts[k + 1][0]
        reply = next((s for s in segs if b + VAD_SILENCE_MS / 2000 < s.start < nxt), None)
        if reply is not None and reply.end > nxt + 0.005 and reply.seconds < REPLY_S - 0.05:
            out.append((reply.end - nxt) * 1000)
    return out


def session(transport: str, base: str, env: dict[str, str], turns: int, tmp: Path) -> list[float]:
    """One ``bridge run`` call on the default devices playing a chain of ``turns``; its barge-in stops."""
    plan = signals.turn_plan(turns, 0.5, vad_silence_ms=VAD_SILENCE_MS, think_ms=THINK_MS, reply_s=REPLY_S)
    transcript = tmp / f"t-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "bridge", "run", "--transport", transport, "--api-base", base]
    cmd += ["--transcript", str(transcript)]
    bridge = start_bridge(cmd, transcript, env)
    try:
        time.sleep(1.0)
        heard = play_and_record(plan.audio, "spk.monitor")
    finally:
        _stop(bridge)
    return stops(plan, heard)


def measure(transports: list[str], calls: int, turns: int) -> dict[str, list[float]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    env["OPENAI_API_KEY"] = "sk-bench-pulse"
    base = f"http://127.0.0.1:{port}/v1"
    argv = [sys.executable, "-m", "bridge", "emulate", "--behaviour", "tone", "--port", str(port)]
    argv += ["--think-ms", str(THINK_MS), "--reply-seconds", str(REPLY_S)]
    emulator = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, list[float]] = {t: [] for t in transports}
    try:
        _wait_port(port, 10)
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(calls):  # interleaved: A B A B ...
                for t in transports if k % 2 == 0 else list(reversed(transports)):
                    out[t] += session(t, base, env, turns, Path(tmp))
    finally:
        _stop(emulator)
    return out


def _row(name: str, v: list[float], expected: int) -> str:
    if not v:
        return f"| {name} | 0 | {expected} | - | - | - |"
    a = np.asarray(v)
    p50, p95 = np.percentile(a, 50), np.percentile(a, 95)
    return f"| {name} | {len(v)} | {expected - len(v)} | {p50:.0f} | {p95:.0f} | {a.max():.0f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", default="webrtc,ws")
    parser.add_argument("--calls", type=int, default=3, help="calls per transport (alternating)")
    parser.add_argument("--turns", type=int, default=6, help="turns per call (turns - 1 barge-ins)")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    if not os.environ.get("PULSE_SERVER"):
        print('pulse_bargein: no PULSE_SERVER: start the virtual devices with `eval "$(scripts/pulse-up.sh)"`')
        return 2
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    harness = run_harness(12, "micsink.monitor")
    result = measure(transports, args.calls, args.turns)
    expected = args.calls * (args.turns - 1)
    print(f"load average {os.getloadavg()[0]:.2f}; harness loop (micsink -> monitor) p50 {harness.summary()['p50']} ms")
    print("| path | n | missed | barge-in stop p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in transports:
        print(_row(t, result[t], expected))
    if args.json:
        Path(args.json).write_text(json.dumps({"harness": harness.summary(), **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
