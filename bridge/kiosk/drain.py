"""The first connection of a kiosk call: the audio held while it connected goes first, then live audio.

:class:`DrainingUplink` sits between the station's microphone and the connection's uplink for as long as
the kiosk's :class:`bridge.kiosk.preroll.Backlog` is open. The microphone's taps have already put each new
frame into the backlog (``PreRoll.push``), so:

- an uplink that takes bursts (WebSocket appends) gets the whole backlog at once, as one chunk, when the
  connection becomes current; from then on frames pass straight through;
- a paced uplink (WebRTC) gets exactly one frame per captured frame, the backlog's
  :meth:`~bridge.kiosk.preroll.Backlog.next_paced` (silence away from speech is dropped there, so the lag
  shrinks during the visitor's pauses), until the backlog is empty; then live frames pass through.

Either way the backlog is closed (``PreRoll.stop_backlog``) the moment it is empty, in the thread that
delivers frames, so no frame is lost or sent twice.
"""

from __future__ import annotations

import logging

import numpy as np

from bridge.kiosk.preroll import Backlog, PreRoll
from bridge.media.uplink import Uplink

log = logging.getLogger(__name__)


class DrainingUplink(Uplink):
    """``inner``'s frames, the held backlog first (see module docstring)."""

    def __init__(self, inner: Uplink, preroll: PreRoll, backlog: Backlog) -> None:
        self.inner = inner
        self._preroll = preroll
        self._backlog = backlog
        self.live = False
        if inner.takes_bursts:
            self._burst()

    @property
    def thread_safe(self) -> bool:
        return self.inner.thread_safe

    @property
    def takes_bursts(self) -> bool:
        return self.inner.takes_bursts

    def _burst(self) -> None:
        """Everything held, at once (called on the loop before the router knows this uplink)."""
        self._preroll.stop_backlog()  # frames from now on are live: the router hands them to us
        frames = self._backlog.take_all()
        self.live = True
        if frames:
            pcm = np.concatenate([f.pcm for f in frames])
            log.info("sent %.2f s of held audio at once", len(frames) * 0.02)
            self.inner.send_frame(pcm, frames[-1].captured)

    def send_frame(self, pcm: np.ndarray, captured: float) -> None:
        if self.live:
            self.inner.send_frame(pcm, captured)
            return
        frame = self._backlog.next_paced()  # this live frame is already in the backlog (the taps ran first)
        if len(self._backlog) == 0:
            self._preroll.stop_backlog()
            self.live = True
            log.info(
                "held audio drained: %d frames sent, %d of silence dropped",
                self._backlog.sent,
                self._backlog.dropped_silence,
            )
        if frame is not None:
            self.inner.send_frame(frame.pcm, frame.captured)

    def pause(self, paused: bool) -> None:
        self.inner.pause(paused)
