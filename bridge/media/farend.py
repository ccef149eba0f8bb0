"""The far-end reference of echo cancellation: what the speaker played, read back in step with the microphone.

The speaker's output callback :meth:`FarEnd.write`\\ s each block it hands to PortAudio with the monotonic
time its first sample reaches the speaker (PortAudio's ``outputBufferDacTime``); the microphone's capture
thread :meth:`FarEnd.read`\\ s, for each 10 ms of microphone audio captured from time ``t`` on, the samples
that were played from ``t - shift`` on. The engine then sees the echo ``shift`` + (the true echo delay minus
what the timestamps already account for) after its reference; it finds and follows that rest itself.

Both sides map sample counts to time through an :class:`OffsetTracker` (each device's own clock against
``time.monotonic``): callback jitter does not move the alignment, clock drift between two sound cards is
followed slowly, and a step (an underrun, a restart: the device plays later than the samples count) is
taken at once. The read position is nudged one sample per 10 ms while it is more than ``nudge_ms`` from
where the timestamps put it (drift), and jumps when the timeline stepped or it is more than ``jump_ms`` away:
the engine re-converges faster after one clean jump than while its reference slides for seconds.

One short lock guards the ring (copies of a few hundred samples); nothing waits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

RATE = 48_000
LOUD_DBFS = -60.0
_LOUD_POWER = (32768 * 10 ** (LOUD_DBFS / 20)) ** 2


class OffsetTracker:
    """A smoothed clock offset that moves at most ``alpha * clip_s`` per update once settled (a running mean over
    the first ``1 / alpha`` updates): callback jitter and a wobbling delay report average away, while the drift
    of one sound card's clock against ``time.monotonic`` (tens to a few hundred ppm) is followed. Once settled, a
    value more than ``band_s`` away is an outlier (a late callback) and ignored, unless the tracker steps
    (``persist > 0``) and ``persist`` of them in a row agree within ``band_s`` (a new level: an underrun, a
    restart) or it is more than ``snap_s`` away: then the offset steps to them (counted in :attr:`steps`)."""

    def __init__(
        self, alpha: float, clip_s: float, band_s: float = 0.003, snap_s: float = 0.03, persist: int = 0
    ) -> None:
        self.alpha = alpha
        self.clip = clip_s
        self.band = band_s
        self.snap = snap_s
        self.persist = persist
        self.value: float | None = None
        self.steps = 0
        self._updates = 0
        self._candidate: list[float] = []

    def update(self, offset: float) -> float:
        if self.value is None:
            self.value, self._updates = offset, 1
            return offset
        dev = offset - self.value
        if abs(dev) > self.band and self._updates * self.alpha >= 1:
            if not self.persist:
                return self.value  # an outlier (a late callback, or the callbacks' latency stepped): ignored
            if self._candidate and abs(offset - self._candidate[0]) > self.band:
                self._candidate.clear()  # not the same new level: start again from this one
            self._candidate.append(offset)
            if abs(dev) > self.snap or len(self._candidate) >= self.persist:
                self.value = sum(self._candidate) / len(self._candidate)
                self.steps += 1
                self._updates = 1
                self._candidate.clear()
            return self.value
        self._candidate.clear()
        self._updates += 1
        if self._updates * self.alpha < 1:  # settling: a running mean
            self.value += dev / self._updates
        else:
            self.value += self.alpha * max(-self.clip, min(self.clip, dev))
        return self.value


class FarEnd:
    """A ring of the last ``seconds`` of played audio (48 kHz int16) with its play-out timeline."""

    def __init__(
        self,
        *,
        rate: int = RATE,
        seconds: float = 2.5,
        smoothing: float = 0.01,
        jump_ms: float = 8.0,
        nudge_ms: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self._cap = int(seconds * rate)
        self._ring = np.zeros(self._cap, dtype=np.int16)
        self._written = 0
        # 5 ms blocks: a new level is taken after 30 ms; otherwise it moves at most 0.1 ms a second (100 ppm)
        self._offset = OffsetTracker(smoothing, clip_s=0.00005, persist=6)
        """Play-out time of sample 0: sample ``i`` sounds at ``offset + i / rate``."""
        self._nudge = round(nudge_ms * rate / 1000)
        self._jump = round(jump_ms * rate / 1000)
        self._clock = clock
        self._last_write = -math.inf
        self.loud_writes = 0
        """Blocks above :data:`LOUD_DBFS` handed to the device so far (read from any thread)."""
        self._lock = threading.Lock()
        self._rp: int | None = None  # capture thread only
        self._stepped = False

        self.jumps = 0
        """Times the read position jumped instead of being nudged."""
        self.nudges = 0
        self.late = 0
        """Reads that asked for audio not yet handed to the device although the speaker's callback keeps time
        (the pairing leads too far for this device)."""
        self.starved = 0
        """Reads that found the speaker's callback behind (a busy machine): the missing audio is zeros."""

    # ---------------------------------------------------------------- output thread

    def write(self, pcm: np.ndarray, at: float) -> None:
        """``pcm``: the block just handed to the device; ``at``: monotonic time its first sample sounds."""
        n = len(pcm)
        if n == 0:
            return
        with self._lock:
            start = self._written
            steps = self._offset.steps
            self._offset.update(at - start / self.rate)
            if self._offset.steps != steps:
                self._stepped = True  # the next read follows the step at once, however small
            if n >= self._cap:
                pcm, start = pcm[-self._cap :], start + n - self._cap
            i = start % self._cap
            first = min(len(pcm), self._cap - i)
            self._ring[i : i + first] = pcm[:first]
            if first < len(pcm):
                self._ring[: len(pcm) - first] = pcm[first:]
            self._written = self._written + n
            self._last_write = self._clock()
        if float(np.dot(pcm.astype(np.float64), pcm)) > n * _LOUD_POWER:
            self.loud_writes += 1

    # ---------------------------------------------------------------- capture thread

    def read(self, t: float, n: int, shift: float) -> np.ndarray:
        """``n`` samples played from ``t - shift`` on (zeros where nothing was played)."""
        with self._lock:
            offset = self._offset.value
            if offset is None:
                return np.zeros(n, dtype=np.int16)
            want = round((t - shift - offset) * self.rate)
            rp = self._rp
            if rp is None or self._stepped or abs(want - rp) > self._jump:
                self._stepped = False
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
            if rp + n > self._written:
                since = self._clock() - self._last_write
                if since < 0.012:  # the callback ran within ~2 blocks: it is on time, the lead is too long
                    self.late += 1
                elif since < 0.5:
                    self.starved += 1
            self._rp = rp + n
            return out

    def reset_read(self) -> None:
        """Forget the read position (the next read starts where the timestamps say)."""
        self._rp = None

    @property
    def steps(self) -> int:
        """Times the play-out timeline stepped (an underrun, a device restart)."""
        return self._offset.steps

    @property
    def active(self) -> bool:
        """A block was written in the last 100 ms."""
        return self._clock() - self._last_write < 0.1
