"""The kiosk's own numbers, through real (virtual) sound devices: ``python -m bridge.bench.kiosk``.

A private PulseAudio daemon (scripts/pulse-up.sh in a temporary directory), ``bridge emulate`` on
127.0.0.1 (tone replies, its loopback admin API), and ``bridge run --kiosk`` on the virtual devices with
its health endpoint. Then, per mode:

``--aec``: with echo cancellation (the default on sound cards) the speaker stays open while the kiosk idles.

- ``idle``: the kiosk listening for ``--seconds`` with nobody there: its CPU (utime + stime from /proc,
  share of one core) and RSS (the sound stack's own floor: ``python -m bridge.bench.wakeups`` and
  docs/benchmarks.md "Kiosk runner");
- ``cycles``: ``--cycles`` visitors one after the other: a sentence (espeak-ng) is played into the
  microphone; the reply's first sound is found on the speaker's monitor; the kiosk hangs up after
  ``--hangup-after`` s of silence. Per visitor: wake-to-first-reply (speech onset to reply at the speaker),
  and, for comparison, the same sentence into a call that is already open (``bridge run`` on the same
  devices); after each hang-up the emulator's open sessions (must be 0: no call leaked). Over the run:
  the kiosk stays alive, RSS sampled every 10 s (first vs last fifth), and no traceback in its log.
  ``--minutes`` keeps cycling until that much time has passed (the soak run).

Prints a JSON summary and a Markdown table; ``--out`` keeps both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bridge.bench import sounds

REPO = Path(__file__).resolve().parents[2]
RATE = 48_000
SENTENCE = "Hello, could you tell me where the exhibition starts?"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Pulse:
    base: Path
    env: dict[str, str] = field(default_factory=dict)

    def up(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env["BRIDGE_PULSE_DIR"] = str(self.base)
        out = subprocess.run(
            ["bash", str(REPO / "scripts/pulse-up.sh")], env=env, capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value
        self.env = env

    def down(self) -> None:
        subprocess.run(["bash", str(REPO / "scripts/pulse-down.sh")], env=self.env, capture_output=True)


def speech_wav(path: Path, cache: Path) -> float:
    """The visitor's sentence as a 48 kHz wav; returns where its speech begins (s)."""
    x = sounds.espeak(SENTENCE, "en-us", 160, cache) * 0.8
    onset, _ = sounds.speech_onset(x)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(sounds.to_int16(x).tobytes())
    return onset


class Recorder:
    """parec on the speaker's monitor, raw s16 mono 48 kHz, with the wall-clock time of its first byte."""

    def __init__(self, env: dict[str, str], path: Path) -> None:
        self.path = path
        self.started: float | None = None
        self._file = path.open("wb")
        argv = ["parec", "-d", "spk.monitor", "--rate=48000", "--channels=1", "--format=s16le", "--latency-msec=5"]
        self._proc = subprocess.Popen(argv, env=env, stdout=self._file)
        deadline = time.monotonic() + 5
        while self._file.tell() == 0 and path.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        self.started = time.time() - path.stat().st_size / 2 / RATE

    def first_sound_after(self, t_unix: float, level: int = 1500) -> float | None:
        """Wall-clock time of the first sample above ``level`` after ``t_unix``."""
        assert self.started is not None
        x = np.fromfile(self.path, dtype="<i2")
        start = max(0, int((t_unix - self.started) * RATE))
        hot = np.flatnonzero(np.abs(x[start:].astype(np.int32)) > level)
        return None if not len(hot) else self.started + (start + int(hot[0])) / RATE

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait()
        self._file.close()


async def health(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as resp:
        return dict(await resp.json())


async def sessions(admin: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{admin}/sessions") as resp:
        return len((await resp.json())["sessions"])


async def wait_state(port: int, states: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = str((await health(port))["state"])
        except (aiohttp.ClientError, OSError):
            state = ""
        if state in states:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"kiosk state {state!r}, waited for {states}")
        await asyncio.sleep(0.05)


def play(env: dict[str, str], wav: Path) -> float:
    """Start playing ``wav`` into the microphone; returns the wall-clock time playback starts."""
    subprocess.Popen(["paplay", "-d", "micsink", str(wav)], env=env)
    return time.time()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bridge-kiosk-bench-"))
    pulse = Pulse(work / "pulse")
    pulse.up()
    cache = work / "speech"
    cache.mkdir()
    wav = work / "visitor.wav"
    onset_s = speech_wav(wav, cache)
    emu_port, health_port = free_port(), free_port()
    env = {**pulse.env, "OPENAI_API_KEY": "sk-bench-kiosk", "XDG_STATE_HOME": str(work / "state")}
    emu = subprocess.Popen(  # noqa: ASYNC220 - a harness starting its servers once
        [sys.executable, "-m", "bridge", "emulate", "--port", str(emu_port), "--think-ms", "300", "--reply-seconds",
         "1.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    admin = f"http://127.0.0.1:{emu_port}/_emulator"
    base = f"http://127.0.0.1:{emu_port}/v1"
    log_path = work / "kiosk.log"
    kiosk: subprocess.Popen[bytes] | None = None
    recorder = Recorder(pulse.env, work / "spk.raw")
    out: dict[str, Any] = {"transport": args.transport, "aec": args.aec, "hangup_after_s": args.hangup_after}
    try:
        assert emu.stdout is not None
        emu.stdout.readline()  # "listening on ..."
        with log_path.open("wb") as log_file:
            kiosk = subprocess.Popen(  # noqa: ASYNC220 - a harness starting its servers once
                [sys.executable, "-m", "bridge", "run", "--kiosk", "--transport", args.transport, "--api-base", base,
                 "--health-port", str(health_port), "--hangup-after", str(args.hangup_after),
                 "--transcript-dir", str(work / "calls"), "--aec", args.aec, "-v"],
                env=env, stderr=log_file, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            await wait_state(health_port, ("idle",), 30)
            await asyncio.sleep(2)  # settle
            if "idle" in args.modes:
                out["idle"] = await idle_cpu(kiosk.pid, args.seconds)
            if "cycles" in args.modes:
                out["cycles"] = await cycles(args, pulse, kiosk.pid, health_port, admin, wav, onset_s, recorder)
            out["alive"] = kiosk.poll() is None
        text = log_path.read_text(errors="replace")
        out["tracebacks"] = text.count("Traceback")
        if "cycles" in args.modes and args.compare_open_call:
            out["open_call"] = await open_call(args, pulse, base, env, wav, onset_s, recorder, work)
    finally:
        if kiosk is not None and kiosk.poll() is None:
            kiosk.send_signal(signal.SIGTERM)
            kiosk.wait(10)
        recorder.close()
        emu.terminate()
        emu.wait(10)
        pulse.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return out


async def idle_cpu(pid: int, seconds: float) -> dict[str, float]:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return {
        "seconds": seconds,
        "cpu_pct": round(100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0), 2),
        "rss_mb": round(rss_mb(pid), 1),
    }


async def cycles(
    args: argparse.Namespace,
    pulse: Pulse,
    pid: int,
    port: int,
    admin: str,
    wav: Path,
    onset_s: float,
    recorder: Recorder,
) -> dict[str, Any]:
    t_start = time.monotonic()
    wake_ms: list[float] = []
    leaks = 0
    rss: list[tuple[float, float]] = []
    misses = 0
    n = 0
    while n < args.cycles or time.monotonic() - t_start < args.minutes * 60:
        n += 1
        t_play = play(pulse.env, wav)
        try:
            await wait_state(port, ("in_call",), 15)
            reply = None
            deadline = time.monotonic() + 15
            while reply is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                reply = recorder.first_sound_after(t_play + onset_s + 0.5)
            await wait_state(port, ("idle",), args.hangup_after + 20)
        except TimeoutError as exc:
            misses += 1
            print(f"cycle {n}: {exc}", file=sys.stderr)
            continue
        if reply is None:
            misses += 1
        else:
            wake_ms.append((reply - (t_play + onset_s)) * 1000)
        leaks += await sessions(admin)
        rss.append((time.monotonic() - t_start, rss_mb(pid)))
        await asyncio.sleep(1.0)
    fifth = max(1, len(rss) // 5)
    return {
        "cycles": n,
        "minutes": round((time.monotonic() - t_start) / 60, 1),
        "missed": misses,
        "leaked_sessions": leaks,
        "wake_to_reply_ms": summary(wake_ms),
        "rss_mb_first_fifth": round(statistics.median(r for _, r in rss[:fifth]), 1) if rss else None,
        "rss_mb_last_fifth": round(statistics.median(r for _, r in rss[-fifth:]), 1) if rss else None,
    }


async def open_call(
    args: argparse.Namespace,
    pulse: Pulse,
    base: str,
    env: dict[str, str],
    wav: Path,
    onset_s: float,
    recorder: Recorder,
    work: Path,
) -> dict[str, Any]:
    """The same sentence into a call that was already open: ``bridge run`` on the same devices."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - a harness starting its servers once
        [sys.executable, "-m", "bridge", "run", "--transport", args.transport, "--api-base", base, "--transcript",
         str(work / "open.jsonl"), "--duration", str(6 * args.open_turns + 4), "--aec", args.aec],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ms: list[float] = []
    try:
        await asyncio.sleep(3)
        for _ in range(args.open_turns):
            t_play = play(pulse.env, wav)
            await asyncio.sleep(6)
            reply = recorder.first_sound_after(t_play + onset_s + 0.5)
            if reply is not None:
                ms.append((reply - (t_play + onset_s)) * 1000)
    finally:
        proc.wait(30)
    return {"speech_onset_to_reply_ms": summary(ms)}


def summary(xs: list[float]) -> dict[str, float | int] | None:
    if not xs:
        return None
    s = sorted(xs)
    return {"n": len(s), "p50": round(s[len(s) // 2], 1), "p95": round(s[min(len(s) - 1, int(0.95 * len(s)))], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.kiosk", description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="idle,cycles", help="idle, cycles (comma-separated)")
    p.add_argument("--transport", choices=["webrtc", "ws"], default="webrtc")
    p.add_argument("--seconds", type=float, default=60.0, help="idle measurement length")
    p.add_argument("--cycles", type=int, default=10, help="visitors (at least)")
    p.add_argument("--minutes", type=float, default=0.0, help="keep cycling at least this long (soak)")
    p.add_argument("--hangup-after", type=float, default=3.0)
    p.add_argument("--aec", choices=["on", "off", "auto"], default="auto", help="bridge run's --aec (auto: on here)")
    p.add_argument("--open-turns", type=int, default=5)
    p.add_argument("--no-compare", dest="compare_open_call", action="store_false")
    p.add_argument("--out", default=None, metavar="FILE.json")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    result = asyncio.run(bench(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if result.get("alive", True) and not result.get("tracebacks") else 1


if __name__ == "__main__":
    sys.exit(main())
