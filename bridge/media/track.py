"""``MicTrack``: one WebRTC connection's uplink track, fed 20 ms 48 kHz mono frames by the station's mic.

The microphone itself belongs to the station (:class:`bridge.media.mic.MicRouter`), which outlives
connections and hands each frame to the current connection's :class:`bridge.media.uplink.Uplink`; a
``MicTrack`` is that uplink for WebRTC. Frames arrive in one of two ways:

- on the event loop (files, ``null``, or a sound card when the short send path is off): they wait in a
  small drop-oldest queue for aiortc's sender (``recv``) or the short send path (``next_frame``). Frame
  indices follow the source's timeline, so frames lost anywhere upstream show the far end a gap, not a
  slow-down (``pts`` in samples, ``time_base`` 1/48000: aiortc ``mediastreams.AudioStreamTrack``);
- in the capture thread (a sound card with the short send path): :meth:`MicTrack.capture` registers a
  ``send(pcm, index)`` that encodes and sends the frame right there (:mod:`bridge.rtc.fastpath`), and the
  track declares itself :attr:`thread_safe` so the router calls it from that thread.

The track is *held* until the connection is ready (:meth:`hold` / :meth:`release`): a WebRTC sender
starts pulling as soon as its own DTLS is up, which can be a DTLS retransmission (~1 s) before the far
end's; audio sent then is dropped there, and the server's input timeline would start later than ours by
that much (seen in the lab on the wifi profile: every turn's ``response_ms`` 0.9 s long). The first frame
delivered after the release is the origin of the server's timeline: ``on_first_frame`` gets its first
sample's capture time, on the event loop.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
from collections.abc import Callable
from typing import Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bridge.media.base import FRAME_MS, FRAME_SAMPLES, RATE, silence
from bridge.media.uplink import FrameQueue, Uplink, first_sample_time

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, RATE)
FRAME_S = FRAME_MS / 1000
Send = Callable[[np.ndarray, int], None]
"""``send(pcm, index)``: encode and send frame ``index`` of this connection's timeline, in the capture thread."""


class Encoder(Protocol):
    """An uplink encoder (:class:`bridge.rtc.opus.LibopusEncoder`) whose FEC follows reported loss."""

    loss_perc: int

    def encode(self, pcm: np.ndarray) -> bytes: ...
    def expect_loss(self, percent: int) -> None: ...


def make_frame(pcm: np.ndarray, pts: int) -> av.AudioFrame:
    """A s16 mono 48 kHz ``av.AudioFrame`` holding ``pcm``."""
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class MicTrack(MediaStreamTrack, Uplink):
    """The WebRTC uplink of one connection (see module docstring)."""

    kind = "audio"

    def __init__(
        self,
        *,
        capture_thread: bool = False,
        max_frames: int = 5,
        encoder: Encoder | None = None,
        on_first_frame: Callable[[float], None] | None = None,
    ) -> None:
        """``capture_thread``: frames will come in the microphone's capture thread, so :meth:`capture` can
        take them there. With ``encoder`` (e.g. :class:`bridge.rtc.opus.LibopusEncoder`) ``recv`` returns Opus
        ``av.Packet``s, which aiortc's sender passes through as they are (``RTCRtpSender._next_encoded_frame``):
        no stereo upmix, no resampler, no executor hop per frame, and the encoder's in-band FEC."""
        super().__init__()
        self.encoder = encoder
        if on_first_frame is not None:
            self.on_first_frame = on_first_frame
        self.frames_sent = 0
        self.held_dropped = 0
        """Frames that arrived while the track was held (before the connection was ready)."""
        self._capture_thread = capture_thread
        self._queue: FrameQueue[int] = FrameQueue(max_frames)
        self._thread_send: Send | None = None
        self._index = -1
        self._last_captured: float | None = None
        self._paused = False
        self._released = threading.Event()
        self._released.set()
        self._released_async = asyncio.Event()
        self._released_async.set()
        self._ended = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def dropped(self) -> int:
        """Frames the sender was too slow for (oldest first)."""
        return self._queue.dropped

    # ---- the connection's side ------------------------------------------------------------------------

    def hold(self) -> None:
        """Deliver nothing until :meth:`release` (see module docstring)."""
        self._released.clear()
        self._released_async.clear()

    def release(self) -> None:
        """Start delivering: the next frame is frame 0 of this connection's timeline."""
        self._loop = asyncio.get_running_loop()
        self._released.set()
        self._released_async.set()

    def pause(self, paused: bool) -> None:
        """Push-to-talk between turns: silence instead of the room, on the same timeline (RTP keeps its pace)."""
        self._paused = paused

    # ---- the station's side (Uplink) ------------------------------------------------------------------

    @property
    def thread_safe(self) -> bool:
        return self._thread_send is not None

    def send_frame(self, pcm: np.ndarray, captured: float) -> None:
        if not self._released.is_set() or self.readyState != "live":
            self.held_dropped += 1
            return
        if self._paused:
            pcm = silence()
        first = self._last_captured is None
        if first:
            self._first_frame(captured)
        send = self._thread_send
        if send is not None:  # the capture thread: one frame, one index
            self._index += 1
            self._last_captured = captured
            self.frames_sent += 1
            send(pcm, self._index)
            return
        # the loop: indices follow the source's timeline across frames lost upstream
        self._index += 1 if first else max(1, round((captured - (self._last_captured or captured)) / FRAME_S))
        self._last_captured = captured
        self._queue.put(pcm, self._index)

    def _first_frame(self, captured: float) -> None:
        if self.on_first_frame is None:
            return
        t = first_sample_time(captured)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # the capture thread
            running = None
        if running is not None or self._loop is None:
            self.on_first_frame(t)
        else:
            self._loop.call_soon_threadsafe(self.on_first_frame, t)

    # ---- the sender's side ----------------------------------------------------------------------------

    async def next_frame(self) -> tuple[np.ndarray, int]:
        """The next 20 ms of PCM and its index on this connection's timeline (what ``recv`` wraps; the short
        send path in :mod:`bridge.rtc.fastpath` encodes and sends it without building an ``av`` object)."""
        if self.readyState != "live":
            raise MediaStreamError
        await self._released_async.wait()
        try:
            pcm, index = await self._queue.get()
        except EOFError:
            raise MediaStreamError from None
        self.frames_sent += 1
        return pcm, index

    async def capture(self, send: Send) -> bool:
        """Take frames in the capture thread: ``send(pcm, index)`` is then called there for every frame, so
        no event-loop wake-up is spent per frame (:mod:`bridge.rtc.fastpath`). False at once when frames do
        not come in a capture thread (files, null): use :meth:`next_frame` then. Otherwise returns only by
        raising ``MediaStreamError`` when the track stops, like :meth:`next_frame`. ``send`` must not block
        or raise."""
        if self.readyState != "live":
            raise MediaStreamError
        if not self._capture_thread:
            return False
        self._thread_send = send
        try:
            await self._ended.wait()
        finally:
            self._thread_send = None
        raise MediaStreamError

    async def recv(self) -> av.AudioFrame | av.Packet:  # type: ignore[type-arg]  # av.Packet is generic in stubs only
        pcm, index = await self.next_frame()
        if self.encoder is not None:
            packet = av.Packet(self.encoder.encode(pcm))
            packet.pts = index * FRAME_SAMPLES
            packet.time_base = TIME_BASE
            return packet
        return make_frame(pcm, index * FRAME_SAMPLES)

    def stop(self) -> None:
        super().stop()
        self._thread_send = None
        self._queue.close()
        self._ended.set()
        self._released.set()
        self._released_async.set()

    async def aclose(self) -> None:
        """Stop the track (the microphone itself belongs to the station)."""
        self.stop()
