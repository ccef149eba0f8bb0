"""Test audio for the lab and the onset detector that reads recordings back. Pure numpy, no I/O
besides :func:`write_wav` / :func:`read_wav`.

The lab never trusts the bridge's own clocks alone: it puts bursts at known sample positions into the
microphone file and finds where sound starts and stops in the speaker file. A ``.wav`` output sample
``n`` was played ``n / 48000`` s after ``output_start_unix`` (issue #3), so both files map to wall
clock time through the transcript's ``session`` line.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 48_000
BLOCK_MS = 1  # envelope resolution
ON_LEVEL = 1000  # |sample| above this (-30 dBFS) is sound; the lab's bursts and replies peak near -10 dBFS
MERGE_GAP_MS = 60  # quieter stretches shorter than this inside a sound are gaps, not ends
MIN_GAP_MS = 3  # a dip shorter than this is a waveform artefact, not a dropout


def burst(seconds: float, freq: float = 300.0, level: float = 0.3, rate: int = RATE) -> np.ndarray:
    """A speech-like tone burst (3 Hz tremolo, 2 ms ramps): loud enough for server VAD, clean onset."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = level * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)) / 1.3
    ramp = min(n // 2, int(0.002 * rate))
    if ramp:
        x[:ramp] *= np.linspace(0, 1, ramp)
        x[-ramp:] *= np.linspace(1, 0, ramp)
    return (x * 32767).astype(np.int16)


@dataclass(frozen=True)
class Plan:
    """An input file: ``bursts`` as (start_s, end_s) from the file's first sample, and its samples."""

    bursts: list[tuple[float, float]]
    audio: np.ndarray

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE


def dither(i: int) -> float:
    """A sub-block offset for burst ``i`` (0..19 ms, well spread): the output sink writes 10 ms blocks
    and frames are 20 ms, so bursts on a 10 ms grid would all land on the same block phase and every
    trial would read the same quantised value."""
    return ((i * 7) % 20) / 1000


def render(bursts: list[tuple[float, float]], total_s: float, rate: int = RATE) -> Plan:
    audio = np.zeros(int(total_s * rate), dtype=np.int16)
    for a, b in bursts:
        x = burst(b - a, rate=rate)
        i = int(round(a * rate))
        audio[i : i + len(x)] = x[: len(audio) - i]
    return Plan(bursts, audio)


def echo_plan(trials: int, lead_s: float, spacing_s: float = 1.0, burst_s: float = 0.1) -> Plan:
    """``trials`` short bursts ``spacing_s`` apart after ``lead_s`` of silence (mouth-to-ear trials)."""
    starts = [lead_s + i * spacing_s + dither(i) for i in range(trials)]
    bursts = [(a, a + burst_s) for a in starts]
    return render(bursts, lead_s + trials * spacing_s + 1.0)


def turn_plan(
    trials: int,
    lead_s: float,
    *,
    vad_silence_ms: float,
    think_ms: float,
    reply_s: float,
    network_s: float = 0.15,
    first_s: float = 0.5,
    bargein_s: float = 0.4,
    into_reply_s: float = 0.8,
) -> Plan:
    """A chain of turns where every burst after the first barges in on the reply to the one before.

    Burst k ends; server VAD waits ``vad_silence_ms``; the emulator thinks ``think_ms``; the reply tone
    (``reply_s`` long) starts about ``network_s`` later at the speaker. Burst k+1 starts
    ``into_reply_s`` into that reply, so it is both the barge-in on reply k and the question for reply
    k+1. ``trials`` bursts give ``trials`` response latencies and ``trials - 1`` barge-ins (the
    last reply is left to play out).
    """
    if into_reply_s + 0.3 > reply_s:
        raise ValueError("the barge-in must land well inside the reply")
    bursts = []
    t = lead_s
    length = first_s
    for i in range(trials):
        t += dither(i)
        bursts.append((t, t + length))
        reply_at = t + length + (vad_silence_ms + think_ms) / 1000 + network_s
        t = reply_at + into_reply_s
        length = bargein_s
    end = bursts[-1][1] + (vad_silence_ms + think_ms) / 1000 + network_s + reply_s + 1.0
    return render(bursts, end)


def envelope(x: np.ndarray, rate: int = RATE, block_ms: int = BLOCK_MS) -> np.ndarray:
    """Peak |sample| per ``block_ms`` block."""
    b = rate * block_ms // 1000
    n = len(x) // b
    if n == 0:
        return np.zeros(0)
    peaks: np.ndarray = np.abs(x[: n * b].astype(np.int32)).reshape(n, b).max(axis=1)
    return peaks


@dataclass(frozen=True)
class Segment:
    """A stretch of sound: ``start``/``end`` in seconds from the file's first sample; internal ``gaps``."""

    start: float
    end: float
    gaps: int = 0
    gap_ms: float = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start


def segments(
    x: np.ndarray, rate: int = RATE, level: int = ON_LEVEL, merge_gap_ms: float = MERGE_GAP_MS
) -> list[Segment]:
    """Sound segments of a recording; quiet stretches shorter than ``merge_gap_ms`` count as gaps."""
    env = envelope(x, rate)
    on = env > level
    if not on.any():
        return []
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    out: list[Segment] = []
    cur_s, cur_e, gaps, gap_ms = int(starts[0]), int(ends[0]), 0, 0.0
    for s, e in zip(starts[1:], ends[1:], strict=True):
        quiet = (s - cur_e) * BLOCK_MS
        if quiet < merge_gap_ms:
            if quiet >= MIN_GAP_MS:
                gaps += 1
                gap_ms += quiet
            cur_e = int(e)
            continue
        out.append(Segment(cur_s * BLOCK_MS / 1000, cur_e * BLOCK_MS / 1000, gaps, gap_ms))
        cur_s, cur_e, gaps, gap_ms = int(s), int(e), 0, 0.0
    out.append(Segment(cur_s * BLOCK_MS / 1000, cur_e * BLOCK_MS / 1000, gaps, gap_ms))
    return out


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(audio.astype(np.int16).tobytes())
    return path


def read_wav(path: Path) -> np.ndarray:
    """Mono int16 at 48 kHz (what the bridge's ``.wav`` sink writes); other shapes are an error."""
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 48 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
