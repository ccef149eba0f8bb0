"""Helpers for tests and benchmarks of the receive path: Opus packet streams and a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

RATE = 48_000
FRAME = 960


def tone(seconds: float, freq: float = 440.0, level: float = 0.3, rate: int = RATE) -> np.ndarray:
    """Mono int16 sine."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def opus_packets(pcm: np.ndarray) -> list[bytes]:
    """Encode mono int16 48 kHz into 20 ms Opus packets with aiortc's own encoder (what peers send)."""
    import fractions

    import av
    from aiortc.codecs.opus import OpusEncoder

    enc = OpusEncoder()
    out: list[bytes] = []
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        frame = av.AudioFrame.from_ndarray(pcm[i : i + FRAME].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = i
        frame.time_base = fractions.Fraction(1, RATE)
        payloads, _ = enc.encode(frame)
        out.extend(payloads)
    return out


class FakeClock:
    """A settable clock for :class:`bridge.rtc.reorder.ReorderWindow` / ``AudioReceiver(clock=...)``."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@dataclass
class FakeRtp:
    """Quacks like aiortc's depayloaded ``RtpPacket`` for :meth:`AudioReceiver.feed`."""

    sequence_number: int
    timestamp: int
    _data: bytes
    payload_type: int = 111


def rtp_stream(payloads: list[bytes], seq0: int = 0, ts0: int = 0) -> Iterator[FakeRtp]:
    """Sequential packets (16-bit seq and 32-bit timestamp wrap as on the wire)."""
    for i, p in enumerate(payloads):
        yield FakeRtp((seq0 + i) % 65536, (ts0 + i * FRAME) % (1 << 32), p)
