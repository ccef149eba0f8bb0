"""Echo cancellation benchmark (issue #16): ERLE, double talk, added latency and CPU of bridge.media.aec.

Two parts:

- ``offline`` (no devices): :class:`bridge.media.aec.EchoCanceller` fed by :func:`bridge.bench.echo_sim.simulate`
  as the devices feed it (PortAudio-like timestamps with jitter), on the synthetic room: ERLE after convergence,
  the server VAD's view of the first reply (10 ms frames over -40 dBFS in the first 3 s; 3 in a row start
  speech), long paths cold and warm-started, clock drift, double talk, the output's lag behind the input in
  both states, and CPU (process time) per second of audio for the filter and the tap.
- ``devices``: real :class:`~bridge.media.devices.DeviceSource` / :class:`~bridge.media.devices.DeviceSink`
  on the private PulseAudio daemon with the echo room (:mod:`bridge.bench.echo_room`) running: a reply of
  espeak-ng speech is played, its echo comes back into the microphone, and what the microphone heard (a
  recording filter before the canceller) is compared with what the uplink got (the capture consumer).
  ERLE over the far-end-only stretches (after the first 2 s of echo), speech starts the emulator's VAD sees
  in the uplink, and in a second take a user talking over the reply: the talker's level in the uplink and
  when a level VAD would start speech, against the clean talker.

    python -m bridge.bench.aec offline
    eval "$(scripts/pulse-up.sh)"; python -m bridge.bench.aec devices --takes 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.bench import echo_sim as sim
from bridge.bench.echo_room import RoomSpec, running
from bridge.emulator.vad import ServerVad, SpeechStarted
from bridge.media import aec
from bridge.media.aec import AecMetrics, AecSettings, EchoCanceller
from bridge.media.aec_engine import INSTALL_HINT
from bridge.media.devices import DeviceSink, DeviceSource
from bridge.media.playout import PlayoutBuffer

RATE = sim.RATE


# ------------------------------------------------------------------------------------------ offline


def _canceller(**kw: Any) -> EchoCanceller:
    initial = kw.pop("initial_delay_ms", None)
    c = aec.create(AecSettings(state_file=None, **kw), initial_delay_ms=initial)
    if c is None:
        raise SystemExit(f"bridge: the echo canceller's engine is missing ({INSTALL_HINT})")
    return c


def offline(seconds: float = 30.0) -> dict[str, Any]:
    far = sim.loop_to(sim.talk(sim.FAR_TEXT), max(seconds, 60.0))
    talker = sim.talk(sim.NEAR_TEXT, pause_s=0.4, peak=0.35)
    res: dict[str, Any] = {}

    def run(room: sim.Room, n_s: float, clocks: sim.Clocks | None = None, **kw: Any) -> dict[str, Any]:
        clocks = clocks or sim.Clocks()
        x = far[: int(n_s * RATE)]
        echo, noise = room.echo(x), room.noise(len(x))
        c = _canceller(**kw)
        t0 = time.process_time()
        out = sim.simulate(c, x, echo + noise, clocks)
        cpu = time.process_time() - t0
        floor = float(np.median(sim.frame_energy(noise)))
        loud, longest = sim.vad_runs(out[: 3 * RATE].astype(np.float64))
        return {
            "erle_db": round(sim.erle_db(echo, out, floor, start_s=5.0), 1),
            "erle_last10_db": round(sim.erle_db(echo, out, floor, start_s=n_s - 10), 1),
            "converge_s": round(sim.convergence_s(echo, out, floor), 1),
            "first_3s_vad_frames": loud,
            "first_3s_longest_run": longest,
            "cpu_ms_per_s": round(cpu / n_s * 1000, 1),
            "metrics": c.metrics().__dict__,
        }

    res["room"] = run(sim.Room(), seconds)
    for d in (600.0, 950.0):
        res[f"path_{d:.0f}_cold"] = run(sim.Room(delay_ms=d), seconds)
        res[f"path_{d:.0f}_warm"] = run(sim.Room(delay_ms=d), seconds, initial_delay_ms=d)
    res["drift_208ppm_60s"] = run(sim.Room(drift_ppm=208), 60.0, sim.Clocks(drift_ppm=208))
    res["double_talk"] = _double_talk(far[: int(seconds * RATE)], talker)
    res["latency"] = _latency(talker)
    res["cpu"] = _cpu(far[: int(seconds * RATE)])
    return res


def _double_talk(far: np.ndarray, talker: np.ndarray) -> dict[str, float]:
    room = sim.Room()
    near = np.zeros(len(far))
    start = 12 * RATE
    part = talker[: len(far) - start]
    near[start : start + len(part)] = part
    c = _canceller(bypass_idle=False)
    out = sim.simulate(c, far, room.echo(far) + near + room.noise(len(far)))
    lag = c.engine.lag
    got = out[start + lag : start + lag + len(part)].astype(np.float64)
    return {
        "near_kept_db": round(sim.near_kept_db(part, got), 1),
        "speech_start_later_ms": sim.speech_start_ms(got) - sim.speech_start_ms(part),
        "vad_frames_kept_pct": round(100 * sim.vad_runs(got)[0] / max(1, sim.vad_runs(part)[0])),
    }


def _latency(talker: np.ndarray) -> dict[str, float]:
    """The uplink's delay behind the microphone: idle (nothing played) and with echo possible."""
    idle = _canceller()
    out = sim.simulate(idle, np.zeros(len(talker)), talker)
    busy = _canceller(bypass_idle=False)
    out2 = sim.simulate(busy, np.zeros(len(talker)), talker)
    return {
        "idle_ms": sim.lag_samples(talker, out) / RATE * 1000,
        "in_path_ms": round(sim.lag_samples(talker, out2) / RATE * 1000, 2),
    }


def _cpu(far: np.ndarray) -> dict[str, float]:
    """Process time per second of audio: the filter (engine + alignment + estimator) and the tap, alone."""
    room = sim.Room()
    mic = sim.to_int16(room.echo(far) + room.noise(len(far)))
    f16 = sim.to_int16(far)
    c = _canceller(bypass_idle=False)
    t0 = time.process_time()
    for i in range(0, len(f16) - 239, 240):
        c.played(f16[i : i + 240], i / RATE)
    tap = time.process_time() - t0
    t0 = time.process_time()
    for k in range(0, len(mic) - 959, 960):
        c.process(mic[k : k + 960], (k + 959) / RATE + 0.04)
    filt = time.process_time() - t0
    engine = c.engine.fresh()
    z = np.zeros(480, dtype=np.int16)
    t0 = time.process_time()
    for k in range(0, len(mic) - 479, 480):
        engine.process(mic[k : k + 480], z)
    eng = time.process_time() - t0
    s = len(far) / RATE
    return {
        "filter_ms_per_s": round(filt / s * 1000, 1),
        "tap_ms_per_s": round(tap / s * 1000, 2),
        "engine_alone_ms_per_s": round(eng / s * 1000, 1),
    }


# ------------------------------------------------------------------------------------------ devices


class Recorder:
    """A SourceFilter that keeps what it is given (in the capture thread) and passes it on unchanged."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def process(self, pcm: np.ndarray, captured: float) -> np.ndarray:
        self.frames.append(pcm.copy())
        return pcm


@dataclass
class Take:
    raw: np.ndarray
    """What the microphone heard (before the canceller)."""
    sent: np.ndarray
    """What the capture consumer (the uplink) got."""
    metrics: AecMetrics | None
    underruns: int
    overflows: int


async def play_through_room(
    far: np.ndarray,
    *,
    aec_on: bool = True,
    talker: Path | None = None,
    talker_after_s: float = 0.0,
    settings: AecSettings | None = None,
    env: dict[str, str] | None = None,
) -> Take:
    """Play ``far`` on the default output while the echo room runs; optionally ``paplay`` a talker into
    ``micsink`` ``talker_after_s`` into it. Returns the microphone before and after the canceller."""
    raw = Recorder()
    sent: list[np.ndarray] = []
    source, sink = DeviceSource(None, filters=[raw]), DeviceSink(None)
    source.capture_to(lambda pcm, captured: sent.append(pcm))  # before start: the same frames as ``raw``
    playout = PlayoutBuffer()
    attached = None
    player = None
    try:
        await sink.start(playout.pull)
        await source.start()
        attached = aec.attach(source, sink, settings or AecSettings(state_file=None)) if aec_on else None
        await asyncio.sleep(0.3)  # the streams settle before the "assistant" speaks
        playout.push(far, "far")
        playout.end_item("far")
        if talker is not None:
            await asyncio.sleep(talker_after_s)
            player = await asyncio.create_subprocess_exec("paplay", "-d", "micsink", str(talker), env=env)
        deadline = time.monotonic() + len(far) / RATE + 10
        while playout.queued_samples or (player is not None and player.returncode is None):
            if time.monotonic() > deadline:
                raise TimeoutError("the playout did not drain")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.8)  # the echo's tail
    finally:
        if player is not None and player.returncode is None:
            player.terminate()
            await player.wait()
        metrics = attached.metrics() if attached is not None else None
        if attached is not None:
            attached.detach()
        await source.aclose()
        await sink.aclose()
    assert len(raw.frames) == len(sent), "the recorder and the consumer saw different frames"
    return Take(np.concatenate(raw.frames), np.concatenate(sent), metrics, sink.underruns, source.input_overflows)


def echo_frames(raw: np.ndarray, skip_s: float) -> np.ndarray:
    """10 ms frames of echo (raw RMS above -55 dBFS), from ``skip_s`` after the first echo on."""
    e = sim.frame_energy(raw)
    loud = e > sim.CHUNK * (32768 * 10 ** (-55 / 20)) ** 2
    first = int(np.argmax(loud))
    loud[: first + int(skip_s * 100)] = False
    return loud


def take_erle(take: Take, skip_s: float = 2.0) -> float:
    """ERLE over every 10 ms frame of echo from ``skip_s`` after the first echo (energy ratio of the sums)."""
    sel = echo_frames(take.raw, skip_s)
    e_raw, e_sent = sim.frame_energy(take.raw), sim.frame_energy(take.sent)
    k = min(len(e_raw), len(e_sent))
    sel = sel[:k]
    return float(10 * np.log10(e_raw[:k][sel].sum() / max(e_sent[:k][sel].sum(), 1.0)))


def windowed_erle(take: Take, skip_s: float = 2.0, window_s: float = 0.5) -> list[float]:
    """ERLE of each ``window_s`` stretch with at least 100 ms of echo (from ``skip_s`` after the first echo)."""
    sel = echo_frames(take.raw, skip_s)
    e_raw, e_sent = sim.frame_energy(take.raw), sim.frame_energy(take.sent)
    k = min(len(e_raw), len(e_sent))
    w = int(window_s * 100)
    out = []
    for i in range(0, k - w + 1, w):
        m = sel[i : i + w]
        if m.sum() >= 10:
            out.append(float(10 * np.log10(e_raw[i : i + w][m].sum() / max(e_sent[i : i + w][m].sum(), 1.0))))
    return out


def first_second_peak_dbfs(take: Take) -> float:
    """The loudest 10 ms (RMS, dBFS) of the uplink in the first second of echo: the unconverged start."""
    first = int(np.argmax(echo_frames(take.raw, 0)))
    e = sim.frame_energy(take.sent)[first : first + 100]
    return float(10 * np.log10(e.max() / sim.CHUNK + 1e-9) - 20 * np.log10(32768))


def speech_started(pcm48: np.ndarray) -> list[SpeechStarted]:
    """What the emulator's server VAD (threshold 0.5: -40 dBFS for 30 ms) makes of the uplink audio."""
    vad = ServerVad()
    n = len(pcm48) // 2 * 2
    pcm24 = ((pcm48[0:n:2].astype(np.int32) + pcm48[1:n:2]) // 2).astype("<i2")
    return [ev for ev in vad.process(pcm24.tobytes()) if isinstance(ev, SpeechStarted)]


def locate(talker: np.ndarray, raw: np.ndarray, after_s: float) -> int:
    """Where ``talker`` starts in ``raw`` (searching from ``after_s`` on)."""
    start = int(after_s * RATE)
    return start + sim.lag_samples(talker, raw[start:], max_lag=len(raw) - start - len(talker))


def double_talk_numbers(take: Take, talker: np.ndarray, after_s: float) -> dict[str, float]:
    """The talker in the uplink. The canceller may be in the path (its output lags ~9 ms) or idle (undelayed:
    a pause in the reply longer than its tail), so each 100 ms window is measured at whichever fits."""
    at = locate(talker.astype(np.float64), take.raw.astype(np.float64), after_s)
    lag = round(take.metrics.lag_ms * RATE / 1000) if take.metrics is not None else 0
    got = take.sent[at : at + lag + len(talker)].astype(np.float64)
    clean = talker.astype(np.float64)
    return {
        "talker_at_s": at / RATE,
        "near_kept_db": sim.near_kept_db(clean, got, lags=(0, lag)),
        "speech_start_later_ms": sim.speech_start_ms(got[: len(clean)]) - sim.speech_start_ms(clean),
    }


async def devices(takes: int, env: dict[str, str]) -> dict[str, Any]:
    far = sim.to_int16(sim.talk(sim.FAR_TEXT[:2], pause_s=0.5))
    talker = sim.to_int16(sim.talk(sim.NEAR_TEXT[:1], peak=0.35))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "talker.wav"
        _write_wav(wav, talker)
        for _ in range(takes):
            # a fresh room for each play: PulseAudio raises a client's latency after it underruns (a busy
            # machine), which would carry a longer echo path from one play into the next
            with running(RoomSpec(), env):
                off = await play_through_room(far[: 5 * RATE], aec_on=False, env=env)
            with running(RoomSpec(), env):
                on = await play_through_room(far, env=env)
            with running(RoomSpec(), env):
                dt = await play_through_room(far, talker=wav, talker_after_s=5.0, env=env)
            rows.append(
                {
                    "erle_db": round(take_erle(on), 1),
                    "erle_median_0_5s_db": round(float(np.median(windowed_erle(on))), 1),
                    "erle_worst_0_5s_db": round(min(windowed_erle(on)), 1),
                    "erle_off_db": round(take_erle(off, skip_s=0), 1),
                    "speech_starts_off": len(speech_started(off.sent)),
                    "speech_starts_on": len(speech_started(on.sent)),
                    "first_second_peak_dbfs": round(first_second_peak_dbfs(on), 1),
                    "metrics": on.metrics.__dict__ if on.metrics else None,
                    "underruns": on.underruns + dt.underruns,
                    "overflows": on.overflows + dt.overflows,
                    **{k: round(v, 2) for k, v in double_talk_numbers(dt, talker, 4.0).items()},
                }
            )
    return {"takes": rows, "erle_db_median": statistics.median(r["erle_db"] for r in rows)}


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("offline", "devices"))
    parser.add_argument("--takes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.part == "offline":
        result = offline(args.seconds)
    else:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        if subprocess.run(["pactl", "info"], capture_output=True, env=env).returncode != 0:
            print('bridge: no PulseAudio daemon answers; start one: eval "$(scripts/pulse-up.sh)"', file=sys.stderr)
            return 1
        from bridge.media.portaudio import rescan

        rescan()
        result = asyncio.run(devices(args.takes, env))
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
