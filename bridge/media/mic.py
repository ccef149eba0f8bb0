"""The station's microphone: started once, each frame handed to the current connection or dropped.

:class:`MicRouter` owns the path from an :class:`AudioSource` to whichever :class:`Uplink` is attached
(one connection at a time; a new session takes over with :meth:`MicRouter.attach`). With a sound card it
takes frames in PortAudio's capture thread (:meth:`AudioSource.capture_to`) and passes them on right there
to an uplink that is :attr:`Uplink.thread_safe` (the WebRTC short send path), or hops to the event loop
for one that is not (WebSocket appends). Sources without a capture thread (files, ``null``) are read by
:meth:`MicRouter.run` on the loop.

Taps (:meth:`add_tap`) see every frame, attached or not, in the thread it arrives in (the kiosk's local
voice detector and pre-roll). Frames with no uplink attached are counted in ``unrouted`` and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import numpy as np

from bridge.media.base import AudioSource, FrameConsumer
from bridge.media.uplink import Uplink

log = logging.getLogger(__name__)


class MicRouter:
    """Microphone -> the attached :class:`Uplink` (see module docstring)."""

    def __init__(self, source: AudioSource) -> None:
        self.source = source
        self.frames = 0
        self.unrouted = 0
        """Frames captured while no connection took them (not queued for later)."""
        self._uplink: Uplink | None = None
        self._taps: tuple[FrameConsumer, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    async def start(self) -> None:
        """Open the microphone (idempotent). With a capture thread, frames flow from now on."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        if self.source.has_capture_thread:
            # the consumer goes in before the stream starts: the first frame captured is routed
            self.source.capture_to(self._captured)
        await self.source.start()
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    async def run(self) -> None:
        """Read a source that has no capture thread, until cancelled or the source fails (raises
        :class:`bridge.errors.AudioError`). With a capture thread there is nothing to do here."""
        if self.source.has_capture_thread:
            await asyncio.Event().wait()
        while True:
            pcm, captured = await self.source.read_frame()
            self._on_loop(pcm, captured, True)

    def attach(self, uplink: Uplink) -> None:
        """From the next frame on, frames go to ``uplink`` (and no longer to the previous one)."""
        self._uplink = uplink

    def detach(self, uplink: Uplink) -> None:
        """Stop sending to ``uplink`` if it is the attached one."""
        if self._uplink is uplink:
            self._uplink = None

    @property
    def attached(self) -> Uplink | None:
        return self._uplink

    def add_tap(self, tap: FrameConsumer) -> None:
        self._taps = (*self._taps, tap)

    def remove_tap(self, tap: FrameConsumer) -> None:
        self._taps = tuple(t for t in self._taps if t is not tap)

    # ---- delivery ---------------------------------------------------------------------------------------

    def _arrived(self, pcm: np.ndarray, captured: float) -> None:
        """A frame's first stop, in whichever thread it arrives: counted and shown to the taps."""
        self.frames += 1
        for tap in self._taps:
            tap(pcm, captured)

    def _captured(self, pcm: np.ndarray, captured: float) -> None:
        """PortAudio's thread: taps, then the uplink here (thread-safe) or on the loop."""
        self._arrived(pcm, captured)
        uplink = self._uplink
        if uplink is None:
            self.unrouted += 1
        elif uplink.thread_safe:
            uplink.send_frame(pcm, captured)
        elif self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_loop, pcm, captured, False)
            except RuntimeError:  # the loop closed while the stream was stopping
                pass

    def _on_loop(self, pcm: np.ndarray, captured: float, first_stop: bool) -> None:
        """The loop: a frame read here (``first_stop``), or hopped over from the capture thread; it goes to
        whichever uplink is attached now (a frame in flight during a switch is not lost)."""
        if first_stop:
            self._arrived(pcm, captured)
        uplink = self._uplink
        if uplink is None:
            self.unrouted += 1
            return
        uplink.send_frame(pcm, captured)

    def stats(self) -> dict[str, int]:
        return {"frames": self.frames, "unrouted": self.unrouted}

    async def aclose(self) -> None:
        """Detach everything and close the microphone."""
        self._uplink = None
        if self.source.has_capture_thread:
            self.source.capture_to(None)
        await self.source.aclose()


class LoudnessTap:
    """A cheap local "is anyone near the microphone": the capture time of the last frame louder than
    ``threshold_dbfs`` (RMS). A tap on the :class:`MicRouter`; the supervisor moves to a new session only
    when the room has been quiet for a while, so no utterance is split between two sessions. (The kiosk's
    speech detector is :class:`bridge.kiosk.vad.VoiceActivity`; this only measures level.)"""

    def __init__(self, threshold_dbfs: float = -45.0) -> None:
        self.threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self._threshold_sq = self.threshold * self.threshold
        self.last_loud = float("-inf")

    def __call__(self, pcm: np.ndarray, captured: float) -> None:
        # every frame, in the capture thread: one dot product (sum of squares), no mean/sqrt temporaries
        x = pcm.reshape(-1).astype(np.float32)
        if x.size and float(np.dot(x, x)) > self._threshold_sq * x.size:
            self.last_loud = captured

    def quiet_for(self, now: float) -> float:
        """Seconds since the last loud frame (infinite if there was none)."""
        return now - self.last_loud


@contextlib.asynccontextmanager
async def routed(source: AudioSource, uplink: Uplink) -> AsyncIterator[MicRouter]:
    """``source`` feeding ``uplink`` for the duration of the block (tests and single-connection tools)."""
    router = MicRouter(source)
    try:
        await router.start()
        router.attach(uplink)
        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(router.run(), name="mic-router")
            try:
                yield router
            finally:
                pump.cancel()
    finally:
        await router.aclose()
