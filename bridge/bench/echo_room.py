"""An echo room on the PulseAudio virtual devices: what the speaker plays comes back into the microphone.

Runs as its own process on the private daemon (scripts/pulse-up.sh): ``parec`` records the virtual speaker's
monitor (``spk.monitor``), a delay line makes the echo (the speaker's sound at ``--gain-db`` after
``--delay-ms``, plus each ``--reflection EXTRA_MS:GAIN_DB`` after that), and ``pacat`` plays it into the
virtual microphone's sink (``micsink``). Both null sinks run on the daemon's one clock and ``pacat`` keeps
``--buffer-ms`` queued, so the path adds a constant ~buffer + 10-20 ms to the delay line, and a busy machine
(a late Python loop) does not move it: PulseAudio, not this process, keeps time. (A duplex PortAudio stream
underflowed continuously here under load.) As root the room runs SCHED_FIFO so that a loaded machine glitches the
bridge, not the room. Anything else played into ``micsink`` (a "user" talking:
``paplay -d micsink``) is mixed in by PulseAudio.

    eval "$(scripts/pulse-up.sh)"
    python -m bridge.bench.echo_room --delay-ms 30 --gain-db -9 --reflection 7:-16 --reflection 23:-22

It prints ``ready`` once the stream runs and stops on SIGTERM / SIGINT. The pytest fixture is tests/echo_room.py;
:func:`room_command` builds the command line for benchmarks.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

RATE = 48_000
BLOCK = 240  # 5 ms


@dataclass(frozen=True)
class RoomSpec:
    delay_ms: float = 30.0
    gain_db: float = -9.0
    reflections: tuple[tuple[float, float], ...] = ((7.0, -16.0), (23.0, -22.0))

    def taps(self) -> list[tuple[int, float]]:
        first = [(self.delay_ms, self.gain_db)]
        rest = [(self.delay_ms + extra, g) for extra, g in self.reflections]
        return [(round(d * RATE / 1000), 10 ** (g / 20)) for d, g in first + rest]


def room_command(spec: RoomSpec) -> list[str]:
    cmd = [sys.executable, "-m", "bridge.bench.echo_room", f"--delay-ms={spec.delay_ms}", f"--gain-db={spec.gain_db}"]
    for extra, g in spec.reflections:
        cmd += ["--reflection", f"{extra}:{g}"]
    return cmd


@contextlib.contextmanager
def running(
    spec: RoomSpec, env: dict[str, str] | None = None, timeout: float = 10.0
) -> Iterator[subprocess.Popen[str]]:
    """Run the echo room as a subprocess until the block ends (waits for its ``ready``; raises if it dies)."""
    proc = subprocess.Popen(room_command(spec), env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise RuntimeError(f"echo room did not start (exit {proc.poll()}, said {line.strip()!r})")
        yield proc
        if proc.poll() is not None:
            raise RuntimeError(f"echo room ended early (exit {proc.returncode})")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DelayLine:
    """y[n] = sum g * x[n - d] over the taps, block by block (PortAudio thread: slicing and adds only)."""

    def __init__(self, taps: Sequence[tuple[int, float]], max_block: int = 8192) -> None:
        self.taps = list(taps)
        self.buf = np.zeros(max(d for d, _ in self.taps) + max_block, dtype=np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        self.buf[:-n] = self.buf[n:]
        self.buf[-n:] = x
        end = len(self.buf)
        y = np.zeros(n, dtype=np.float32)
        for d, g in self.taps:
            y += g * self.buf[end - n - d : end - d]
        return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def parse_reflection(text: str) -> tuple[float, float]:
    extra, _, gain = text.partition(":")
    try:
        return float(extra), float(gain)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--reflection takes EXTRA_MS:GAIN_DB, got {text!r}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=RoomSpec.delay_ms)
    parser.add_argument("--gain-db", type=float, default=RoomSpec.gain_db)
    parser.add_argument("--reflection", type=parse_reflection, action="append", default=None)
    parser.add_argument("--source", default="spk.monitor")
    parser.add_argument("--sink", default="micsink")
    parser.add_argument("--buffer-ms", type=int, default=40, help="pacat's buffer: the room's own delay, stable")
    args = parser.parse_args(argv)
    refl = tuple(args.reflection) if args.reflection is not None else RoomSpec.reflections
    spec = RoomSpec(args.delay_ms, args.gain_db, refl)
    line = DelayLine(spec.taps())
    try:  # physics does not glitch: keep the room (and parec/pacat, which inherit it) ahead of a busy machine
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):  # not root, or not Linux: an ordinary process
        pass
    fmt = ["--rate=48000", "--channels=1", "--format=s16le", "--raw"]
    rec = subprocess.Popen(["parec", "-d", args.source, *fmt, "--latency-msec=10"], stdout=subprocess.PIPE)
    play = subprocess.Popen(["pacat", "-d", args.sink, *fmt, f"--latency-msec={args.buffer_ms}"], stdin=subprocess.PIPE)

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    assert rec.stdout is not None and play.stdin is not None
    print("ready", flush=True)
    try:
        while True:
            data = rec.stdout.read(2 * BLOCK)
            if len(data) < 2 * BLOCK:
                return 1  # parec ended: the daemon is gone
            play.stdin.write(line.process(np.frombuffer(data, dtype="<i2")).tobytes())
            play.stdin.flush()
    except BrokenPipeError:
        return 1
    finally:
        for proc in (rec, play):
            proc.terminate()
        for proc in (rec, play):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
