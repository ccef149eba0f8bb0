"""WebRTC transport: an aiortc peer with the ``oai-events`` data channel and one audio track each way.

Connection (PROTOCOL.md 2.1, 2.3): ephemeral key -> ``RTCPeerConnection(iceServers=[])`` -> data channel
``oai-events`` and the mic track BEFORE the offer -> ``POST /realtime/calls`` (``application/sdp``) -> call id
from ``Location`` -> answer applied -> wait for the data channel to open. Every step is timed.

Downlink audio bypasses aiortc's jitter buffer and decoder thread: :class:`bridge.rtc.AudioReceiver`
hands 20 ms frames straight to ``on_audio`` (the session's playout). Once DTLS is up, RTP in both
directions takes the short paths of :mod:`bridge.rtc.fastpath` (``fast_rtp=False``, or
``BRIDGE_FAST_RTP=0``, keeps aiortc's own; ``uplink_thread=False``, or ``BRIDGE_FAST_RTP=loop``, sends
from the event loop even when the microphone has a capture thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bridge.errors import ConnectError
from bridge.link import http as rest
from bridge.link.base import ConnectTimings, RealtimeLink
from bridge.media.track import MicTrack
from bridge.rtc import fastpath, fec
from bridge.rtc.receiver import AudioReceiver

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
EVENT_QUEUE_MAX = 10_000  # server events waiting for the runtime; overflow is a bug, logged and counted


class WebRTCLink(RealtimeLink):
    transport = "webrtc"

    def __init__(
        self,
        http: aiohttp.ClientSession,
        api_base: str,
        key: str,
        mic: MicTrack,
        on_audio: Callable[[np.ndarray], None],
        *,
        calls_url: str | None = None,
        hangup_key: str | None = None,
        fast_rtp: bool = True,
        uplink_thread: bool = True,
    ) -> None:
        self._http = http
        self._api_base = api_base
        self._calls_url = calls_url or f"{api_base}/realtime/calls"
        self._key = key
        self._hangup_key = hangup_key or key
        self._mic = mic
        self._on_audio = on_audio
        self._pc: RTCPeerConnection | None = None
        self._dc: Any = None
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_QUEUE_MAX)
        self.receiver: AudioReceiver | None = None
        self.fast_stats: fastpath.FastStats | None = fastpath.FastStats() if fast_rtp else None
        self._uplink_thread = uplink_thread
        self._sender: Any = None
        self.loss = fec.LossTracker()
        """The server's reports of our uplink's packet loss (what the encoder's FEC follows)."""
        self._rtp_receiver: Any = None
        self._fast_receive: fastpath.FastReceive | None = None
        self.dropped_events = 0
        self._closed = False

    async def connect(self) -> ConnectTimings:
        timings = ConnectTimings()
        pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        dc = self._dc = pc.createDataChannel("oai-events")
        opened = asyncio.Event()
        dc.on("open", opened.set)
        dc.on("message", self._on_message)
        dc.on("close", lambda: self._put(None))
        self._mic.hold()  # until both ends' DTLS is up, which the open data channel proves (SCTP runs over it)
        sender = self._sender = pc.addTrack(self._mic)
        if self.fast_stats is not None:
            try:
                fastpath.check_seam()
                fastpath.FastSend(sender, self._mic, self.fast_stats, capture_thread=self._uplink_thread).install()
            except fastpath.FastPathUnavailable as exc:
                log.warning("short RTP paths unavailable (%s); using aiortc's", exc)
                self.fast_stats = None
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)

        await pc.setLocalDescription(await pc.createOffer())
        timings.mark("offer")
        answer, self.call_id = await rest.post_sdp(self._http, self._calls_url, self._key, pc.localDescription.sdp)
        timings.mark("sdp_exchange")
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        timings.mark("answer_applied")
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await opened.wait()
        except TimeoutError as exc:
            raise ConnectError(
                f"ICE/data channel did not open within {OPEN_TIMEOUT_S:.0f} s (ICE state {pc.iceConnectionState})"
            ) from exc
        timings.mark("datachannel_open")
        self._mic.release()
        self._install_fast_receive()
        return timings

    def _install_fast_receive(self) -> None:
        """DTLS is connected once the data channel is open: route incoming SRTP audio the short way."""
        if self.fast_stats is None or self.receiver is None or self._rtp_receiver is None:
            return
        fast = fastpath.FastReceive(self._rtp_receiver, self.receiver, self.fast_stats)
        try:
            fast.install()
        except fastpath.FastPathUnavailable as exc:
            log.warning("short RTP receive path unavailable (%s); using aiortc's", exc)
            return
        self._fast_receive = fast
        log.info("RTP audio on the short paths (bridge.rtc.fastpath)")

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio" or self.receiver is not None or self._pc is None:
            return
        for transceiver in self._pc.getTransceivers():
            if transceiver.receiver.track is track:
                self.receiver = AudioReceiver(self._on_audio)
                self.receiver.attach(transceiver.receiver)
                self._rtp_receiver = transceiver.receiver
                log.info("remote audio attached to the low-latency receive path")

    def _on_state(self) -> None:
        assert self._pc is not None
        log.info("peer connection %s", self._pc.connectionState)
        if self._pc.connectionState in ("failed", "closed"):
            self._put(None)

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("dropped a malformed data-channel message (%d bytes)", len(message))
            return
        if isinstance(event, dict):
            self._put(event)

    def _put(self, event: dict[str, Any] | None) -> None:
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1
            log.error("server event queue full: dropped %s", (event or {}).get("type"))

    async def send(self, event: dict[str, Any]) -> None:
        if self._dc is None or self._dc.readyState != "open":
            raise ConnectError("data channel is not open")
        self._dc.send(json.dumps(event))

    async def recv(self) -> dict[str, Any] | None:
        if self._closed and self._events.empty():
            return None
        return await self._events.get()

    def uplink_loss(self) -> dict[str, Any]:
        """The server's reports of our packet loss, and the loss the encoder's FEC is set for now."""
        smoothed = None if self.loss.smoothed is None else round(self.loss.smoothed, 2)
        fec_pct = getattr(getattr(self._mic, "encoder", None), "loss_perc", None)
        return {"reports": self.loss.reports, "smoothed_pct": smoothed, "fec_pct": fec_pct}

    async def pump_audio(self) -> None:
        """aiortc's sender pulls the mic track, so there is nothing to pump: this keeps the uplink's Opus FEC
        at the loss the server reports (:mod:`bridge.rtc.fec`) until cancelled."""
        encoder = getattr(self._mic, "encoder", None)
        if self._sender is None or not hasattr(encoder, "expect_loss"):
            await asyncio.Event().wait()
        await fec.follow_reported_loss(self._sender, encoder, self.loss)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.call_id:
            await rest.hangup(self._http, self._api_base, self.call_id, self._hangup_key)
        if self._fast_receive is not None:
            self._fast_receive.uninstall()
        if self.receiver is not None:
            self.receiver.close()
        if self._pc is not None:
            await self._pc.close()
        self._put(None)
