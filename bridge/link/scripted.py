"""A scripted link for logic tests (openai-agents-python ``realtime/testing.py`` style): no sockets.

The test ``emit``s server events; everything the runtime sends is recorded in ``sent``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.link.base import ConnectTimings, RealtimeLink


class ScriptedLink(RealtimeLink):
    def __init__(self, transport: str = "ws") -> None:
        self.transport = transport  # type: ignore[misc]  # instance override of the ClassVar for tests
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
