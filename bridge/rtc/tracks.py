"""``PacedAudioTrack``: an outgoing aiortc audio track that paces itself.

aiortc's ``RTCRtpSender`` calls ``track.recv()`` in a loop and encodes + sends each frame at once
(ENVIRONMENT.md "aiortc"), so the track sets the pace. Like aiortc's ``AudioStreamTrack.recv``
(``mediastreams.py``), frame n is due at ``start + n * 20 ms`` on the monotonic clock: a fixed schedule,
not a sleep-per-frame interval timer that accumulates drift.

Audio comes from either a ``pull()`` function, called at the deadline itself (so whatever it returns
is on the wire within the encode time: the emulator's reply pump uses this), or from a bounded
frame queue filled with :meth:`PacedAudioTrack.put` (queued frames go first). In ``live`` mode (relaying a
stream that arrives at the same 20 ms rate, e.g. the emulator's echo) a frame that arrives is sent at the
next deadline: the queue holds at most two frames so arrival jitter does not cost audio, and a standing
second frame (one extra frame of latency for ``LIVE_TRIM_AFTER`` deadlines in a row) is dropped so the
latency goes back to the minimum. Drops are counted. Nothing to send means a frame of silence, as a real
microphone track would send.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
RESYNC_AFTER_S = 0.2  # if the consumer fell this far behind, restart the schedule instead of bursting
LIVE_TRIM_AFTER = 10  # live mode: deadlines with a standing extra frame before one is dropped

Pull = Callable[[], np.ndarray | None]


class PacedAudioTrack(MediaStreamTrack):
    """20 ms, 48 kHz, mono s16 frames on monotonic deadlines; silence when there is nothing to send."""

    kind = "audio"

    def __init__(
        self,
        pull: Pull | None = None,
        *,
        max_frames: int = 50,
        live: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._pull = pull
        self._queue: deque[np.ndarray] = deque()
        self._live = live
        self._max = 2 if live else max(1, max_frames)
        self._standing = 0  # live mode: consecutive deadlines that found more than one frame queued
        self._clock = clock
        self._start: float | None = None
        self._pts = 0
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.dropped = 0  # frames dropped because the queue was full (oldest first)
        self.frames_sent = 0
        self.silent_frames = 0
        self.resyncs = 0

    # ---- producer side ---------------------------------------------------------------------------

    def put(self, frame: np.ndarray) -> None:
        """Queue one 20 ms frame (960 int16 samples); when full the OLDEST frame is dropped."""
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"PacedAudioTrack frames are {FRAME_SAMPLES} samples, got {len(frame)}")
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(frame)

    def clear(self) -> int:
        """Drop every queued frame; returns how many were dropped."""
        n = len(self._queue)
        self._queue.clear()
        return n

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ---- aiortc side ---------------------------------------------------------------------------------

    def _next_pcm(self) -> np.ndarray | None:
        if self._live:
            self._standing = self._standing + 1 if len(self._queue) > 1 else 0
            if self._standing >= LIVE_TRIM_AFTER:
                self._queue.popleft()
                self.dropped += 1
                self._standing = 0
        if self._queue:
            return self._queue.popleft()
        if self._pull is not None:
            return self._pull()
        return None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            due = self._start + self._pts / RATE
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > RESYNC_AFTER_S:
                # The sender stalled (loop blocked): start a new schedule rather than burst old frames.
                self._start = now - self._pts / RATE
                self.resyncs += 1
        if self.readyState != "live":
            raise MediaStreamError
        pcm = self._next_pcm()
        if pcm is None:
            pcm = self._silence
            self.silent_frames += 1
        elif len(pcm) != FRAME_SAMPLES:  # a short final chunk from pull(): pad; never stretch time
            pcm = np.concatenate([pcm[:FRAME_SAMPLES], self._silence])[:FRAME_SAMPLES]
        self.frames_sent += 1
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        return frame
