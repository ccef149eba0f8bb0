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
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bridge.config import PlayoutMode
from bridge.errors import ConnectError
from bridge.faults import Faults
from bridge.link import http as rest
from bridge.link.base import WEBRTC, CloseInfo, CloseReason, ConnectTimings, RealtimeLink
from bridge.media.paced import until_grid
from bridge.media.track import MicTrack
from bridge.rtc import fastpath, fec, opus
from bridge.rtc.receiver import AudioReceiver, PlayoutClock

log = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 10.0
EVENT_QUEUE_MAX = 10_000  # server events waiting for the runtime; overflow is a bug, logged and counted
COUNTERS_S = 0.5  # how often the short send path's RTCP counters reach aiortc (its reports: every 0.5-1.5 s)
SILENT_AFTER_S = 2.0
"""The server streams audio for as long as a call is up, silence included (PROTOCOL.md 2.3; the emulator
does too): this long without one RTP packet is a silent death (server gone, no FIN, ICE not failed yet)."""
WATCH_S = 0.25  # the silence watch's poll: noticed within SILENT_AFTER_S + 2 polls of the last packet


class WebRTCLink(RealtimeLink):
    traits = WEBRTC

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
        inband_fec: bool = True,
        playout_mode: PlayoutMode = "neteq",
    ) -> None:
        """``inband_fec``: the offer says we decode Opus in-band FEC (:func:`bridge.rtc.opus.declare_inband_fec`).
        ``playout_mode``: ``neteq``: the receiver reports arrivals to the playout it feeds and conceals a
        frame when the playout needs it (:meth:`feed_playout`); ``neteq-fec``: and waits for the next
        packet's FEC; ``steps``: neither (the receiver's own jitter buffer; A/B switches, BRIDGE_PLAYOUT)."""
        super().__init__()
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
        self.uplink_faults = Faults("uplink", log)
        """The microphone's send path: a fatal fault ends the connection (``uplink_failed``)."""
        self._fast_send: fastpath.FastSend | None = None
        self._sender: Any = None
        self.loss = fec.LossTracker()
        """The server's reports of our uplink's packet loss (what the encoder's FEC follows)."""
        self._rtp_receiver: Any = None
        self._fast_receive: fastpath.FastReceive | None = None
        self.dropped_events = 0
        self._closed = False
        self._inband_fec = inband_fec
        self._playout_mode: PlayoutMode = playout_mode
        self._playout: PlayoutClock | None = None

    async def connect(self) -> ConnectTimings:
        timings = ConnectTimings()
        pc = self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        dc = self._dc = pc.createDataChannel("oai-events")
        opened = asyncio.Event()
        dc.on("open", opened.set)
        dc.on("message", self._on_message)
        dc.on("close", self._on_dc_close)
        self._mic.hold()  # until both ends' DTLS is up, which the open data channel proves (SCTP runs over it)
        sender = self._sender = pc.addTrack(self._mic)
        if self.fast_stats is not None:
            try:
                fastpath.check_seam()
                fast_send = fastpath.FastSend(
                    sender, self._mic, self.fast_stats, self.uplink_faults, capture_thread=self._uplink_thread
                )
                fast_send.install()
                self._fast_send = fast_send
            except fastpath.FastPathUnavailable as exc:
                log.warning("short RTP paths unavailable (%s); using aiortc's", exc)
                self.fast_stats = None
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)

        await pc.setLocalDescription(await pc.createOffer())
        timings.mark("offer")
        offer = pc.localDescription.sdp
        if self._inband_fec:
            offer = opus.declare_inband_fec(offer)
        answer, self.call_id = await rest.post_sdp(self._http, self._calls_url, self._key, offer)
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

    def feed_playout(self, playout: PlayoutClock) -> None:
        if self._playout_mode == "steps" or self._playout is not None:
            return
        self._playout = playout
        if self.receiver is not None:
            self.receiver.follow(playout, fec_wait=self._playout_mode == "neteq-fec")

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
                if self._playout is not None:
                    self.receiver.follow(self._playout, fec_wait=self._playout_mode == "neteq-fec")
                self._rtp_receiver = transceiver.receiver
                log.info("remote audio attached to the low-latency receive path")

    def _on_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        log.info("peer connection %s", state)
        if state == "failed":
            self._end(CloseInfo(CloseReason.NETWORK, "ICE failed"))
        elif state == "closed":
            self._end(CloseInfo(CloseReason.SERVER_CLOSED, "peer connection closed"))

    def _on_dc_close(self) -> None:
        self._end(CloseInfo(CloseReason.SERVER_CLOSED, "data channel closed"))

    def _end(self, info: CloseInfo) -> None:
        self.closed_because(info)
        self._put(None)

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            self.malformed.record(message=f"a data-channel message that is not JSON ({len(message)} bytes)")
            return
        if isinstance(event, dict):
            self._put(event)
        else:
            self.malformed.record(
                message=f"a data-channel message that is JSON but not an object ({type(event).__name__})"
            )

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
        fec_pct = self._encoder.loss_perc if self._encoder is not None else None
        return {"reports": self.loss.reports, "smoothed_pct": smoothed, "fec_pct": fec_pct}

    @property
    def _encoder(self) -> fec.LossSetting | None:
        return self._mic.encoder

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.receiver is not None:
            st = self.receiver.stats
            out["receiver"] = {
                "frames_out": st.frames_out,
                "concealed": st.concealed,
                "late_dropped": st.late_dropped,
                "duplicates": st.duplicates,
                "reordered": st.reordered,
                "wait_ms": round(self.receiver.wait_ms, 1),
                "fec_frames": st.fec_frames,
                "covered": st.window.covered,
                "covered_late": st.window.covered_late,
                "covered_lost": st.window.covered_lost,
            }
        if self.fast_stats is not None:
            out["fast_rtp"] = dataclasses.asdict(self.fast_stats)
        out["uplink_loss"] = self.uplink_loss()
        out["uplink_errors"] = self.uplink_faults.count
        out["malformed_messages"] = self.malformed.count
        if self.dropped_events:
            out["dropped_events"] = self.dropped_events
        return out

    async def run_media(self) -> None:
        """aiortc's sender pulls the mic track, so there is nothing to pump. For as long as the connection
        lives: keep the uplink's Opus FEC at the loss the server reports (:mod:`bridge.rtc.fec`), bring the
        short send path's RTCP counters to aiortc, and end the connection if the uplink dies."""
        async with asyncio.TaskGroup() as tg:
            encoder = self._encoder
            if self._sender is not None and encoder is not None:
                tg.create_task(fec.follow_reported_loss(self._sender, encoder, self.loss), name="fec")
            if self._fast_send is not None:
                tg.create_task(self._publish_counters(self._fast_send), name="rtcp-counters")
            tg.create_task(self._watch_uplink(), name="uplink-watch")
            tg.create_task(self._watch_downlink(), name="downlink-watch")

    async def _publish_counters(self, fast_send: fastpath.FastSend) -> None:
        while True:
            await asyncio.sleep(until_grid(COUNTERS_S))
            fast_send.publish_counters()

    async def _watch_downlink(self) -> None:
        """End the connection (``silent``) when no RTP has arrived for :data:`SILENT_AFTER_S`."""
        loop = asyncio.get_running_loop()
        last, since = -1, loop.time()
        while True:
            await asyncio.sleep(until_grid(WATCH_S))
            received = self.receiver.stats.window.received if self.receiver is not None else 0
            now = loop.time()
            if received != last:
                last, since = received, now
            elif now - since >= SILENT_AFTER_S:
                log.warning("no audio from the server for %.1f s: the connection is dead", now - since)
                self._end(CloseInfo(CloseReason.SILENT, f"no audio from the server for {now - since:.1f} s"))
                return

    async def _watch_uplink(self) -> None:
        exc = await self.uplink_faults.wait_fatal()
        log.error("the microphone uplink failed: %s", exc)
        self._end(CloseInfo(CloseReason.UPLINK_FAILED, f"{type(exc).__name__}: {exc}"))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.closed_because(CloseInfo(CloseReason.HANGUP))
        if self.call_id:
            await rest.hangup(self._http, self._api_base, self.call_id, self._hangup_key)
        if self._fast_receive is not None:
            self._fast_receive.uninstall()
        if self.receiver is not None:
            self.receiver.close()
        if self._pc is not None:
            await self._pc.close()
        self._put(None)
