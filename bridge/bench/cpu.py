"""Steady-state CPU of ``bridge run`` in a call, configurations interleaved and repeated (issue #3).

Each run starts ``bridge run`` against ``bridge emulate --behaviour echo`` on 127.0.0.1 (the echo sends
the microphone straight back, so audio flows both ways all the time), waits for the call to settle,
reads ``/proc/<pid>/stat`` over ``--seconds``, and stops it. The microphone is a ``.wav`` of 1 kHz bursts
(100 ms every 500 ms) unless ``--input`` says otherwise. Configurations run in turn, ``--repeats`` times,
so machine noise spreads over all of them; the median is reported.

    python -m bridge.bench.cpu --seconds 20 --repeats 3
    python -m bridge.bench.cpu --input default --output default   # PulseAudio devices (scripts/pulse-up.sh)

``--threads`` adds each thread's share, by thread name: ``loop`` (the event loop), ``bridge-mic`` and
``bridge-speaker`` (PortAudio's callbacks), ``threaded-ml`` (PulseAudio's client threads).

On sound devices, add ``floor`` to ``--configs``: PortAudio's streams alone at the bridge's block sizes
with empty callbacks, in the same rotation, so that each configuration's own share (its CPU minus the
floor of the same round) is read at the same machine state. This VM's CPU costs drift by a quarter over
a day; the paired difference does not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bridge.bench.pulse_m2e import _cpu_and_rss, _stop, _wait_for, echo_emulator
from bridge.bench.signals import burst, write_wav
from bridge.bench.wakeups import FLOOR_SCRIPT
from bridge.media.base import DEVICE_BLOCK_MS, DEVICE_INPUT_BLOCK_MS

CONFIGS: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "webrtc": ("WebRTC", ["--transport", "webrtc"], {}),
    "webrtc-loop-uplink": (
        "WebRTC, uplink sent from the event loop (BRIDGE_FAST_RTP=loop)",
        ["--transport", "webrtc"],
        {"BRIDGE_FAST_RTP": "loop"},
    ),
    "webrtc-aiortc-rtp": (
        "WebRTC on aiortc's own RTP loops (BRIDGE_FAST_RTP=0)",
        ["--transport", "webrtc"],
        {"BRIDGE_FAST_RTP": "0"},
    ),
    "ws": ("WebSocket", ["--transport", "ws"], {}),
    "floor": ("PortAudio + PulseAudio alone (bridge's blocks, empty callbacks)", [], {}),
}
SETTLE_S = 4.0
"""Default seconds between the session starting and the measured window (``--settle``)."""


def _mic(path: Path, seconds: float) -> Path:
    one = np.zeros(24_000, dtype=np.int16)
    one[:4800] = burst(0.1, 1000.0, level=0.3)
    return write_wav(path, np.tile(one, int(seconds * 2) + 1))


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid``, summed by thread name (the main thread: ``loop``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended
            continue
        name = "loop" if int(tid) == pid else stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def one_run(
    base: str,
    env: dict[str, str],
    args: list[str],
    extra_env: dict[str, str],
    seconds: float,
    tmp: Path,
    settle: float = SETTLE_S,
) -> tuple[float, dict[str, float]]:
    """CPU % of one core of a ``bridge run`` in a call, and the same per thread name."""
    transcript = tmp / f"t-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "bridge", "run", "--api-base", base, "--transcript", str(transcript)]
    cmd += ["--bargein", "naive", *args]  # echo answers the user's own audio: no barge-in handling
    proc = subprocess.Popen(cmd, env={**env, **extra_env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(transcript, '"kind": "session"', 20)
        time.sleep(settle)
        threads0, cpu0, t0 = thread_cpu(proc.pid), _cpu_and_rss(proc.pid)[0], time.monotonic()
        time.sleep(seconds)
        cpu1, threads1 = _cpu_and_rss(proc.pid)[0], thread_cpu(proc.pid)
        elapsed = time.monotonic() - t0
        per_thread = {k: (v - threads0.get(k, 0.0)) / elapsed * 100 for k, v in threads1.items()}
        return (cpu1 - cpu0) / elapsed * 100, per_thread
    finally:
        _stop(proc)


def floor_run(env: dict[str, str], seconds: float) -> float:
    """CPU % of the bridge's device streams with callbacks that do nothing (the default devices)."""
    cmd = [sys.executable, "-c", FLOOR_SCRIPT, str(DEVICE_BLOCK_MS), str(DEVICE_INPUT_BLOCK_MS), str(seconds)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"PortAudio streams did not open: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=SETTLE_S, help="seconds from the session to the window")
    parser.add_argument("--input", default=None, help="DEV for --input (default: a .wav of tone bursts)")
    parser.add_argument("--output", default="null", help="DEV for --output (default null)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of: " + ", ".join(CONFIGS))
    parser.add_argument("--threads", action="store_true", help="also CPU per thread (median over the rounds)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s): {', '.join(unknown)}")
    results: dict[str, list[float]] = {n: [] for n in names}
    threads: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    with echo_emulator("sk-bench-cpu") as (base, env), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        mic = args.input or str(_mic(tmp / "mic.wav", args.seconds + args.settle + 10))
        devices = ["--input", mic, "--output", args.output, "--duration", str(args.seconds + args.settle + 8)]
        for _ in range(args.repeats):
            for name in names:
                _label, flags, extra = CONFIGS[name]
                if name == "floor":
                    results[name].append(floor_run(env, args.seconds))
                else:
                    cpu, per_thread = one_run(base, env, [*flags, *devices], extra, args.seconds, tmp, args.settle)
                    results[name].append(cpu)
                    threads[name].append(per_thread)
    print(f"input {args.input or 'tone bursts (.wav)'}, output {args.output}, {args.seconds:.0f} s x {args.repeats}")
    print("| configuration | bridge CPU % (median) | runs |")
    print("|---|---:|---|")
    for name, values in results.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {CONFIGS[name][0]} | {statistics.median(values):.1f} | {runs} |")
    if "floor" in results:
        print()
        print("| configuration | own share: CPU % minus the floor of the same round (median) | per round |")
        print("|---|---:|---|")
        for name, values in results.items():
            if name != "floor":
                own = [v - f for v, f in zip(values, results["floor"], strict=True)]
                runs = ", ".join(f"{v:.1f}" for v in own)
                print(f"| {CONFIGS[name][0]} | {statistics.median(own):.1f} | {runs} |")
    if args.threads:
        print()
        print("| configuration | CPU % per thread (median over the rounds) |")
        print("|---|---|")
        for name, per_round in threads.items():
            if per_round:
                names_seen = {k for r in per_round for k in r}
                medians = {k: statistics.median(r.get(k, 0.0) for r in per_round) for k in names_seen}
                cells = ", ".join(f"{k} {v:.1f}" for k, v in sorted(medians.items(), key=lambda kv: -kv[1]) if v > 0)
                print(f"| {CONFIGS[name][0]} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
