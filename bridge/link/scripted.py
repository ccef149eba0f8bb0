"""A scripted link for logic tests (openai-agents-python ``realtime/testing.py`` style): no sockets.

The test ``emit``s server events; everything the runtime sends is recorded in ``sent``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.link.base import WEBRTC, WS, ConnectTimings, LinkTraits, RealtimeLink, Transport


class ScriptedLink(RealtimeLink):
    """Behaves like a link of ``transport`` (its :class:`LinkTraits`), or of any ``traits`` given."""

    def __init__(self, transport: Transport = "ws", *, traits: LinkTraits | None = None) -> None:
        super().__init__()
        self.traits = traits or (WEBRTC if transport == "webrtc" else WS)
        self.sent: list[dict[str, Any]] = []
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(10_000)
        self.closed = False

    async def connect(self) -> ConnectTimings:
        return ConnectTimings()

    def emit(self, event: dict[str, Any]) -> None:
        self._events.put_nowait(event)

    def end(self) -> None:
        self._events.put_nowait(None)

    async def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)

    async def recv(self) -> dict[str, Any] | None:
        return await self._events.get()

    def sent_types(self) -> list[str]:
        return [e["type"] for e in self.sent]

    async def aclose(self) -> None:
        self.closed = True
        self.end()
