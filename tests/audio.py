"""Test helpers: write a synthetic "speech" .wav, and find where sound starts and stops in a recording."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE = 48_000


def write_wav(path: Path, segments: list[tuple[str, float]], rate: int = RATE, freq: float = 300.0) -> Path:
    """``segments`` of ``("tone"|"silence", seconds)``; tones are -12 dBFS with 5 ms ramps (no clicks)."""
    parts = []
    for kind, seconds in segments:
        n = int(seconds * rate)
        if kind == "silence":
            parts.append(np.zeros(n))
            continue
        t = np.arange(n) / rate
        x = 0.25 * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
        ramp = min(n // 2, int(0.005 * rate))
        if ramp:
            x[:ramp] *= np.linspace(0, 1, ramp)
            x[-ramp:] *= np.linspace(1, 0, ramp)
        parts.append(x)
    data = (np.concatenate(parts) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
    return data, rate


def sound_spans(samples: np.ndarray, rate: int, window_ms: float = 5.0, floor: int = 300) -> list[tuple[float, float]]:
    """``[(start_s, end_s), ...]`` of windows whose peak exceeds ``floor``; gaps under 60 ms are merged."""
    w = max(1, int(rate * window_ms / 1000))
    n = len(samples) // w
    if n == 0:
        return []
    loud = np.abs(samples[: n * w].astype(np.int32)).reshape(n, w).max(axis=1) > floor
    spans: list[tuple[float, float]] = []
    start = None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append((start * w / rate, i * w / rate))
            start = None
    if start is not None:
        spans.append((start * w / rate, n * w / rate))
    merged: list[tuple[float, float]] = []
    for s, e in spans:
        if merged and s - merged[-1][1] < 0.06:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


def sounding_seconds(
    samples: np.ndarray, rate: int, span: tuple[float, float], window_ms: float = 5.0, floor: int = 300
) -> float:
    """Seconds of sound within ``span`` (a :func:`sound_spans` entry): its loud windows only, so that the
    short silences a player inserts when it runs dry (merged into the span) are not counted as played."""
    w = max(1, int(rate * window_ms / 1000))
    part = samples[int(span[0] * rate) : int(span[1] * rate)]
    n = len(part) // w
    loud = np.abs(part[: n * w].astype(np.int32)).reshape(n, w).max(axis=1) > floor
    return float(np.count_nonzero(loud)) * w / rate
