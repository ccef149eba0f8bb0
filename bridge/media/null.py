"""``null`` devices: silence in, discard out, both on a real-time clock so playout still advances."""

from __future__ import annotations

import numpy as np

from bridge.media.base import silence
from bridge.media.paced import PacedSink, PacedSource


class NullSource(PacedSource):
    """A microphone that hears nothing, one 20 ms frame per 20 ms."""

    def _frame(self, index: int) -> np.ndarray:
        return silence()

    def describe(self) -> dict[str, object]:
        return {"kind": "null"}


class NullSink(PacedSink):
    """A speaker nobody hears: pulls 10 ms blocks in real time and drops them."""

    def describe(self) -> dict[str, object]:
        return {"kind": "null"}
