"""What one wake-up costs on this machine: the floor under every real-time audio loop (issue #3's CPU).

A call moves 20 ms frames both ways, so some thread wakes at least every 20 ms for the microphone, the
network and the speaker. This measures the CPU a wake-up costs when it does nothing, at a given rate,
for the ways the bridge can wake: a plain thread (``time.sleep``), an asyncio task (``asyncio.sleep``,
which ``bridge run`` pacing uses), and a bare timer callback (``loop.call_at``), on uvloop and on the
stdlib loop. With ``--devices`` it also measures PortAudio's own streams (empty callbacks) at several
block sizes: the sound stack's cost at each output/input latency.

    python -m bridge.bench.wakeups --rate 200 --seconds 5
    python -m bridge.bench.wakeups --devices      # PulseAudio up (scripts/pulse-up.sh)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

DEVICE_BLOCKS_MS = ((5, 10), (10, 10), (10, 20), (20, 20))  # (output, input); the bridge uses (5, 10)


def _cpu_percent(run: Callable[[], None]) -> float:
    c0, w0 = time.process_time(), time.monotonic()
    run()
    return 100 * (time.process_time() - c0) / (time.monotonic() - w0)


def thread_sleep(rate: float, seconds: float) -> None:
    t0 = time.monotonic()
    for k in range(1, int(rate * seconds) + 1):
        time.sleep(max(0.0, t0 + k / rate - time.monotonic()))


async def task_sleep(rate: float, seconds: float) -> None:
    t0 = time.monotonic()
    for k in range(1, int(rate * seconds) + 1):
        await asyncio.sleep(max(0.0, t0 + k / rate - time.monotonic()))


async def timer_callbacks(rate: float, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    t0, n = loop.time(), int(rate * seconds)
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] >= n:
            done.set_result(None)
        else:
            loop.call_at(t0 + (count[0] + 1) / rate, tick)

    loop.call_at(t0 + 1 / rate, tick)
    await done


def _loops() -> list[tuple[str, Callable[..., object]]]:
    loops: list[tuple[str, Callable[..., object]]] = []
    try:
        import uvloop

        loops.append(("uvloop", uvloop.run))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    loops.append(("asyncio", asyncio.run))
    return loops


def measure(rate: float, seconds: float) -> list[tuple[str, float]]:
    """(label, CPU % at ``rate`` wake-ups a second) for each way of waking."""
    rows = [("thread, time.sleep", _cpu_percent(lambda: thread_sleep(rate, seconds)))]
    for name, run in _loops():

        def sleeping(r: Callable[[Any], Any] = run) -> None:
            r(task_sleep(rate, seconds))

        def timers(r: Callable[[Any], Any] = run) -> None:
            r(timer_callbacks(rate, seconds))

        rows.append((f"{name} task, asyncio.sleep", _cpu_percent(sleeping)))
        rows.append((f"{name} timer callback", _cpu_percent(timers)))
    return rows


FLOOR_SCRIPT = """  # argv: output block ms, input block ms, seconds
import resource, sys, time, sounddevice as sd
out_ms, in_ms, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
silence = bytes(2 * 48 * out_ms)
def ocb(buf, frames, t, status): buf[:] = silence
def icb(buf, frames, t, status): pass
kw = dict(samplerate=48000, channels=1, dtype="int16", latency="low")
with sd.RawOutputStream(blocksize=48 * out_ms, callback=ocb, **kw) as o, \\
        sd.RawInputStream(blocksize=48 * in_ms, callback=icb, **kw) as i:
    time.sleep(1)
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    cpu = 100 * (time.process_time() - c0) / (time.monotonic() - w0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(cpu, 1000 * o.latency, 1000 * i.latency, rss)
"""
"""PortAudio's streams with callbacks that do nothing (raw, like the bridge's); prints CPU % over ``seconds``
after a settling second, output and input latency (ms) and peak RSS (KiB)."""


def device_floor(seconds: float, env: dict[str, str] | None = None) -> list[tuple[int, int, float, float, float]]:
    """(out block ms, in block ms, CPU %, PortAudio output latency ms, input latency ms) per block pair,
    each in a fresh process (the default devices of ``env``)."""
    rows = []
    for out_ms, in_ms in DEVICE_BLOCKS_MS:
        cmd = [sys.executable, "-c", FLOOR_SCRIPT, str(out_ms), str(in_ms), str(seconds)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"PortAudio streams did not open: {done.stderr.strip().splitlines()[-1:]}")
        cpu, out_lat, in_lat, _rss = (float(x) for x in done.stdout.split())
        rows.append((out_ms, in_ms, cpu, out_lat, in_lat))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="wake-ups per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--devices", action="store_true", help="also PortAudio's own streams, empty callbacks")
    args = parser.parse_args(argv)
    print(f"{args.rate:.0f} wake-ups/s doing nothing, {args.seconds:.0f} s each")
    print("| how the thread wakes | CPU % | CPU per wake-up (us) |")
    print("|---|---:|---:|")
    for label, cpu in measure(args.rate, args.seconds):
        print(f"| {label} | {cpu:.2f} | {cpu / 100 / args.rate * 1e6:.0f} |")
    if args.devices:
        print()
        print("| output / input block (ms) | PortAudio + PulseAudio CPU % | output / input latency (ms) |")
        print("|---|---:|---|")
        for out_ms, in_ms, cpu, out_lat, in_lat in device_floor(args.seconds):
            print(f"| {out_ms} / {in_ms} | {cpu:.1f} | {out_lat:.0f} / {in_lat:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
