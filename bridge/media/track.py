"""``MicTrack``: the uplink track, 20 ms 48 kHz mono frames from an :class:`AudioSource`.

aiortc's sender calls ``recv()`` and sends at once, so the track must pace itself (ENVIRONMENT.md); here
the source is the clock (a sound card, or a file's monotonic deadlines). A pump task reads the source
into a bounded deque: if the sender lags, the oldest frames go (counted) and ``pts`` still follows the
source's timeline, so the far end sees a gap, not a slow-down. ``pts`` is in samples, ``time_base`` 1/48000
(aiortc ``mediastreams.AudioStreamTrack``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bridge.errors import AudioError
from bridge.media.base import FRAME_SAMPLES, RATE, AudioSource

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, RATE)


class Encoder(Protocol):
    def encode(self, pcm: np.ndarray) -> bytes: ...


def make_frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    """A s16 mono 48 kHz ``av.AudioFrame`` holding ``pcm``."""
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class MicTrack(MediaStreamTrack):
    """An audio track fed by an :class:`AudioSource` (started by the caller or on first ``recv``)."""

    kind = "audio"

    def __init__(self, source: AudioSource, *, max_frames: int = 5, encoder: Encoder | None = None) -> None:
        """With ``encoder`` (e.g. :class:`bridge.rtc.opus.LibopusEncoder`) ``recv`` returns Opus ``av.Packet``s,
        which aiortc's sender passes through as they are (``RTCRtpSender._next_encoded_frame``): no stereo
        upmix, no resampler, no executor hop per frame, and the encoder's in-band FEC."""
        super().__init__()
        self.source = source
        self.encoder = encoder
        self.dropped = 0
        self.frames_sent = 0
        self._max = max_frames
        self._queue: deque[tuple[np.ndarray, int]] = deque()
        self._ready = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._index = 0
        self._seen_source_drops = 0
        self._released = asyncio.Event()
        self._released.set()

    def hold(self) -> None:
        """Deliver nothing, and leave the source unstarted, until :meth:`release`. A WebRTC sender starts
        pulling as soon as its own DTLS is up, which can be a DTLS retransmission (~1 s) before the far
        end's is: audio sent then is dropped there, and the server's input timeline would start later than
        ours by that much (seen in the lab on the wifi profile: every turn's ``response_ms`` 0.9 s long)."""
        self._released.clear()

    def release(self) -> None:
        """Start delivering (the source starts on the next pull)."""
        self._released.set()

    async def next_frame(self) -> tuple[np.ndarray, int]:
        """The next 20 ms of PCM and its index on the source's timeline (what ``recv`` wraps; the short
        send path in :mod:`bridge.rtc.fastpath` encodes and sends it without building an ``av`` object)."""
        if self.readyState != "live":
            raise MediaStreamError
        if not self._released.is_set():
            await self._released.wait()
            if self.readyState != "live":
                raise MediaStreamError
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name="mic-track-pump")
        while not self._queue:
            if self._error is not None or self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        self.frames_sent += 1
        return self._queue.popleft()

    async def capture(self, send: Callable[[np.ndarray, int], None]) -> bool:
        """Hand frames to ``send(pcm, index)`` in the source's own capture thread (PortAudio's), so that no
        event-loop wake-up is spent per frame (:mod:`bridge.rtc.fastpath`). False at once, delivering
        nothing, when the source has no such thread (files, null): use :meth:`next_frame` then. Otherwise
        waits for :meth:`release`, starts the source and returns only by raising ``MediaStreamError`` when
        the track stops or the source fails, like :meth:`next_frame`. ``send`` must not block or raise."""
        if self.readyState != "live":
            raise MediaStreamError
        index = 0

        def deliver(pcm: np.ndarray, captured: float) -> None:
            nonlocal index
            if not self._released.is_set():  # held, and someone else started the source
                return
            self.frames_sent += 1
            index += 1
            send(pcm, index - 1)

        # The consumer goes in before the source can start (whoever starts it), so that the first frame
        # captured is the first frame sent: the server's input timeline starts there (``mic_t0``).
        if not self.source.has_capture_thread:
            return False
        self.source.capture_to(deliver)
        try:
            await self._released.wait()
            while True:  # the pump queues nothing now: next_frame returns only by raising at the end
                await self.next_frame()
        finally:
            self.source.capture_to(None)

    async def recv(self) -> av.AudioFrame | av.Packet:
        pcm, index = await self.next_frame()
        if self.encoder is not None:
            packet = av.Packet(self.encoder.encode(pcm))
            packet.pts = index * FRAME_SAMPLES
            packet.time_base = TIME_BASE
            return packet
        return make_frame(pcm, index * FRAME_SAMPLES)

    async def _run(self) -> None:
        try:
            await self.source.start()
            while True:
                pcm = await self.source.read()
                # Frames the source itself dropped still take time: keep pts on the source's timeline.
                dropped_by_source = self.source.dropped
                index = self._index + max(0, dropped_by_source - self._seen_source_drops)
                self._seen_source_drops = dropped_by_source
                if len(self._queue) >= self._max:
                    self._queue.popleft()
                    self.dropped += 1
                self._queue.append((pcm, index))
                self._index = index + 1
                self._ready.set()
        except asyncio.CancelledError:
            raise
        except (AudioError, OSError) as exc:
            log.warning("microphone stopped: %s", exc)
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        super().stop()
        self._ready.set()
        self._released.set()
        if self._pump is not None:
            self._pump.cancel()

    async def aclose(self) -> None:
        """Stop the track and wait for the pump (the source itself is closed by its owner)."""
        self.stop()
        pump, self._pump = self._pump, None
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
