"""The kiosk's ear: a tap on the station's microphone that runs the local voice detector on every frame,
keeps the pre-roll, and tells the event loop when someone starts talking.

It runs where the frames arrive (PortAudio's capture thread for a sound card), before the frame goes to a
connection, and does little: one VAD score (~0.1 ms, docs/kiosk.md), one copy into the pre-roll ring, and
a hop to the loop only for an onset or offset.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from bridge.kiosk.health import KioskStatus
from bridge.kiosk.preroll import PreRoll
from bridge.kiosk.vad import VadEvent, VoiceActivity
from bridge.kiosk.wakeword import WakeWordDetector

log = logging.getLogger(__name__)

EVENTS_MAX = 64


class Listener:
    """``listener(pcm, captured)`` for :meth:`bridge.media.mic.MicRouter.add_tap` (see module docstring).
    With a wake word, the phrase is the onset (its speech started where the VAD heard it start)."""

    def __init__(
        self,
        vad: VoiceActivity,
        preroll: PreRoll,
        status: KioskStatus,
        loop: asyncio.AbstractEventLoop,
        *,
        wake_word: WakeWordDetector | None = None,
    ) -> None:
        self.vad = vad
        self.preroll = preroll
        self.status = status
        self.events: asyncio.Queue[VadEvent] = asyncio.Queue(EVENTS_MAX)
        self.last_speech = float("-inf")
        """Capture time of the last frame the VAD called speech."""
        self.dropped_events = 0
        self._loop = loop
        self._wake_word = wake_word
        self._speech_from: float | None = None
        self._release = vad.gate.settings.release

    def __call__(self, pcm: np.ndarray, captured: float) -> None:
        verdict = self.vad.feed(pcm, captured)
        self.status.mic_alive(captured)
        if verdict.speech:
            self.last_speech = captured
        self.preroll.push(pcm, captured, verdict.probability >= self._release)
        event = verdict.event
        if event is not None and event.kind == "onset":
            self._speech_from = event.speech_from
        if self._wake_word is not None:
            if not self._wake_word.feed(pcm):
                return
            start = self._speech_from if self.vad.speaking and self._speech_from is not None else captured - 1.0
            event = VadEvent("onset", captured, start)  # the phrase, from where its speech began
        if event is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:  # the loop has closed (shutting down)
            pass

    def _put(self, event: VadEvent) -> None:
        try:
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1

    def quiet_for(self, now: float) -> float:
        """Seconds since the VAD last heard speech."""
        return now - self.last_speech

    def reset(self) -> None:
        """A new stream (a reopened device)."""
        self.vad.reset()
        self.last_speech = float("-inf")
