"""The server VAD's idle timeout (``turn_detection.idle_timeout_ms``, PROTOCOL.md 4.7).

"The timer starts after the last response's audio has finished playing"; when it fires the server sends
``input_audio_buffer.timeout_triggered``, commits the (empty) segment and generates a response [SPEC][BLOG].
The engine arms it when a reply has finished playing (WebRTC: the last frame went on the wire; WS: the
audio's real-time length after its first delta) and when a session update turns it on, and disarms it
when speech starts or a response begins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleTimer:
    """One pending idle timeout at most; ``fire(start_position_ms)`` runs when it expires."""

    def __init__(self, fire: Callable[[int], None]) -> None:
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def arm(self, timeout_ms: int | None, position_ms: int, delay_s: float = 0.0) -> None:
        """(Re)start: fire ``timeout_ms`` after ``delay_s`` (the rest of the reply's playback) from now."""
        self.disarm()
        if timeout_ms is None:
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(max(0.0, delay_s) + timeout_ms / 1000, self._expired, position_ms)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expired(self, position_ms: int) -> None:
        self._handle = None
        self._fire(position_ms)
