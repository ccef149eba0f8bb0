"""An echo room on the PulseAudio virtual devices: what the speaker plays comes back into the microphone.

PulseAudio's own ``module-loopback`` copies the virtual speaker's monitor (``spk.monitor``) into the virtual
microphone's sink (``micsink``): one loopback for the direct echo (``delay_ms``, ``gain_db``) and one per
reflection (``delay_ms + extra``, its own gain), mixed by the daemon. Both null sinks run on the daemon's one
clock, so the loopbacks' rate adjustment is off (``adjust_time=0``): no resampling, the path stays put. Inside
the daemon the path keeps time whatever the machine does: under a load average of 6 on 2 cores the echo
stayed 22.8-23.4 ms behind PortAudio's play-out timestamps over 12 s (requested 30 ms; that run still had the
rate adjustment on), where an echo process of our own (``parec`` -> delay line -> ``pacat``) jumped by +25
and +125 ms as PulseAudio raised ``pacat``'s latency after underruns (docs/benchmarks.md, "Echo
cancellation"). Anything else played into ``micsink`` (a "user" talking: ``paplay -d micsink``) is mixed in.

    eval "$(scripts/pulse-up.sh)"
    python -m bridge.bench.echo_room --delay-ms 30 --gain-db -9 --reflection 7:-16 --reflection 23:-22

It prints ``ready`` once the loopbacks run and unloads them on SIGTERM / SIGINT. The pytest fixture is
tests/echo_room.py; benchmarks use :func:`running`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RoomSpec:
    delay_ms: float = 30.0
    gain_db: float = -9.0
    reflections: tuple[tuple[float, float], ...] = ((7.0, -16.0), (23.0, -22.0))

    def paths(self) -> list[tuple[float, float]]:
        """(latency ms, gain dB) of every loopback: the direct echo first."""
        return [(self.delay_ms, self.gain_db)] + [(self.delay_ms + extra, g) for extra, g in self.reflections]


def _pactl(env: dict[str, str] | None, *args: str) -> str:
    return subprocess.run(["pactl", *args], env=env, check=True, capture_output=True, text=True, timeout=10).stdout


@contextlib.contextmanager
def running(
    spec: RoomSpec, env: dict[str, str] | None = None, source: str = "spk.monitor", sink: str = "micsink"
) -> Iterator[list[str]]:
    """Load the room's loopbacks for the duration of the block (yields their module indices)."""
    modules: list[str] = []
    try:
        for latency, _gain in spec.paths():
            args = [f"source={source}", f"sink={sink}", f"latency_msec={latency:g}", "remix=false"]
            args += ["source_dont_move=true", "sink_dont_move=true", "adjust_time=0"]  # same clock: no resampling
            modules.append(_pactl(env, "load-module", "module-loopback", *args).strip())
        deadline = time.monotonic() + 5
        while True:  # each loopback's sink input appears on micsink: set its gain
            inputs = _inputs_by_module(env)
            if all(m in inputs for m in modules):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the echo room's loopbacks did not start")
            time.sleep(0.05)
        for module, (_latency, gain) in zip(modules, spec.paths(), strict=True):
            _pactl(env, "set-sink-input-volume", inputs[module], f"{gain:g}dB")
        yield modules
    finally:
        for module in modules:
            subprocess.run(["pactl", "unload-module", module], env=env, capture_output=True, timeout=10)


def _inputs_by_module(env: dict[str, str] | None) -> dict[str, str]:
    """Owner module -> sink input index (``pactl list sink-inputs``: "Sink Input #N" ... "Owner Module: M")."""
    found: dict[str, str] = {}
    current = ""
    for line in _pactl(env, "list", "sink-inputs").splitlines():
        line = line.strip()
        if line.startswith("Sink Input #"):
            current = line.removeprefix("Sink Input #")
        elif line.startswith("Owner Module:") and current:
            found[line.split(":", 1)[1].strip()] = current
    return found


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
    args = parser.parse_args(argv)
    refl = tuple(args.reflection) if args.reflection is not None else RoomSpec.reflections
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with running(RoomSpec(args.delay_ms, args.gain_db, refl)):
        print("ready", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
