"""Opening a connection for a call: a fresh key, a link of the call's transport, the microphone attached.

:class:`Connector` is the one place that knows how a call reaches the model (credentials, transport,
the short RTP paths setting). Each :meth:`Connector.open` mints a new ephemeral key (through the token
server when there is one: an old key may have expired, or be unknown to a restarted server), builds a
link and its :class:`bridge.call.runtime.Runtime`, connects (every step timed), and attaches the link's
uplink to the station's microphone, whose first frame on this connection becomes the origin of the
server's input timeline once the supervisor activates the connection (``Call.activate``).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from bridge.call.bargein import BargeInMode
from bridge.call.connection import Connection
from bridge.call.record import CallRecord
from bridge.call.reply_audio import ReplyAudio
from bridge.call.runtime import FunctionCallHandler, Runtime
from bridge.call.station import Station
from bridge.config import Credentials, FastRtp, PlayoutMode, RunConfig
from bridge.link import http as rest
from bridge.link.base import RealtimeLink, Transport
from bridge.link.webrtc import WebRTCLink
from bridge.link.ws import WebSocketLink
from bridge.media.track import MicTrack
from bridge.media.uplink import Uplink
from bridge.rtc.opus import LibopusEncoder

log = logging.getLogger(__name__)


class Connector:
    """Opens :class:`Connection`\\ s to the model for calls on one station (see module docstring)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        credentials: Credentials,
        station: Station,
        *,
        transport: Transport = "webrtc",
        fast_rtp: FastRtp = "on",
        bargein: BargeInMode = "exact",
        playout: PlayoutMode = "neteq",
        opus_fec: bool = True,
    ) -> None:
        """``fast_rtp``, ``playout`` and ``opus_fec``: WebRTC switches (:class:`bridge.config.RunConfig`)."""
        self.http = http
        self.credentials = credentials
        self.station = station
        self.transport: Transport = transport
        self.fast_rtp: FastRtp = fast_rtp
        self.bargein: BargeInMode = bargein
        self.playout: PlayoutMode = playout
        self.opus_fec = opus_fec

    @classmethod
    def for_run(
        cls, http: aiohttp.ClientSession, credentials: Credentials, station: Station, cfg: RunConfig
    ) -> Connector:
        """As ``bridge run`` (and its kiosk) are configured."""
        return cls(
            http,
            credentials,
            station,
            transport=cfg.transport,
            fast_rtp=cfg.fast_rtp,
            bargein=cfg.bargein,
            playout=cfg.playout,
            opus_fec=cfg.opus_fec,
        )

    async def open(
        self, session_config: dict[str, Any], record: CallRecord, tools: FunctionCallHandler | None = None
    ) -> Connection:
        """A connected :class:`Connection` whose runtime writes into ``record``; raises a
        :class:`bridge.errors.BridgeError` (one clear line) when it cannot connect."""
        reply = ReplyAudio(self.station.playout, record)
        link, uplink = await self._link(session_config, reply)
        runtime = Runtime(link, reply, record, tools=tools, bargein_mode=self.bargein)
        uplink.on_first_frame = runtime.on_mic_frame_sent
        try:
            timings = await link.connect()
            log.info("connected in %.0f ms: %s", timings.total_ms, timings.steps)
            if self.transport == "ws" and not self.credentials.token_url:
                # a minted key carries the session; an API key needs it sent (the model is in the URL)
                config = {k: v for k, v in session_config.items() if k != "model"}
                await link.send({"type": "session.update", "session": config})
            await self.station.start_mic()
        except BaseException:
            await link.aclose()
            raise
        runtime.info.update(connect_ms=timings.steps, **self.station.describe())
        return Connection(link, runtime, uplink, self.station.mic)

    async def _link(self, session_config: dict[str, Any], reply: ReplyAudio) -> tuple[RealtimeLink, Uplink]:
        creds = self.credentials
        if self.transport == "ws":
            if creds.token_url or not creds.api_key:
                key = (await rest.mint_key(self.http, creds, session_config)).value
            else:
                key = creds.api_key
            ws = WebSocketLink(self.http, creds.api_base, session_config["model"], key)
            return ws, ws.uplink
        ek = await rest.mint_key(self.http, creds, session_config)
        mic = MicTrack(
            capture_thread=self.fast_rtp == "on" and self.station.source.has_capture_thread,
            encoder=LibopusEncoder(),
        )
        link = WebRTCLink(
            self.http,
            creds.api_base,
            ek.value,
            mic,
            reply.on_media,
            calls_url=ek.calls_url,
            hangup_key=creds.api_key or ek.value,
            fast_rtp=self.fast_rtp != "off",
            uplink_thread=self.fast_rtp == "on",
            inband_fec=self.opus_fec,
            playout_mode=self.playout,
        )
        return link, mic
