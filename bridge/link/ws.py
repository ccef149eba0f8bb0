"""WebSocket transport: events and base64 PCM16 (24 kHz mono) over one aiohttp WebSocket.

PROTOCOL.md 3: ``{base}/realtime?model=M`` with ``Authorization: Bearer``; the upgrade always answers 101,
a bad key arrives as an ``error`` event followed by close 3000; no message-size cap (``max_msg_size=0``);
aiohttp answers the server's pings (``autoping``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import numpy as np

from bridge.errors import AuthError, ConnectError, ProtocolError
from bridge.link.base import ConnectTimings, RealtimeLink
from bridge.link.http import client_error
from bridge.media.base import AudioSource
from bridge.protocol import pcm

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
AUTH_CLOSE_CODES = {3000}


def ws_url(api_base: str, model: str) -> str:
    base = api_base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/realtime?model={model}"


def append_event(frame48: np.ndarray) -> dict[str, Any]:
    """One 20 ms 48 kHz mono int16 mic frame as ``input_audio_buffer.append`` (24 kHz PCM16, base64)."""
    return {
        "type": "input_audio_buffer.append",
        "audio": pcm.b64encode(pcm.downsample_48k_to_24k(frame48).tobytes()),
    }


class EventSocket(RealtimeLink):
    """One aiohttp WebSocket carrying JSON events both ways (PROTOCOL.md 3): the WS link and the sideband."""

    def __init__(self, http: aiohttp.ClientSession, url: str, key: str) -> None:
        self._http = http
        self._url = url
        self._key = key
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""

    async def _open(self, what: str) -> None:
        """Upgrade (no message-size cap, pings answered); errors become one clear line."""
        headers = {"Authorization": f"Bearer {self._key}"}
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                self._ws = await self._http.ws_connect(self._url, headers=headers, max_msg_size=0, autoping=True)
        except aiohttp.ClientError as exc:
            raise client_error(exc, self._url) from exc
        except TimeoutError as exc:
            raise ConnectError(f"{what} did not open within {CONNECT_TIMEOUT_S:.0f} s") from exc

    async def send(self, event: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectError("WebSocket is closed")
        await self._ws.send_str(json.dumps(event))

    async def recv(self) -> dict[str, Any] | None:
        assert self._ws is not None
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("dropped a malformed server message (%d bytes)", len(msg.data))
                    continue
                if isinstance(event, dict):
                    return event
                log.warning("dropped a non-object server message")
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                self.close_code = self._ws.close_code
                self.close_reason = str(msg.extra or "")
                return None
            if msg.type == aiohttp.WSMsgType.ERROR:
                log.warning("WebSocket error: %s", self._ws.exception())
                self.close_code = self._ws.close_code
                return None

    async def aclose(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()


class WebSocketLink(EventSocket):
    """The model over WebSocket: events plus the microphone as ``input_audio_buffer.append``."""

    transport = "ws"

    def __init__(
        self, http: aiohttp.ClientSession, api_base: str, model: str, key: str, source: AudioSource | None
    ) -> None:
        super().__init__(http, ws_url(api_base, model), key)
        self._source = source
        self._first: dict[str, Any] | None = None
        self.sent_appends = 0
        self.uplink_paused = False  # push-to-talk: mic frames are read and dropped while paused

    async def connect(self) -> ConnectTimings:
        timings = ConnectTimings()
        await self._open("WebSocket session")
        timings.mark("ws_upgrade")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                first = await super().recv()
        except TimeoutError as exc:
            raise ConnectError(f"no session from {self._url.split('?')[0]} within {CONNECT_TIMEOUT_S:.0f} s") from exc
        assert self._ws is not None
        if first is not None and first.get("type") == "error":
            err = first.get("error") or {}
            reason = f"{err.get('code') or err.get('type')}: {err.get('message', '')}"
            await self._ws.close()
            if err.get("code") in (None, "invalid_api_key") or self.close_code in AUTH_CLOSE_CODES:
                raise AuthError(f"WebSocket session rejected: {reason}")
            raise ProtocolError(f"WebSocket session rejected: {reason}")
        if first is None:
            if self.close_code in AUTH_CLOSE_CODES:
                raise AuthError(f"WebSocket session rejected: {self.close_reason}")
            raise ConnectError(f"WebSocket closed before the session started ({self.close_code})")
        self._first = first
        timings.mark("session_created")
        return timings

    async def recv(self) -> dict[str, Any] | None:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await super().recv()

    async def pump_audio(self) -> None:
        """Send the microphone as 20 ms appends until the socket closes."""
        if self._source is None:
            return
        while self._ws is not None and not self._ws.closed:
            frame = await self._source.read()
            if self.uplink_paused:
                continue
            await self.send(append_event(frame))
            self.sent_appends += 1
