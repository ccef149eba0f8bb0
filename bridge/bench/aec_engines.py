"""Echo cancellation engines compared on a synthetic room (issue #16): why ``pywebrtc-audio``.

Every candidate gets the same 48 kHz speech (espeak-ng sentences with pauses, not tones) and the same echo
(:class:`bridge.bench.echo_sim.Room`: -9 dB at 40 ms plus reflections at +7 ms / -16 dB and +31 ms / -22 dB,
microphone noise at -70 dBFS), 10 ms at a time in lockstep, far end aligned (as :mod:`bridge.media.farend`
aligns it). Measured per engine:

- ERLE after convergence (from 5 s on), convergence time (every later 200 ms window >= 20 dB), the 10 ms
  frames over the server VAD's -40 dBFS in the first 3 s (and the longest run: 3 frames start speech);
- tolerance of alignment errors: ERLE when the echo arrives ``r`` ms after the reference (negative: before);
- long echo paths (600 / 950 ms) with the engine's default settings;
- clock drift between two sound cards (the echo resampled by +208 ppm, 48010 vs 48000 Hz) over 60 s;
- double talk: a near-end talker over the far end, the near end's level in the output (0 dB = kept);
- the output's lag behind the input, and CPU (process time) per second of audio.

Candidates are not dependencies of bridge except the chosen one; install them in a scratch environment::

    pip install pywebrtc-audio livekit
    apt-get install libspeexdsp-dev swig && pip install speexdsp
    python -m bridge.bench.aec_engines            # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.bench import echo_sim as sim
from bridge.media.aec_engine import Aec3Engine, EchoEngine

RATE = sim.RATE
N = sim.CHUNK


class LivekitApm(EchoEngine):
    """LiveKit's ``rtc.AudioProcessingModule`` (AEC3 inside its Rust FFI library), echo cancellation only."""

    name = "livekit"

    def __init__(self, delay_hint_ms: int = 0) -> None:
        super().__init__()
        from livekit import rtc  # type: ignore[import-not-found,unused-ignore]  # a candidate, not a dependency

        self._rtc = rtc
        self._hint = delay_hint_ms
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True)
        self._apm.set_stream_delay_ms(delay_hint_ms)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        rtc = self._rtc
        self._apm.process_reverse_stream(rtc.AudioFrame(far.tobytes(), RATE, 1, len(far)))
        frame = rtc.AudioFrame(near.tobytes(), RATE, 1, len(near))
        self._apm.process_stream(frame)
        return np.frombuffer(frame.data, dtype=np.int16).copy()

    def reset(self) -> None:
        self._apm = self._rtc.AudioProcessingModule(echo_cancellation=True)
        self._apm.set_stream_delay_ms(self._hint)

    def fresh(self) -> LivekitApm:
        return LivekitApm(self._hint)


class Speex(EchoEngine):
    """SpeexDSP's MDF echo canceller (``speexdsp`` bindings), 10 ms frames, ``tail_ms`` filter."""

    name = "speexdsp"

    def __init__(self, tail_ms: int = 200) -> None:
        super().__init__()
        from speexdsp import EchoCanceller  # type: ignore[import-not-found,unused-ignore]  # a candidate, not a dependency

        self._tail = tail_ms
        self._ec = EchoCanceller.create(N, RATE * tail_ms // 1000, RATE)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        return np.frombuffer(self._ec.process(near.tobytes(), far.tobytes()), dtype=np.int16).copy()

    def reset(self) -> None:
        self._ec = self.fresh()._ec

    def fresh(self) -> Speex:
        return Speex(self._tail)


def pywebrtc() -> EchoEngine:
    import pywebrtc_audio

    return Aec3Engine(pywebrtc_audio)


CANDIDATES: dict[str, Callable[[], EchoEngine]] = {"pywebrtc-audio": pywebrtc, "livekit": LivekitApm, "speexdsp": Speex}


@dataclass
class Signals:
    far: np.ndarray
    near_talk: np.ndarray


def signals(seconds: float) -> Signals:
    far = sim.loop_to(sim.talk(sim.FAR_TEXT), seconds)
    near = sim.talk(sim.NEAR_TEXT, pause_s=0.4, peak=0.35)
    return Signals(far, near)


def run(engine: EchoEngine, far: np.ndarray, mic: np.ndarray) -> tuple[np.ndarray, float]:
    """(output, CPU seconds) for lockstep 10 ms processing."""
    f16, m16 = sim.to_int16(far), sim.to_int16(mic)
    out = np.zeros(len(m16) // N * N, dtype=np.int16)
    t0 = time.process_time()
    for i in range(0, len(out), N):
        out[i : i + N] = engine.process(m16[i : i + N], f16[i : i + N])
    return out, time.process_time() - t0


def shifted(x: np.ndarray, lag: int) -> np.ndarray:
    """``x`` advanced by ``lag`` samples (the engine's output lag removed), zero-padded at the end."""
    return np.concatenate([x[lag:], np.zeros(lag)]) if lag else x.astype(np.float64)


def scenario(
    make: Callable[[], EchoEngine], sig: Signals, room: sim.Room, far: np.ndarray | None = None
) -> dict[str, float]:
    far = sig.far if far is None else far
    engine = make()
    lag = engine.measure_lag()
    echo = room.echo(far)
    noise = room.noise(len(far))
    out, cpu = run(engine, far, echo + noise)
    out_f = shifted(out, lag)
    floor = float(np.median(sim.frame_energy(noise)))
    loud, run_ = sim.vad_runs(out_f[: 3 * RATE])
    return {
        "erle_db": sim.erle_db(echo, out_f, floor, start_s=5.0),
        "converge_s": sim.convergence_s(echo, out_f, floor),
        "vad_frames_3s": loud,
        "vad_run_3s": run_,
        "cpu_ms_per_s": cpu / (len(far) / RATE) * 1000,
        "lag_ms": lag / RATE * 1000,
    }


def alignment(make: Callable[[], EchoEngine], sig: Signals, residual_ms: float, seconds: float = 20.0) -> float:
    """ERLE (from 5 s) when the echo arrives ``residual_ms`` after the reference (negative: before)."""
    far = sig.far[: int(seconds * RATE)]
    room = sim.Room(delay_ms=max(residual_ms, 0.0))
    if residual_ms < 0:  # the reference comes late: feed the engine the far end delayed instead
        echo = room.echo(far)
        d = round(-residual_ms * RATE / 1000)
        ref = np.concatenate([np.zeros(d), far[:-d]])
    else:
        echo, ref = room.echo(far), far
    noise = room.noise(len(far))
    engine = make()
    lag = engine.measure_lag()
    out, _ = run(engine, ref, echo + noise)
    return sim.erle_db(echo, shifted(out, lag), float(np.median(sim.frame_energy(noise))), start_s=5.0)


def double_talk(make: Callable[[], EchoEngine], sig: Signals, seconds: float = 30.0) -> dict[str, float]:
    """Far end throughout; the near talker from 12 s on (the engine has converged). Near-end level kept."""
    far = sig.far[: int(seconds * RATE)]
    room = sim.Room()
    near = np.zeros(len(far))
    start = 12 * RATE
    talk = sig.near_talk[: len(far) - start]
    near[start : start + len(talk)] = talk
    echo, noise = room.echo(far), room.noise(len(far))
    engine = make()
    lag = engine.measure_lag()
    out, _ = run(engine, far, echo + near + noise)
    out_f = shifted(out, lag)
    span = slice(start, start + len(talk))
    kept_frames = sim.vad_runs(out_f[span])[0]
    clean_frames = sim.vad_runs(near[span])[0]
    return {
        "near_kept_db": sim.near_kept_db(near[span], out_f[span]),
        "near_vad_frames_kept": kept_frames / max(clean_frames, 1),
        "bargein_extra_ms": sim.speech_start_ms(out_f[span]) - sim.speech_start_ms(near[span]),
    }


def drift(make: Callable[[], EchoEngine], sig: Signals, ppm: float = 208.0, seconds: float = 60.0) -> float:
    far = sim.loop_to(sig.far, seconds)
    room = sim.Room(drift_ppm=ppm)
    echo, noise = room.echo(far), room.noise(len(far))
    engine = make()
    lag = engine.measure_lag()
    out, _ = run(engine, far, echo + noise)
    floor = float(np.median(sim.frame_energy(noise)))
    return sim.erle_db(echo, shifted(out, lag), floor, start_s=seconds - 20)


def measure(names: list[str], seconds: float, progress: Callable[[str], Any] = print) -> dict[str, dict[str, Any]]:
    sig = signals(max(seconds, 60.0))
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        make = CANDIDATES[name]
        progress(f"{name}: base room")
        row: dict[str, Any] = scenario(make, sig, sim.Room(), sig.far[: int(seconds * RATE)])
        progress(f"{name}: alignment errors")
        row["alignment"] = {r: alignment(make, sig, r) for r in (-5.0, 0.0, 20.0, 100.0, 300.0, 500.0)}
        progress(f"{name}: long paths")
        row["long"] = {d: alignment(make, sig, d) for d in (600.0, 950.0)}
        progress(f"{name}: drift")
        row["drift_erle_db"] = drift(make, sig)
        progress(f"{name}: double talk")
        row.update(double_talk(make, sig))
        results[name] = row
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| engine | ERLE dB | converged s | VAD frames / longest run, first 3 s | CPU ms per s | output lag ms "
        "| ERLE at echo -5 / 0 / 20 / 100 / 300 / 500 ms after reference | 600 / 950 ms path | drift +208 ppm, "
        "last 20 s of 60 | double talk: near kept dB, VAD frames kept, speech start later by |",
        "|---|---:|---:|---|---:|---:|---|---|---:|---|",
    ]
    for name, r in results.items():
        al = " / ".join(f"{v:.0f}" for v in r["alignment"].values())
        lo = " / ".join(f"{v:.0f}" for v in r["long"].values())
        lines.append(
            f"| {name} | {r['erle_db']:.1f} | {r['converge_s']:.1f} | {r['vad_frames_3s']} / {r['vad_run_3s']} "
            f"| {r['cpu_ms_per_s']:.1f} | {r['lag_ms']:.1f} | {al} | {lo} | {r['drift_erle_db']:.1f} "
            f"| {r['near_kept_db']:.1f}, {100 * r['near_vad_frames_kept']:.0f} %, {r['bargein_extra_ms']:+.0f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(CANDIDATES))
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the base scenario")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        print(f"bridge: unknown engine(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}", file=sys.stderr)
        return 2
    results = measure(names, args.seconds, progress=lambda s: print(s, file=sys.stderr))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
