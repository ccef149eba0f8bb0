"""The Opus quality benchmark's own parts: the 16 kHz reference path and the codec round trip on speech."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bridge.bench import opus_quality
from bridge.rtc.opus import LibopusEncoder


def _tone(hz: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(48_000 * seconds)) / 48_000
    return (np.sin(2 * np.pi * hz * t) * 10_000).astype(np.int16)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x[200:-200] ** 2)))


def test_to_16k_keeps_speech_band_and_removes_what_would_alias() -> None:
    low = opus_quality.to_16k(_tone(1_000))
    assert len(low) == 8_000
    assert _rms(low) == pytest.approx(10_000 / np.sqrt(2), rel=0.02)
    assert _rms(opus_quality.to_16k(_tone(12_000))) < 100  # 12 kHz would fold to 4 kHz without the filter


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing (scripts/setup.sh installs it)")
def test_speech_survives_the_codec_round_trip() -> None:
    clips = opus_quality.speech_clips()
    assert len(clips) == len(opus_quality.SENTENCES) and all(len(c) > 48_000 for c in clips)
    x = clips[0]
    y = opus_quality.round_trip(x, lambda: LibopusEncoder(complexity=5))
    assert len(y) == len(x) // 960 * 960
    # Opus delays by its lookahead (6.5 ms = 312 samples at 48 kHz): line up, then compare the waveforms
    best = max(range(0, 600), key=lambda d: float(np.dot(x[: len(y) - 600].astype(float), y[d : d + len(y) - 600])))
    err = y[best : best + len(y) - 600].astype(float) - x[: len(y) - 600]
    snr = 10 * np.log10(np.sum(x[: len(y) - 600].astype(float) ** 2) / np.sum(err**2))
    assert 200 < best < 450 and snr > 5, (best, snr)
    assert opus_quality.encode_us(clips[:1], lambda: LibopusEncoder(complexity=0)) > 0
