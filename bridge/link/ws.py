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

from bridge.errors import AuthError, ConnectError, ProtocolError, QuotaError, ServiceError
from bridge.link.base import WS, CloseInfo, CloseReason, ConnectTimings, LinkTraits, RealtimeLink
from bridge.link.http import client_error
from bridge.media.base import RATE
from bridge.media.uplink import FrameQueue, Uplink
from bridge.protocol import pcm

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
HEARTBEAT_S = 1.6
"""After this long with nothing from the server we ping it, and a pong must come within half of it: a
silent death (server gone, no FIN) is noticed within 2.4 s of the last message (aiohttp's ``heartbeat``;
at 2.0 s a 100 ms path put the 95th percentile at 3.04 s, over the 3 s target: docs/benchmarks.md)."""
AUTH_CLOSE_CODES = {3000}
REJECT_CLOSE_CODES = {4000}
ABNORMAL_CLOSE = 1006  # no close frame: the connection itself went away
UPLINK_QUEUE_FRAMES = 10  # 200 ms: what may wait for the socket before the oldest frame goes (counted)


def close_reason(code: int | None) -> CloseReason:
    """A WebSocket close code as a typed reason (PROTOCOL.md 3, 6)."""
    if code in AUTH_CLOSE_CODES:
        return CloseReason.AUTH
    if code in REJECT_CLOSE_CODES:
        return CloseReason.REJECTED
    if code == ABNORMAL_CLOSE:
        return CloseReason.NETWORK
    return CloseReason.SERVER_CLOSED


def ws_url(api_base: str, model: str) -> str:
    base = api_base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/realtime?model={model}"


def upgrade_error(exc: aiohttp.WSServerHandshakeError, what: str) -> Exception:
    """An HTTP status instead of the upgrade: a rejected key, a busy or failing service, or a refusal."""
    line = f"{what} refused (HTTP {exc.status})"
    if exc.status in (401, 403):
        return AuthError(line)
    if exc.status == 429 or exc.status >= 500:
        return ServiceError(line)
    return ProtocolError(line)


def append_event(frame48: np.ndarray) -> dict[str, Any]:
    """One 20 ms 48 kHz mono int16 mic frame as ``input_audio_buffer.append`` (24 kHz PCM16, base64)."""
    return {
        "type": "input_audio_buffer.append",
        "audio": pcm.b64encode(pcm.downsample_48k_to_24k(frame48).tobytes()),
    }


class EventSocket(RealtimeLink):
    """One aiohttp WebSocket carrying JSON events both ways (PROTOCOL.md 3): the WS link and the sideband."""

    def __init__(self, http: aiohttp.ClientSession, url: str, key: str) -> None:
        super().__init__()
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
                self._ws = await self._http.ws_connect(
                    self._url, headers=headers, max_msg_size=0, autoping=True, heartbeat=HEARTBEAT_S
                )
        except aiohttp.WSServerHandshakeError as exc:  # an HTTP answer instead of 101: the service refused
            raise upgrade_error(exc, what) from exc
        except aiohttp.ClientError as exc:
            raise client_error(exc, self._url) from exc
        except TimeoutError as exc:
            raise ConnectError(f"{what} did not open within {CONNECT_TIMEOUT_S:.0f} s") from exc

    async def send(self, event: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectError("WebSocket is closed")
        try:
            await self._ws.send_str(json.dumps(event))
        except (aiohttp.ClientError, ConnectionError) as exc:  # the transport went away under us
            raise ConnectError(f"WebSocket send failed: {exc}") from exc

    async def recv(self) -> dict[str, Any] | None:
        assert self._ws is not None
        while True:
            msg = await self._ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(msg.data)
                except (json.JSONDecodeError, RecursionError):
                    self.malformed.record(message=f"a text frame that is not JSON ({len(msg.data)} bytes)")
                    continue
                if isinstance(event, dict):
                    return event
                self.malformed.record(message=f"a text frame that is JSON but not an object ({type(event).__name__})")
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:  # the service only sends text (PROTOCOL.md 3)
                self.malformed.record(message=f"a binary frame ({len(msg.data)} bytes)")
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                self.close_code = self._ws.close_code
                self.close_reason = str(msg.extra or "")
                self.closed_because(CloseInfo(close_reason(self.close_code), self.close_reason, self.close_code))
                return None
            if msg.type == aiohttp.WSMsgType.ERROR:
                exc = self._ws.exception()
                log.warning("WebSocket error: %s", exc)
                self.close_code = self._ws.close_code
                silent = isinstance(exc, aiohttp.ServerTimeoutError)  # the heartbeat's pong never came
                reason = CloseReason.SILENT if silent else CloseReason.NETWORK
                self.closed_because(CloseInfo(reason, str(exc or "read error")))
                return None

    async def aclose(self) -> None:
        self.closed_because(CloseInfo(CloseReason.HANGUP))
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()


class WsUplink(Uplink):
    """The microphone over WebSocket: frames wait (bounded, drop-oldest) for :meth:`WebSocketLink.run_media`
    to send them as ``input_audio_buffer.append``. Paused (push-to-talk between turns): nothing is sent."""

    def __init__(self, max_frames: int = UPLINK_QUEUE_FRAMES) -> None:
        self.queue: FrameQueue[float] = FrameQueue(max_frames)
        self.paused = False
        self.paused_dropped = 0
        self._first = True

    @property
    def takes_bursts(self) -> bool:
        return True  # the server timestamps input by sample count, not arrival (PROTOCOL.md 3)

    def send_frame(self, pcm48: np.ndarray, captured: float) -> None:
        if self.paused:
            self.paused_dropped += 1
            return
        self.queue.put(pcm48, captured)

    def pause(self, paused: bool) -> None:
        self.paused = paused

    def sent(self, captured: float, samples: int) -> None:
        """Audio left (a frame, or a kiosk's held backlog in one piece): the first sample of the first one
        is the origin of the server's input timeline."""
        if self._first:
            self._first = False
            if self.on_first_frame is not None:
                self.on_first_frame(captured - samples / RATE)


class WebSocketLink(EventSocket):
    """The model over WebSocket: events plus the microphone as ``input_audio_buffer.append``."""

    traits: LinkTraits = WS

    def __init__(self, http: aiohttp.ClientSession, api_base: str, model: str, key: str) -> None:
        super().__init__(http, ws_url(api_base, model), key)
        self.uplink = WsUplink()
        self._first: dict[str, Any] | None = None
        self.sent_appends = 0

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
            code = err.get("code")
            if code in (None, "invalid_api_key") or self.close_code in AUTH_CLOSE_CODES:
                raise AuthError(f"WebSocket session rejected: {reason}")
            if code == "insufficient_quota":
                raise QuotaError(f"WebSocket session rejected: {reason}")
            if err.get("type") == "server_error" or code == "rate_limit_exceeded":
                raise ServiceError(f"WebSocket session rejected: {reason}")
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

    async def run_media(self) -> None:
        """Send the microphone as 20 ms appends until the socket closes."""
        queue = self.uplink.queue
        while self._ws is not None and not self._ws.closed:
            frame, captured = await queue.get()
            try:
                await self.send(append_event(frame))
            except ConnectError:
                return  # closed under us: recv() reports why
            self.uplink.sent(captured, len(frame))
            self.sent_appends += 1

    def stats(self) -> dict[str, Any]:
        return {
            "malformed_messages": self.malformed.count,
            "ws_appends": self.sent_appends,
            "ws_uplink_dropped": self.uplink.queue.dropped,
            "ws_uplink_paused": self.uplink.paused_dropped,
        }
