"""Black-box mouth-to-ear round trip through REAL audio devices (PulseAudio virtual devices, issue #3).

A harness plays tone bursts into the virtual microphone (sink ``micsink``; the bridge records its monitor
as its default input) and records the virtual speaker's monitor (``spk.monitor``) in ONE duplex PortAudio
stream, so both directions share one sample clock. ``bridge run`` runs as a subprocess on the default
devices against ``bridge emulate --behaviour echo`` (which sends received audio straight back), so the
round trip is: harness out -> mic -> bridge uplink -> emulator -> bridge downlink -> speaker -> harness in.

The harness's own loop (play into ``micsink``, record ``micsink.monitor``) is measured the same way and
reported beside it: subtract it to get the bridge's share. Needs a running daemon (``scripts/pulse-up.sh``).

    python -m bridge.bench.pulse_m2e --transport webrtc --bursts 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench.wakeups import FLOOR_SCRIPT
from bridge.media.base import DEVICE_BLOCK_MS, DEVICE_INPUT_BLOCK_MS

RATE = 48_000
BLOCK = 240  # 5 ms harness blocks
BURST_S = 0.06
PERIOD_S = 0.7
LEVEL = 0.25
THRESHOLD = 2000


def _burst() -> np.ndarray:
    t = np.arange(int(BURST_S * RATE)) / RATE
    x = LEVEL * np.sin(2 * np.pi * 1000 * t)
    ramp = int(0.002 * RATE)
    x[:ramp] *= np.linspace(0, 1, ramp)
    x[-ramp:] *= np.linspace(1, 0, ramp)
    return (x * 32767).astype(np.int16)


@dataclass
class Loop:
    """Round trips (ms) measured on the harness's sample clock."""

    rtt_ms: list[float]
    missed: int

    def summary(self) -> dict[str, object]:
        a = np.array(self.rtt_ms) if self.rtt_ms else np.array([np.nan])
        return {
            "n": len(self.rtt_ms),
            "missed": self.missed,
            "p50": round(float(np.median(a)), 1),
            "p95": round(float(np.percentile(a, 95)), 1),
            "max": round(float(np.max(a)), 1),
            "all": [round(x, 1) for x in self.rtt_ms],
        }


@contextlib.contextmanager
def _pulse_env(sink: str, source: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("PULSE_SINK", "PULSE_SOURCE")}
    os.environ["PULSE_SINK"], os.environ["PULSE_SOURCE"] = sink, source
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def play_and_record(played: np.ndarray, record_from: str) -> np.ndarray:
    """Play ``played`` into ``micsink`` and record ``record_from`` in one duplex stream (one sample clock)."""
    import sounddevice as sd

    total = len(played)
    heard = np.zeros(total, dtype=np.int16)
    pos = [0]
    done = threading.Event()

    def callback(indata: Any, outdata: Any, frames: int, _time: Any, _status: Any) -> None:  # PortAudio thread
        a = pos[0]
        b = min(a + frames, total)
        outdata[: b - a, 0] = played[a:b]
        outdata[b - a :, 0] = 0
        heard[a:b] = indata[: b - a, 0]
        pos[0] = b
        if b >= total:
            done.set()

    with _pulse_env("micsink", record_from):
        sd._terminate()  # PortAudio reads the ALSA/pulse configuration at initialisation
        sd._initialize()
        with sd.Stream(samplerate=RATE, blocksize=BLOCK, channels=1, dtype="int16", latency="low", callback=callback):
            done.wait(total / RATE + 5)
    return heard


def run_harness(bursts: int, record_from: str) -> Loop:
    """Play ``bursts`` into micsink, record ``record_from``, one duplex stream; return the round trips."""

    burst = _burst()
    period = int(PERIOD_S * RATE)
    total = period * (bursts + 1)
    played = np.zeros(total, dtype=np.int16)
    # a random sub-frame phase per burst: with every period a multiple of every block size, all bursts would
    # meet the 5/10/20 ms block boundaries at the same phase and the spread would be hidden
    rng = np.random.default_rng(7)
    starts = [period // 2 + k * period + int(rng.integers(0, 960)) for k in range(bursts)]
    for s in starts:
        played[s : s + len(burst)] = burst
    heard = play_and_record(played, record_from)
    loud = np.abs(heard.astype(np.int32)) > THRESHOLD
    rtts, missed = [], 0
    for s in starts:
        window = loud[s : s + period - len(burst)]
        hit = int(np.argmax(window)) if window.any() else -1
        if hit < 0:
            missed += 1
        else:
            rtts.append(hit / RATE * 1000)
    return Loop(rtts, missed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the emulator never listened on port {port}")
        time.sleep(0.05)


def start_bridge(cmd: list[str], transcript: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``bridge run`` (``cmd``), once its transcript has its ``session`` line; one error line if it never does."""
    bridge = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(transcript, '"kind": "session"', 20)
    except RuntimeError:
        bridge.kill()
        raise RuntimeError(f"bridge run did not start: {bridge.communicate()[1].decode().strip()}") from None
    return bridge


def _wait_for(path: Path, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and needle in path.read_text()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never showed {needle!r}")
        time.sleep(0.05)


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    """(user+system CPU seconds, peak RSS in KiB) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    return cpu, hwm


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.send_signal(2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    if proc.poll() is None:
        proc.kill()


def _uplink(transcript: Path) -> str:
    """Where the call's RTP left from (the ``stats`` line's ``fast_rtp.uplink``; ``-`` for WebSocket)."""
    for line in transcript.read_text().splitlines() if transcript.exists() else []:
        rec = json.loads(line)
        if rec.get("kind") == "stats":
            return str((rec.get("fast_rtp") or {}).get("uplink", "-"))
    return "-"


def _session(transport: str, base: str, env: dict[str, str], bursts: int, tmp: Path) -> tuple[Loop, float, int, str]:
    """One ``bridge run`` session: (round trips, CPU %, peak RSS KiB, where the uplink was sent from)."""
    transcript = tmp / f"t-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "bridge", "run", "--transport", transport, "--api-base", base]
    # echo answers the user's own "speech": the exact barge-in would (rightly) cut it off, so the transport
    # path is measured with barge-in handling off
    cmd += ["--transcript", str(transcript), "--bargein", "naive"]
    bridge = start_bridge(cmd, transcript, env)
    try:
        time.sleep(0.5)
        cpu0, t0 = _cpu_and_rss(bridge.pid)[0], time.monotonic()
        loop = run_harness(bursts, "spk.monitor")
        cpu1, hwm = _cpu_and_rss(bridge.pid)
        cpu_pct = (cpu1 - cpu0) / (time.monotonic() - t0) * 100
    finally:
        _stop(bridge)
    return loop, cpu_pct, hwm, _uplink(transcript)


@contextlib.contextmanager
def echo_emulator(api_key: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``bridge emulate --behaviour echo`` on a free loopback port, stopped at the end: its API base URL, and
    an environment for ``bridge run`` against it (``api_key``; none of the caller's OPENAI_/BRIDGE_ settings)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    env["OPENAI_API_KEY"] = api_key
    emulator = subprocess.Popen(
        [sys.executable, "-m", "bridge", "emulate", "--behaviour", "echo", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, 10)
        yield f"http://127.0.0.1:{port}/v1", env
    finally:
        _stop(emulator)


def measure(transport: str, bursts: int, sessions: int = 4) -> dict[str, object]:
    """``bursts`` round trips over ``sessions`` separate calls: the pipeline is clock-locked within one
    call (every burst sees the same frame phases), so phases are sampled by starting new calls."""
    rtts: list[float] = []
    missed, cpus, hwm, uplinks = 0, [], 0, set()
    with echo_emulator("sk-bench-pulse") as (base, env), tempfile.TemporaryDirectory() as tmp:
        for k in range(sessions):
            n = bursts // sessions + (1 if k < bursts % sessions else 0)
            loop, cpu, rss, uplink = _session(transport, base, env, n, Path(tmp))
            uplinks.add(uplink)
            rtts += loop.rtt_ms
            missed += loop.missed
            cpus.append(cpu)
            hwm = max(hwm, rss)
    return {
        "transport": transport,
        **Loop(rtts, missed).summary(),
        "bridge_cpu_pct": round(float(np.median(cpus)), 1),
        "bridge_peak_rss_mib": round(hwm / 1024, 1),
        "uplink": ", ".join(sorted(uplinks)),
    }


def stream_floor(bursts: int) -> dict[str, object]:
    """CPU of PortAudio/PulseAudio alone: the bridge's device streams (same block sizes, latency hint and
    raw callbacks) with callbacks that do nothing, measured while the harness plays ``bursts`` bursts, the
    way the bridge is measured. The bridge cannot use less than this on these devices."""
    seconds = PERIOD_S * (bursts + 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BRIDGE_"))}
    blocks = [str(DEVICE_BLOCK_MS), str(DEVICE_INPUT_BLOCK_MS), str(seconds)]
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_SCRIPT, *blocks], env=env, stdout=subprocess.PIPE)
    try:
        time.sleep(1)  # the script settles for a second, then measures while the harness plays
        run_harness(bursts, "spk.monitor")
        out, _ = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not out.split():
        raise RuntimeError("the PortAudio floor process could not open the devices")
    cpu, _out_lat, _in_lat, rss_kib = (float(x) for x in out.split())
    return {
        "transport": "PortAudio streams alone (bridge's blocks, empty callbacks)",
        **dict.fromkeys(("n", "missed", "p50", "p95", "max"), "-"),
        "bridge_cpu_pct": round(cpu, 1),
        "bridge_peak_rss_mib": round(rss_kib / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", default="webrtc,ws")
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=4, help="separate calls the bursts are spread over")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    if not os.environ.get("PULSE_SERVER"):
        print('pulse_m2e: no PULSE_SERVER: start the virtual devices with `eval "$(scripts/pulse-up.sh)"`')
        return 2
    rows = [
        {
            "transport": "harness only (micsink -> micsink.monitor)",
            **run_harness(args.bursts, "micsink.monitor").summary(),
        }
    ]
    rows.append(stream_floor(args.bursts // max(1, args.sessions)))
    for transport in args.transport.split(","):
        rows.append(measure(transport.strip(), args.bursts, args.sessions))
    print("| path | n | missed | p50 ms | p95 ms | max ms | bridge CPU % | bridge peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['transport']} | {r['n']} | {r['missed']} | {r['p50']} | {r['p95']} | {r['max']} | "
            f"{r.get('bridge_cpu_pct', '')} | {r.get('bridge_peak_rss_mib', '')} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
