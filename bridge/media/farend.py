"""The far-end reference of echo cancellation: what the speaker played, read back in step with the microphone.

The speaker's output callback :meth:`FarEnd.write`\\ s each block it hands to PortAudio with the monotonic
time its first sample reaches the speaker (PortAudio's ``outputBufferDacTime``); the microphone's capture
thread :meth:`FarEnd.read`\\ s, for each 10 ms of microphone audio captured from time ``t`` on, the samples
that were played from ``t - shift`` on. The engine then sees the echo ``shift`` + (the true echo delay minus
what the timestamps already account for) after its reference; it finds and follows that rest itself.

Both sides map sample counts to time through a smoothed offset (each device's own clock against
``time.monotonic``), so callback jitter does not move the alignment and clock drift between two sound cards
is followed: the read position is nudged one sample per 10 ms when it is more than ``nudge_ms`` away from
where the timestamps put it, and jumps when it is more than ``resync_ms`` away (a glitch, a restart).

One short lock guards the ring (copies of a few hundred samples); nothing waits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

RATE = 48_000


class FarEnd:
    """A ring of the last ``seconds`` of played audio (48 kHz int16) with its play-out timeline."""

    def __init__(
        self,
        *,
        rate: int = RATE,
        seconds: float = 2.5,
        smoothing: float = 0.01,
        resync_ms: float = 30.0,
        nudge_ms: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self._cap = int(seconds * rate)
        self._ring = np.zeros(self._cap, dtype=np.int16)
        self._written = 0
        self._offset: float | None = None
        """Smoothed play-out time of sample 0: sample ``i`` sounds at ``offset + i / rate``."""
        self._alpha = smoothing
        self._resync_s = resync_ms / 1000
        self._nudge = round(nudge_ms * rate / 1000)
        self._resync = round(resync_ms * rate / 1000)
        self._clock = clock
        self._last_write = -math.inf
        self._lock = threading.Lock()
        self._rp: int | None = None  # capture thread only
        self.resyncs = 0
        """Times the play-out timeline jumped (output glitch, device restart)."""
        self.jumps = 0
        """Times the read position jumped instead of being nudged."""
        self.nudges = 0
        self.late = 0
        """Reads that asked for audio not yet handed to the device (the pairing leads too far)."""

    # ---------------------------------------------------------------- output thread

    def write(self, pcm: np.ndarray, at: float) -> None:
        """``pcm``: the block just handed to the device; ``at``: monotonic time its first sample sounds."""
        n = len(pcm)
        if n == 0:
            return
        with self._lock:
            start = self._written
            offset = at - start / self.rate
            if self._offset is None or abs(offset - self._offset) > self._resync_s:
                if self._offset is not None:
                    self.resyncs += 1
                self._offset = offset
            else:
                self._offset += self._alpha * (offset - self._offset)
            if n >= self._cap:
                pcm, start = pcm[-self._cap :], start + n - self._cap
            i = start % self._cap
            first = min(len(pcm), self._cap - i)
            self._ring[i : i + first] = pcm[:first]
            if first < len(pcm):
                self._ring[: len(pcm) - first] = pcm[first:]
            self._written = self._written + n
            self._last_write = self._clock()

    # ---------------------------------------------------------------- capture thread

    def read(self, t: float, n: int, shift: float) -> np.ndarray:
        """``n`` samples played from ``t - shift`` on (zeros where nothing was played)."""
        with self._lock:
            if self._offset is None:
                return np.zeros(n, dtype=np.int16)
            want = round((t - shift - self._offset) * self.rate)
            rp = self._rp
            if rp is None or abs(want - rp) > self._resync:
                if rp is not None:
                    self.jumps += 1
                rp = want
            elif want - rp > self._nudge:
                rp += 1
                self.nudges += 1
            elif rp - want > self._nudge:
                rp -= 1
                self.nudges += 1
            out = np.zeros(n, dtype=np.int16)
            lo, hi = max(rp, self._written - self._cap), min(rp + n, self._written)
            if hi > lo:
                i = lo % self._cap
                first = min(hi - lo, self._cap - i)
                out[lo - rp : lo - rp + first] = self._ring[i : i + first]
                if first < hi - lo:
                    out[lo - rp + first : hi - rp] = self._ring[: hi - lo - first]
            if rp + n > self._written and self._clock() - self._last_write < 0.1:
                self.late += 1
            self._rp = rp + n
            return out

    def reset_read(self) -> None:
        """Forget the read position (the next read starts where the timestamps say)."""
        self._rp = None

    @property
    def active(self) -> bool:
        """A block was written in the last 100 ms."""
        return self._clock() - self._last_write < 0.1
