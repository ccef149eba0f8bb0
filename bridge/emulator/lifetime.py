"""How a session ends, or goes silent: the one object every transport watches (PROTOCOL.md 3, 6).

Three ways out, each a fault the real service shows:

- ``end(code, reason)``: a goodbye. WS: what was queued is flushed, then a close frame with ``code``
  (1001 after ``session_expired``, 3000/4000 after fatal errors, 1011 on a server fault). WebRTC: the data
  channel drains and closes, then the peer goes away (no close code exists there).
- ``end(code, reason, abrupt=True)``: a drop. WS: the TCP connection is reset, no close frame (the client
  sees 1006). WebRTC: the peer connection closes at once.
- ``stall()``: a silent death. Nothing more leaves the session (events, pings, RTP), client input is
  ignored, and nothing is closed; only the client's own timeout can notice.
"""

from __future__ import annotations

import asyncio


class Lifetime:
    def __init__(self) -> None:
        self._closed = asyncio.Event()
        self._stalled = asyncio.Event()
        self.code = 1000
        self.reason = ""
        self.abrupt = False

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def end(self, code: int, reason: str, *, abrupt: bool = False) -> bool:
        """Mark the session ended (the first call wins); returns False if it already was."""
        if self._closed.is_set():
            return False
        self.code, self.reason, self.abrupt = code, reason, abrupt
        self._closed.set()
        return True

    def stall(self) -> None:
        self._stalled.set()

    async def wait_closed(self) -> tuple[int, str]:
        await self._closed.wait()
        return self.code, self.reason

    async def wait_stalled(self) -> None:
        await self._stalled.wait()
