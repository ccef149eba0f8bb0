"""Sounds for the kiosk benchmarks (:mod:`bridge.bench.vad`, :mod:`bridge.bench.backlog`,
:mod:`bridge.bench.wakeword`), all reproducible: non-speech generated with numpy from fixed seeds, and
speech spoken by espeak-ng (cached as .wav files).

- Non-speech (:data:`NOISES`, :func:`non_speech`): white and pink noise, HVAC (low rumble, fan noise with a
  slow swell and 50 Hz mains hum with odd harmonics), music-like harmonic melodies with vibrato and
  percussion, door slams on a quiet room tone, knocks and hand claps, and babble (8 overlapped *reversed*
  espeak-ng voices: speech's spectrum and rhythm, no words).
- Speech (:data:`SENTENCES` x :data:`VOICES` x :data:`SPEECH_CONDITIONS`, :func:`render_case`): each trial
  is 1 s of background, the sentence at a level (or over a background at an SNR), and 1.5 s more.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.kiosk.vad import FRAME_SAMPLES, IN_RATE

RATE = IN_RATE


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
    out: np.ndarray = 0.6 * body * _envelope(m, 0.003, 0.15) + crack + rattle
    return out


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
