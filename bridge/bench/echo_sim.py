"""A synthetic echo room and the measures of echo cancellation, pure NumPy (no devices).

Used by the engine comparison (:mod:`bridge.bench.aec_engines`), the AEC benchmark (:mod:`bridge.bench.aec`)
and the wrapper's unit tests. Speech is espeak-ng (formant synthesis: speech-like spectra and pauses, which
AEC3 treats as speech; a pure tone it does not), 48 kHz mono.

- :class:`Room`: the echo a microphone hears from what the speaker played: attenuated, delayed, with a
  reflection or two, optional clock drift between the two sound cards (the echo is resampled by
  ``1 + drift_ppm / 1e6``) and microphone noise.
- :func:`erle_db`: echo return loss enhancement over the far-end-only stretches (10 ms frames where the echo
  is above the noise): ``10 log10(sum echo^2 / sum out^2)``.
- :func:`near_kept_db`: how much of a near-end talker survives in double talk: the least-squares gain of the
  near-end speech in the output, per 100 ms window where the talker is active, median, in dB (0 = kept).
- :func:`lag_samples`: the delay of the output against the input (what a canceller adds to the uplink).
- :func:`vad_runs`: 10 ms frames over a server-VAD level (the emulator's default, -40 dBFS) and the longest run
  of them: what could make the server believe the user spoke.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bridge.errors import BridgeError

RATE = 48_000
CHUNK = RATE // 100  # 10 ms

FAR_TEXT = (
    ("en-us", "Hello, I am the assistant. The weather today is sunny with a light breeze from the west."),
    ("en-us", "Temperatures will reach twenty two degrees this afternoon, and the evening stays dry and mild."),
    ("en-us", "If you want, I can also tell you about the traffic on your way home, or play some music."),
    ("en-us", "Tomorrow looks a little cloudier, with a chance of rain after lunch in the northern districts."),
)
NEAR_TEXT = (
    ("en-gb+m3", "Wait, stop, I have a different question about the train to Berlin."),
    ("en-gb+m3", "No, not that one, the one that leaves after nine in the morning please."),
)


def espeak(text: str, voice: str = "en-us", speed: int = 160, peak: float = 0.5) -> np.ndarray:
    """One sentence as 48 kHz mono float (peak ``peak`` of full scale)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BridgeError("espeak-ng is missing: apt-get install espeak-ng")
    wav = subprocess.run([exe, "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True)
    from bridge.emulator.behaviours.speech import parse_wav

    rate, pcm = parse_wav(wav.stdout)
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    x = resample(x, RATE / rate)
    return x / max(1.0, float(np.abs(x).max())) * peak * 32767


def resample(x: np.ndarray, ratio: float) -> np.ndarray:
    """``len(x) * ratio`` samples by linear interpolation (test signals and clock drift only)."""
    n = int(len(x) * ratio)
    out: np.ndarray = np.interp(np.arange(n) / ratio, np.arange(len(x)), x)
    return out


def talk(sentences: tuple[tuple[str, str], ...], pause_s: float = 0.6, peak: float = 0.5) -> np.ndarray:
    """Sentences with pauses between them (float, 48 kHz)."""
    gap = np.zeros(int(pause_s * RATE))
    parts: list[np.ndarray] = []
    for voice, text in sentences:
        parts += [espeak(text, voice, peak=peak), gap]
    return np.concatenate(parts)


def loop_to(x: np.ndarray, seconds: float) -> np.ndarray:
    n = int(seconds * RATE)
    return np.resize(x, n)


@dataclass(frozen=True)
class Room:
    """Echo = sum of ``gain_db`` at ``delay_ms`` and each ``(extra_ms, gain_db)`` reflection after it."""

    delay_ms: float = 40.0
    gain_db: float = -9.0
    reflections: tuple[tuple[float, float], ...] = ((7.0, -16.0), (31.0, -22.0))
    drift_ppm: float = 0.0
    noise_dbfs: float = -70.0
    seed: int = 1
    taps: tuple[tuple[int, float], ...] = field(init=False)

    def __post_init__(self) -> None:
        taps = [(self.delay_ms, self.gain_db)] + [(self.delay_ms + d, g) for d, g in self.reflections]
        object.__setattr__(self, "taps", tuple((round(d * RATE / 1000), 10 ** (g / 20)) for d, g in taps))

    def echo(self, far: np.ndarray) -> np.ndarray:
        """The echo alone (float), as long as ``far``."""
        x = far.astype(np.float64)
        if self.drift_ppm:
            x = resample(x, 1 + self.drift_ppm / 1e6)[: len(far)]
            x = np.pad(x, (0, len(far) - len(x)))
        y = np.zeros(len(far))
        for d, g in self.taps:
            if d < len(far):
                y[d:] += g * x[: len(far) - d]
        return y

    def noise(self, n: int) -> np.ndarray:
        sigma = 32768 * 10 ** (self.noise_dbfs / 20)
        return np.random.default_rng(self.seed).normal(0.0, sigma, n)


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def frame_energy(x: np.ndarray, n: int = CHUNK) -> np.ndarray:
    k = len(x) // n
    energy: np.ndarray = (x[: k * n].astype(np.float64).reshape(k, n) ** 2).sum(axis=1)
    return energy


def erle_db(echo: np.ndarray, out: np.ndarray, noise_floor: float, start_s: float = 0.0) -> float:
    """ERLE over the 10 ms frames from ``start_s`` where the echo is 20 dB above ``noise_floor`` (the
    per-frame energy of the microphone's own noise). ``out`` must already be aligned with ``echo``."""
    e, o = frame_energy(echo), frame_energy(out)
    k = min(len(e), len(o))
    e, o = e[:k], o[:k]
    sel = e > 100 * noise_floor
    sel[: int(start_s * 100)] = False
    if not sel.any():
        return float("nan")
    return float(10 * np.log10(e[sel].sum() / max(o[sel].sum(), 1.0)))


def convergence_s(echo: np.ndarray, out: np.ndarray, noise_floor: float, target_db: float = 20.0) -> float:
    """Seconds from the first echo until every later 200 ms window of far-end activity reaches ``target_db``."""
    e, o = frame_energy(echo), frame_energy(out)
    k = min(len(e), len(o)) // 20 * 20
    ew, ow = e[:k].reshape(-1, 20).sum(axis=1), o[:k].reshape(-1, 20).sum(axis=1)
    active = ew > 20 * 100 * noise_floor
    if not active.any():
        return float("nan")
    first = int(np.argmax(active))
    ok = 10 * np.log10(np.maximum(ew, 1.0) / np.maximum(ow, 1.0)) >= target_db
    bad = np.flatnonzero(active & ~ok)
    last_bad = int(bad[-1]) + 1 if len(bad) else first
    return (last_bad - first) * 0.2


def near_kept_db(near: np.ndarray, out: np.ndarray, window_ms: float = 100.0, lags: tuple[int, ...] = (0,)) -> float:
    """Median over windows where ``near`` is active of the least-squares gain of ``near`` in ``out``, in dB.
    With several ``lags`` (samples ``out`` may lag ``near`` by: a canceller in or out of the path), each window
    takes the best."""
    n = int(RATE * window_ms / 1000)
    k = (min(len(near), len(out) - max(lags))) // n
    a = near[: k * n].astype(np.float64).reshape(k, n)
    ea = (a**2).sum(axis=1)
    active = ea > 0.1 * ea.max()
    if not active.any():
        return float("nan")
    gains = (
        np.max([(a * out[lag : lag + k * n].astype(np.float64).reshape(k, n)).sum(axis=1) for lag in lags], axis=0)[
            active
        ]
        / ea[active]
    )
    return float(20 * np.log10(max(float(np.median(gains)), 1e-6)))


def lag_samples(x: np.ndarray, y: np.ndarray, max_lag: int = 4800) -> int:
    """The lag (samples, >= 0) at which ``y`` best matches ``x``, by cross-correlation."""
    n = min(len(x), len(y))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    fx = np.fft.rfft(x[:n].astype(np.float64), size)
    fy = np.fft.rfft(y[:n].astype(np.float64), size)
    c = np.fft.irfft(fy * np.conj(fx), size)[: max_lag + 1]
    return int(np.argmax(c))


def vad_runs(x: np.ndarray, level_dbfs: float = -40.0) -> tuple[int, int]:
    """(10 ms frames whose RMS is above ``level_dbfs``, longest run of them)."""
    rms_db = 10 * np.log10(frame_energy(x) / CHUNK + 1e-9) - 20 * np.log10(32768)
    loud = rms_db > level_dbfs
    best = run = 0
    for v in loud:
        run = run + 1 if v else 0
        best = max(best, run)
    return int(loud.sum()), best


def speech_start_ms(x: np.ndarray, level_dbfs: float = -40.0, run: int = 3) -> float:
    """When a level VAD would start speech: the end of the first ``run`` consecutive 10 ms frames above
    ``level_dbfs`` (the emulator's server VAD: 30 ms), in ms; inf if never."""
    rms_db = 10 * np.log10(frame_energy(x) / CHUNK + 1e-9) - 20 * np.log10(32768)
    count = 0
    for i, v in enumerate(rms_db > level_dbfs):
        count = count + 1 if v else 0
        if count >= run:
            return (i + 1) * 10.0
    return float("inf")


class Canceller(Protocol):
    def played(self, pcm: np.ndarray, at: float) -> None: ...

    def process(self, pcm: np.ndarray, captured: float) -> np.ndarray: ...


@dataclass(frozen=True)
class Clocks:
    """Two sound cards as PortAudio would report them: the speaker hands 5 ms blocks over ``handoff_ms``
    before they sound; the microphone delivers 20 ms frames ``deliver_ms`` after their last sample; the
    microphone's clock runs ``drift_ppm`` fast; timestamps err by ``play_err_ms`` / ``capture_err_ms``
    (positive: later than the truth) plus uniform jitter of +- ``jitter_ms``."""

    handoff_ms: float = 15.0
    deliver_ms: float = 3.0
    drift_ppm: float = 0.0
    play_err_ms: float = 0.0
    capture_err_ms: float = 0.0
    jitter_ms: float = 1.0
    seed: int = 2
    gaps: tuple[tuple[float, float], ...] = ()
    """Speaker underruns: ``(at_s, gap_ms)``, the device plays ``gap_ms`` of silence before the far sample
    due at ``at_s`` (its timestamps account for it, as PortAudio's do: docs/benchmarks.md)."""

    capture_steps: tuple[tuple[float, float], ...] = ()
    """``(at_s, extra_ms)``: from ``at_s`` on the microphone's callbacks come ``extra_ms`` later (PulseAudio
    raised a busy client's latency); its samples were captured when they always were."""

    def gap_before(self, i: int) -> int:
        """Samples of silence the device inserted before far sample ``i``."""
        return sum(round(g * RATE / 1000) for at, g in self.gaps if i >= round(at * RATE))

    def as_played(self, far: np.ndarray) -> np.ndarray:
        """``far`` as the speaker actually played it: the gaps inserted (same length)."""
        out = far.astype(np.float64)
        for at, g in sorted(self.gaps, reverse=True):
            i, n = round(at * RATE), round(g * RATE / 1000)
            out = np.concatenate([out[:i], np.zeros(n), out[i:]])
        return out[: len(far)]


def simulate(canceller: Canceller, far: np.ndarray, mic: np.ndarray, clocks: Clocks = Clocks()) -> np.ndarray:
    """Feed ``canceller`` as a :class:`~bridge.media.devices.DeviceSink` tap and a
    :class:`~bridge.media.devices.DeviceSource` filter would, in real-time order, and return its output.

    ``far`` is what the speaker is given from time 0 (speaker clock, 48 kHz); ``mic`` what the microphone
    hears (microphone clock: build it with ``Room(drift_ppm=clocks.drift_ppm)`` from ``clocks.as_played(far)``).
    Times are seconds."""
    rng = np.random.default_rng(clocks.seed)
    j = clocks.jitter_ms / 1000
    f_in = RATE * (1 + clocks.drift_ppm / 1e6)
    events: list[tuple[float, int, int]] = []  # (when it happens, kind 0 = far block / 1 = mic frame, index)
    block, frame = RATE // 200, RATE // 50
    for i in range(0, len(far) - block + 1, block):
        events.append(((i + clocks.gap_before(i)) / RATE - clocks.handoff_ms / 1000, 0, i))
    for k in range(0, len(mic) - frame + 1, frame):
        true = (k + frame - 1) / f_in
        extra = sum(x for at, x in clocks.capture_steps if true >= at) / 1000
        events.append((true + clocks.deliver_ms / 1000 + extra, 1, k))
    events.sort()
    f16, m16 = to_int16(far), to_int16(mic)
    out = np.zeros(len(mic) // frame * frame, dtype=np.int16)
    for _, kind, i in events:
        if kind == 0:
            at = (i + clocks.gap_before(i)) / RATE + clocks.play_err_ms / 1000 + rng.uniform(-j, j)
            canceller.played(f16[i : i + block], at)
        else:
            true = (i + frame - 1) / f_in
            extra = sum(x for at, x in clocks.capture_steps if true >= at) / 1000
            captured = true + clocks.capture_err_ms / 1000 + extra + rng.uniform(-j, j)
            out[i : i + frame] = canceller.process(m16[i : i + frame], captured)
    return out
