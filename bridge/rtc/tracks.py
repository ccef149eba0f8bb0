"""``PacedAudioTrack``: an outgoing aiortc audio track that paces itself.

aiortc's ``RTCRtpSender`` calls ``track.recv()`` in a loop and encodes + sends each frame at once
(ENVIRONMENT.md "aiortc"), so the track sets the pace. Like aiortc's ``AudioStreamTrack.recv``
(``mediastreams.py``), frame n is due at ``start + n * 20 ms`` on the monotonic clock: a fixed schedule,
not a sleep-per-frame interval timer that accumulates drift.

Audio comes from either a ``pull()`` function, called at the deadline itself (so whatever it returns
is on the wire within the encode time: the emulator's reply pump uses this), or from a bounded
frame queue filled with :meth:`PacedAudioTrack.put` (queued frames go first). Nothing to send means a
frame of silence, as a real microphone track would send.

In ``live`` mode the track relays a stream that arrives at the same 20 ms rate (the emulator's echo):
each frame goes out as soon as it is put, not at the track's next deadline, the way a media relay
forwards what it receives (aiortc's ``examples/server/server.py`` sends each frame of a relayed remote
track the moment ``recv()`` returns it; pion's ``examples/reflect`` writes each RTP packet back as it
reads it). A grid of its own would add 0-20 ms of phase to every echo and, under arrival jitter, insert
silence where a frame missed its deadline. Frames that arrive together (after a network stall) go out
together; only when nothing arrives for ``LIVE_SILENCE_AFTER`` past the expected time does the track
send silence, to keep the stream going. The queue is bounded (``LIVE_MAX_FRAMES``, oldest dropped and
counted).

With an ``encoder`` (:class:`bridge.rtc.opus.LibopusEncoder`, e.g. to code in-band FEC, which aiortc's own
encoder never does) ``recv`` returns Opus ``av.Packet``s, which aiortc's sender passes through as they are
(``RTCRtpSender._next_encoded_frame``), as :class:`bridge.media.track.MicTrack` does.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)
RESYNC_AFTER_S = 0.2  # if the consumer fell this far behind, restart the schedule instead of bursting
LIVE_MAX_FRAMES = 25  # live mode: frames held when the sender falls behind (500 ms), oldest dropped
LIVE_SILENCE_AFTER = 0.1  # live mode: nothing put this long past the expected time -> send silence

Pull = Callable[[], np.ndarray | None]


class Encoder(Protocol):
    def encode(self, pcm: np.ndarray) -> bytes: ...


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
        self._max = LIVE_MAX_FRAMES if live else max(1, max_frames)
        self._arrived = asyncio.Event()  # live mode: set by put()
        self._relaying = False  # live mode: the last frame sent was a relayed one
        self._clock = clock
        self._start: float | None = None
        self._pts = 0
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.dropped = 0  # frames dropped because the queue was full (oldest first)
        self.frames_sent = 0
        self.silent_frames = 0
        self.resyncs = 0
        self.encoder: Encoder | None = None
        """When set, frames leave Opus-encoded by it (``av.Packet``) instead of as PCM for aiortc's encoder."""

    # ---- producer side ---------------------------------------------------------------------------

    def put(self, frame: np.ndarray) -> None:
        """Queue one 20 ms frame (960 int16 samples); when full the OLDEST frame is dropped."""
        if len(frame) != FRAME_SAMPLES:
            raise ValueError(f"PacedAudioTrack frames are {FRAME_SAMPLES} samples, got {len(frame)}")
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(frame)
        self._arrived.set()

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
        if self._queue:
            return self._queue.popleft()
        if self._pull is not None:
            return self._pull()
        return None

    async def _wait_live(self) -> None:
        """Live mode: until a frame is queued; when none comes ``LIVE_SILENCE_AFTER`` past the expected time,
        silence, then silence on the 20 ms schedule until frames come again."""
        now = self._clock()
        if self._start is None:
            self._start = now
            return
        self._pts += FRAME_SAMPLES
        if not self._queue:
            self._arrived.clear()
            give_up = self._start + self._pts / RATE + (LIVE_SILENCE_AFTER if self._relaying else 0.0)
            if give_up > now:
                try:
                    async with asyncio.timeout(give_up - now):
                        await self._arrived.wait()
                except TimeoutError:
                    pass
        self._relaying = bool(self._queue)
        self._start = self._clock() - self._pts / RATE  # the next frame is expected 20 ms from now

    async def recv(self) -> av.AudioFrame | av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._live:
            await self._wait_live()
            return self._frame()
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
        return self._frame()

    def _frame(self) -> av.AudioFrame | av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = self._next_pcm()
        if pcm is None:
            pcm = self._silence
            self.silent_frames += 1
        elif len(pcm) != FRAME_SAMPLES:  # a short final chunk from pull(): pad; never stretch time
            pcm = np.concatenate([pcm[:FRAME_SAMPLES], self._silence])[:FRAME_SAMPLES]
        self.frames_sent += 1
        if self.encoder is not None:
            packet = av.Packet(self.encoder.encode(pcm))
            packet.pts = self._pts
            packet.time_base = TIME_BASE
            return packet
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = TIME_BASE
        return frame
