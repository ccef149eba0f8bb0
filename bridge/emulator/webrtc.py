"""The emulator's WebRTC answerer: one :class:`RtcCall` per ``POST /v1/realtime/calls``.

Wiring (PROTOCOL.md 2.3; docs/architecture.md "Emulator engine"):

- data channel ``oai-events`` (created by the client): every engine server event goes out as one JSON
  text message; every client message goes, in order, to ``engine.handle_client_event``;
- the client's audio goes through :class:`bridge.rtc.receiver.AudioReceiver` (not aiortc's 80 ms jitter
  buffer: the emulator must not hide the client's own receive latency), is resampled to PCM16 24 kHz and
  fed to ``engine.feed_input_audio``;
- reply audio: :class:`ReplyOut` implements the engine's ``AudioOut``. The engine writes PCM24 as fast
  as it generates it; ReplyOut upsamples to 48 kHz and holds it until a :class:`PacedAudioTrack` pulls
  it, one 20 ms frame per monotonic deadline, so "sent" means "handed to the RTP sender", and
  ``interrupt()`` can report exactly the ms of the item that went on the wire (the server truncates at
  what it SENT, PROTOCOL.md 2.3 "Truncation over WebRTC/SIP is automatic");
- ``echo`` behaviour: each received 20 ms frame is queued to the output track in live mode and goes
  back out as it arrives (the mouth-to-ear test path; ``bridge.rtc.tracks``, live mode);
- Opus in-band FEC on the reply audio, as a libwebrtc sender codes it: only for a client whose offer
  declares it can decode it (``a=fmtp:<opus pt> useinbandfec=1``, RFC 7587 section 6.1; browsers
  declare it) and at the packet loss that client's RTCP receiver reports say (libwebrtc's Opus encoder
  sets its FEC from the reported uplink loss: ``audio_encoder_opus.cc``). The track then encodes with
  :class:`bridge.rtc.opus.LibopusEncoder` (mono, VoIP, 48 kbit/s) and :func:`bridge.rtc.fec.follow_reported_loss`
  keeps its FEC at the smoothed reported loss (none below 1 %); a client that declares nothing gets
  aiortc's own encoder and no FEC.
- between replies the track sends silence: one 20 ms Opus frame every 20 ms for as long as the call is
  up, as the real server does (docs/protocol-notes.md "Continuous RTP"); a client's silent-death detector
  relies on it. A stalled session (:mod:`bridge.emulator.lifetime`) sends no RTP at all.

The call ends on hangup (:meth:`RtcCall.aclose`), when the peer connection fails or closes, or when the
session ends (the maximum session length, a fault). A goodbye (``session_expired``, ``close``) lets the data
channel drain what the session said last, closes the channel, then the peer goes away (PROTOCOL.md 6); a
drop closes the peer at once. Every path closes both the peer and the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdatachannel import RTCDataChannel

from bridge.emulator.config import EmulatorConfig
from bridge.emulator.engine import Engine
from bridge.emulator.lifetime import Lifetime
from bridge.protocol import ids
from bridge.protocol.pcm import downsample_48k_to_24k, upsample_24k_to_48k
from bridge.rtc import fec
from bridge.rtc.loopback import loopback_candidates
from bridge.rtc.opus import LibopusEncoder
from bridge.rtc.receiver import AudioReceiver, receiver_for_track
from bridge.rtc.tracks import FRAME_SAMPLES, PacedAudioTrack

log = logging.getLogger(__name__)

DATA_CHANNEL = "oai-events"
CLIENT_QUEUE_MAX = 1000  # client events waiting for the engine (the engine is fast; this is a safety net)
MAX_REPLY_SECONDS = 600  # reply audio held for the wire; beyond it the newest audio is dropped and counted
SAMPLES_PER_MS = 48
DRAIN_S = 1.0  # a goodbye waits at most this long for the data channel to send what is queued


class ReplyOut:
    """The engine's ``AudioOut`` over WebRTC, and the pull source of the outgoing track.

    Runs entirely on the event loop: ``write`` appends, :meth:`pull` (called by the track at each 20 ms
    deadline) takes one frame and reports ``on_output_started`` / ``on_output_stopped``.
    """

    def __init__(self, engine: Engine, *, max_seconds: float = MAX_REPLY_SECONDS) -> None:
        self._engine = engine
        self._max_samples = int(max_seconds * 48_000)
        self._pcm = np.zeros(0, dtype=np.int16)
        self._response_id: str | None = None
        self._item_id: str | None = None
        self._sent = 0  # samples of the current item handed to the wire
        self._started = False
        self._ended = False
        self._stop_due: str | None = None  # response whose last frame went out at the previous deadline
        self.dropped_samples = 0

    @property
    def response_id(self) -> str | None:
        return self._response_id

    @property
    def sent_ms(self) -> int:
        return self._sent // SAMPLES_PER_MS

    def begin(self, response_id: str, item_id: str) -> None:
        self._finish_current()
        self._response_id, self._item_id = response_id, item_id
        self._pcm = np.zeros(0, dtype=np.int16)
        self._sent, self._started, self._ended = 0, False, False

    def write(self, pcm24: bytes) -> None:
        if self._response_id is None or not pcm24:
            return
        pcm48 = upsample_24k_to_48k(np.frombuffer(pcm24, dtype=np.int16))
        room = self._max_samples - len(self._pcm)
        if len(pcm48) > room:
            self.dropped_samples += len(pcm48) - max(room, 0)
            pcm48 = pcm48[: max(room, 0)]
        self._pcm = np.concatenate([self._pcm, pcm48])

    def end(self) -> None:
        self._ended = True

    def interrupt(self) -> int:
        """Stop now: drop what has not been sent; returns the ms of the item that went on the wire."""
        sent = self.sent_ms
        self._pcm = np.zeros(0, dtype=np.int16)
        self._response_id = self._item_id = None
        self._started = self._ended = False
        self._stop_due = None
        return sent

    def _finish_current(self) -> None:
        """A new item begins before the previous one drained: report the old one stopped."""
        if self._stop_due is not None:
            self._engine.on_output_stopped(self._stop_due)
            self._stop_due = None
        if self._response_id is not None and self._started:
            self._engine.on_output_stopped(self._response_id)

    def pull(self) -> np.ndarray | None:
        """The next 20 ms of reply audio for the wire, or None (the track sends silence)."""
        if self._stop_due is not None:
            # The last frame's 20 ms have now been on the wire: the buffer is drained.
            stopped, self._stop_due = self._stop_due, None
            self._engine.on_output_stopped(stopped)
        rid = self._response_id
        if rid is None:
            return None
        n = len(self._pcm)
        if n < FRAME_SAMPLES and not (self._ended and n > 0):
            if self._ended and n == 0 and self._started:
                self._stop_due = rid
                self._response_id = self._item_id = None
            return None  # underrun or nothing yet: silence, keep waiting
        frame, self._pcm = self._pcm[:FRAME_SAMPLES], self._pcm[FRAME_SAMPLES:]
        self._sent += len(frame)
        if not self._started:
            self._started = True
            self._engine.on_output_started(rid)
        if self._ended and len(self._pcm) == 0:
            self._stop_due = rid
            self._response_id = self._item_id = None
        return frame


class ServerTrack(PacedAudioTrack):
    """The server's outgoing audio: paced frames (silence between replies); nothing while stalled."""

    def __init__(self, pull: Any, lifetime: Lifetime, *, live: bool) -> None:
        super().__init__(pull, live=live)
        self._lifetime = lifetime

    async def recv(self) -> Any:
        if self._lifetime.stalled:
            await self._lifetime.wait_closed()  # a silent death: no RTP until the session is torn down
            raise MediaStreamError
        return await super().recv()


class RtcCall:
    """One WebRTC call: the peer connection, its data channel and audio, bound to one engine."""

    def __init__(self, engine: Engine, config: EmulatorConfig) -> None:
        self.id = ids.rtc_call_id()
        self.engine = engine
        engine.call_id = self.id
        self.config = config
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.echo = engine.behaviour.echoes_input
        self.out = ReplyOut(engine)
        self.track = ServerTrack(self.out.pull, engine.lifetime, live=self.echo)
        self.receiver = AudioReceiver(self._on_audio)
        self.channel: RTCDataChannel | None = None
        self.client_events_dropped = 0
        self.fec_loss = fec.LossTracker()  # the client's reports of our reply audio's loss
        self._client_q: asyncio.Queue[str] = asyncio.Queue(maxsize=CLIENT_QUEUE_MAX)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Future[None] | None = None
        self._closed = asyncio.Event()

    # ---- setup --------------------------------------------------------------------------------------

    async def _answer(self, offer_sdp: str) -> str:
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        sender = pc.addTrack(self.track)
        if declares_inband_fec(offer_sdp):  # code FEC at the loss the client reports, as libwebrtc does
            encoder = self.track.encoder = LibopusEncoder(fec=True, loss_perc=0)
            self._spawn(fec.follow_reported_loss(sender, encoder, self.fec_loss), "reply fec")
        answer = await pc.createAnswer()
        with self._ice_scope():
            await pc.setLocalDescription(answer)  # aiortc gathers candidates here
        self.engine.attach_audio_out(self.out)
        self._spawn(self._pump_client_events(), "client events")
        self._spawn(self._watch_engine(), "engine watch")
        return pc.localDescription.sdp

    def _ice_scope(self) -> contextlib.AbstractContextManager[None]:
        return loopback_candidates() if self.config.loopback_ice else contextlib.nullcontext()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.id} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- events -------------------------------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL or self.channel is not None:
            log.debug("call %s: ignoring data channel %r", self.id, channel.label)
            return
        self.channel = channel
        channel.on("message", self._on_message)
        self.engine.add_listener(self._send_event)  # flushes session.created first

    def _send_event(self, event: dict[str, Any]) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(event))

    def _on_message(self, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        try:
            self._client_q.put_nowait(text)
        except asyncio.QueueFull:
            self.client_events_dropped += 1
            log.warning("call %s: client event queue full, dropped one", self.id)

    async def _pump_client_events(self) -> None:
        while True:
            text = await self._client_q.get()
            await self.engine.handle_client_event(text, via="webrtc")

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio":
            return
        try:
            self.receiver.attach(receiver_for_track(self.pc, track))
        except (LookupError, RuntimeError):
            log.exception("call %s: cannot attach the audio receiver", self.id)

    def _on_audio(self, pcm48: np.ndarray) -> None:
        if self.echo:
            self.track.put(pcm48)
        self.engine.feed_input_audio(downsample_48k_to_24k(pcm48).tobytes())

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        log.debug("call %s: connection %s", self.id, state)
        if state in ("failed", "closed"):
            self._close_soon()

    async def _watch_engine(self) -> None:
        await self.engine.wait_closed()
        self._close_soon()

    def _close_soon(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(), name=f"{self.id} close")
        return self._closing

    # ---- teardown -----------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self) -> None:
        """Hang up: close the peer and the engine. Idempotent; returns when everything is closed."""
        await asyncio.shield(self._close_soon())

    async def _drain_channel(self) -> None:
        """A goodbye: let the last events (e.g. ``session_expired``) leave, then close the channel."""
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        drained = asyncio.Event()
        channel.on("bufferedamountlow", drained.set)  # fires when bufferedAmount falls to 0 (the threshold)
        try:
            if channel.bufferedAmount > 0:
                async with asyncio.timeout(DRAIN_S):
                    await drained.wait()
        except TimeoutError:
            log.debug("call %s: data channel did not drain in %.1f s", self.id, DRAIN_S)
        channel.close()

    async def _close(self) -> None:
        lifetime = self.engine.lifetime
        if lifetime.closed and not lifetime.abrupt and not lifetime.stalled:
            await self._drain_channel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self.engine.remove_listener(self._send_event)
        self.receiver.close()
        self.track.stop()
        try:
            await self.pc.close()
        finally:
            await self.engine.aclose()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._closed.set()
        log.info("call %s closed", self.id)

    def stats(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        rs = self.receiver.stats
        return {
            "frames_in": rs.frames_out,
            "packets_in": rs.received,
            "concealed": rs.concealed,
            "late_dropped": rs.late_dropped,
            "duplicates": rs.duplicates,
            "frames_out": self.track.frames_sent,
            "silent_frames_out": self.track.silent_frames,
            "echo_dropped": self.track.dropped,
            "reply_dropped_samples": self.out.dropped_samples,
            "client_events_dropped": self.client_events_dropped,
        }


def declares_inband_fec(sdp: str) -> bool:
    """Whether an SDP's Opus payload type carries ``useinbandfec=1`` (RFC 7587 6.1: the default is 0)."""
    opus_pts = {
        line.split()[0].split(":", 1)[1]
        for line in sdp.splitlines()
        if line.startswith("a=rtpmap:") and " opus/" in line.lower()
    }
    for line in sdp.splitlines():
        if line.startswith("a=fmtp:"):
            pt, _, params = line[len("a=fmtp:") :].partition(" ")
            if pt in opus_pts and "useinbandfec=1" in params.replace(" ", ""):
                return True
    return False


async def create_call(offer_sdp: str, engine: Engine, config: EmulatorConfig) -> tuple[str, RtcCall]:
    """Answer the offer, wire the data channel `oai-events` and audio to the engine; returns (answer_sdp, call)."""
    call = RtcCall(engine, config)
    try:
        answer = await call._answer(offer_sdp)
    except BaseException:
        await call.aclose()
        raise
    return answer, call
