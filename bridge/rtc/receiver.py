"""``AudioReceiver``: aiortc's audio receive path without its 80 ms prefetch and its stall after loss.

The seam (aiortc 1.16, ``rtcrtpreceiver.py``): ``RTCRtpReceiver._handle_rtp_packet`` does, in order,
SSRC bookkeeping, codec lookup, RTCP statistics (``StreamStatistics``, used for receiver reports and
``getStats``), RTX unwrapping, ``depayload`` into ``packet._data``, then hands the packet to the private
``self.__jitter_buffer.add(packet)`` (name-mangled ``_RTCRtpReceiver__jitter_buffer``) and queues any
completed frame to a decoder thread that fills the track's unbounded queue. :meth:`AudioReceiver.attach`
replaces only that jitter buffer object with a tap whose ``add`` forwards the packet here and returns
``(False, None)``: everything before it (stats, RTCP receiver reports, RTX) keeps working, and aiortc's
decoder thread and track simply never get a frame. :func:`check_seam` verifies the private attribute,
its type and the ``add`` call in ``_handle_rtp_packet`` and raises :class:`RtcSeamError` if an aiortc
upgrade moved them; tests/unit/test_rtc_receiver.py runs it against the installed aiortc.

Packets then go through :class:`bridge.rtc.reorder.ReorderWindow` (order, dedupe, hole policy), are
decoded in order by :mod:`bridge.rtc.opus` (PLC for lost frames, FEC from the next packet when it is
here), cut to 20 ms mono int16 48 kHz frames and passed to ``on_audio`` synchronously, on the event loop.
Nothing is queued except the few packets held behind a hole, for at most the window's wait.

:meth:`AudioReceiver.follow` ties the receiver to the playout it feeds (:class:`PlayoutClock`), the way
libwebrtc's NetEq is one unit (its ``g3doc/index.md``: a packet missing at playout time is concealed
then; the target delay comes from the packets' arrival times): every packet's arrival goes to the
playout, whose margin then follows the measured jitter, and when the playout is about to run dry with
the next packet missing, the receiver conceals one frame right then (:meth:`ReorderWindow.cover`)
instead of letting the device play silence. Holes behind which later packets wait are then only held
for the reorder depth this stream has shown (:data:`bridge.rtc.reorder.FOLLOW_PLAYOUT`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiortc
import numpy as np
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from bridge.faults import Faults
from bridge.rtc.opus import FRAME_SAMPLES, AvDecoder, LibopusDecoder, make_decoder
from bridge.rtc.reorder import FOLLOW_PLAYOUT, Packet, ReorderConfig, ReorderStats, ReorderWindow, Slot

logger = logging.getLogger(__name__)

TESTED_AIORTC = ("1.16.",)
JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
CODECS_ATTR = "_RTCRtpReceiver__codecs"
DELAY_HISTORY = 3000  # last 60 s of per-frame added delays
NEED_GUARD_MS = 3.0  # conceal this long before the playout would run dry (event-loop timer lateness)
TS_MOD = 1 << 32


class PlayoutClock(Protocol):
    """What the receiver needs from the playout it feeds (``bridge.media.playout.PlayoutBuffer``)."""

    def arrival(self, media_s: float, at: float | None = None) -> None:
        """A packet whose media starts at ``media_s`` arrived at ``at`` (monotonic s)."""

    def ms_until_dry(self) -> float | None:
        """Milliseconds until the device will find the playout short; None when nothing is playing."""

    def new_stream(self) -> None:
        """The arrivals that follow are of another stream (this receiver's)."""


class RtcSeamError(RuntimeError):
    """aiortc no longer has the private hook :class:`AudioReceiver` relies on (see module docstring)."""


def check_seam(receiver: RTCRtpReceiver | None = None) -> None:
    """Raise :class:`RtcSeamError` unless aiortc still routes audio packets through the tap point."""
    try:
        src = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    except (OSError, TypeError) as exc:  # pragma: no cover - no sources installed
        raise RtcSeamError(f"cannot inspect RTCRtpReceiver._handle_rtp_packet: {exc}") from exc
    if "self.__jitter_buffer.add(packet)" not in src or "packet._data" not in src:
        raise RtcSeamError(
            f"aiortc {aiortc.__version__}: RTCRtpReceiver._handle_rtp_packet no longer calls "
            "self.__jitter_buffer.add(packet) after depayloading; update bridge/rtc/receiver.py"
        )
    if receiver is not None and not isinstance(getattr(receiver, JITTER_ATTR, None), JitterBuffer | _Tap):
        raise RtcSeamError(f"aiortc {aiortc.__version__}: RTCRtpReceiver has no {JITTER_ATTR}")
    if not aiortc.__version__.startswith(TESTED_AIORTC):
        logger.warning(
            "aiortc %s is untested with bridge.rtc.receiver (tested: %s); the seam check passed",
            aiortc.__version__,
            ", ".join(TESTED_AIORTC),
        )


class _Tap:
    """Stands in for aiortc's ``JitterBuffer`` on one receiver: forwards packets, never returns frames."""

    def __init__(self, owner: AudioReceiver, receiver: RTCRtpReceiver) -> None:
        self._owner = owner
        self._receiver = receiver
        self.capacity = 16  # aiortc reads nothing else, but keep the attribute JitterBuffer has

    def add(self, packet: Any) -> tuple[bool, None]:
        codecs = getattr(self._receiver, CODECS_ATTR, {})
        codec = codecs.get(packet.payload_type)
        if codec is not None and codec.mimeType.lower() != "audio/opus":
            self._owner.stats.unsupported += 1
            return False, None
        self._owner.feed(packet)
        return False, None


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """One ``on_audio`` call, for measurements: which RTP timestamp, concealed or not, when."""

    rtp_timestamp: int | None  # of the packet the frame came from (None for concealment)
    concealed: bool
    ready_at: float  # clock() when the frame became releasable (the completing packet's arrival)
    delivered_at: float  # clock() right after on_audio returned


@dataclass(slots=True)
class ReceiverStats:
    """Counters of one :class:`AudioReceiver` (the window's own counters are in ``window``)."""

    window: ReorderStats
    frames_out: int = 0  # on_audio calls
    concealed_frames: int = 0  # 20 ms frames produced by PLC/FEC/fade
    fec_frames: int = 0  # concealed frames decoded from the next packet (its in-band FEC, if it has any)
    decode_errors: int = 0
    unsupported: int = 0  # packets of a non-Opus payload type
    callback_errors: int = 0
    decoder: str = ""

    @property
    def received(self) -> int:
        return self.window.received

    @property
    def duplicates(self) -> int:
        return self.window.duplicates

    @property
    def late_dropped(self) -> int:
        return self.window.late_dropped

    @property
    def reordered(self) -> int:
        return self.window.reordered

    @property
    def concealed(self) -> int:
        return self.concealed_frames


class AudioReceiver:
    """Low-latency audio receive path: RTP in, 20 ms mono int16 48 kHz frames out via ``on_audio``.

    ``on_audio(frame)`` is called on the event loop, in order, as soon as a frame is decodable.
    Per-frame added delay (arrival of the packet that completed the frame -> ``on_audio`` returned) is
    kept in :attr:`delays_ms` (bounded) and optionally reported to ``observer``.
    """

    def __init__(
        self,
        on_audio: Callable[[np.ndarray], None],
        *,
        config: ReorderConfig | None = None,
        decoder: str = "libopus",
        clock: Callable[[], float] = time.monotonic,
        observer: Callable[[FrameInfo], None] | None = None,
    ) -> None:
        self._on_audio = on_audio
        self._window = ReorderWindow(config)
        self._decoder_pref = decoder
        self._decoder: LibopusDecoder | AvDecoder | None = None
        self._clock = clock
        self._observer = observer
        self._carry = np.zeros(0, dtype=np.int16)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False
        self._receiver: RTCRtpReceiver | None = None
        self._original_jb: Any = None
        self.stats = ReceiverStats(window=self._window.stats)
        self.faults = Faults("reply audio consumer (on_audio)", logger)
        """Errors of ``on_audio``: counted, the first logged with its traceback, the rest summed."""
        self.delays_ms: deque[float] = deque(maxlen=DELAY_HISTORY)
        self._playout: PlayoutClock | None = None
        self._fec_wait = False
        self._ts_last: int | None = None  # RTP timestamp unwrapping for the playout's arrival clock
        self._ts_ext = 0

    # ---- wiring ------------------------------------------------------------------------------------

    def attach(self, receiver: RTCRtpReceiver) -> None:
        """Take over ``receiver``'s audio: packets come here instead of aiortc's jitter buffer."""
        check_seam(receiver)
        if self._receiver is not None:
            raise RuntimeError("AudioReceiver is already attached")
        self._receiver = receiver
        self._original_jb = getattr(receiver, JITTER_ATTR)
        setattr(receiver, JITTER_ATTR, _Tap(self, receiver))
        self._get_decoder()  # now, not on the first packet: creating it took 8-12 ms on this machine

    def follow(self, playout: PlayoutClock, *, fec_wait: bool = False) -> None:
        """Report arrivals to ``playout`` and conceal what it needs before its packet comes (module doc).

        ``fec_wait``: a lost frame recovered from the next packet's in-band FEC is reported as having arrived
        with that packet, so a lossy stream's margin grows until the next packet comes in time for its FEC
        (one frame more of latency, against concealment by PLC). Measured both ways: docs/benchmarks.md.
        """
        playout.new_stream()  # this connection's stream: its own media clock, its own jitter
        self._playout = playout
        self._fec_wait = fec_wait
        self._window.config = FOLLOW_PLAYOUT
        self._schedule()

    def detach(self) -> None:
        """Give the receiver its own jitter buffer back (idempotent)."""
        if self._receiver is not None:
            setattr(self._receiver, JITTER_ATTR, self._original_jb)
            self._receiver = None

    def close(self) -> None:
        """Stop delivering (idempotent): cancels the hole timer, detaches, frees the decoder."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.detach()
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    @property
    def wait_ms(self) -> float:
        """The window's current hole wait (the most a packet can be held)."""
        return self._window.wait * 1000.0

    # ---- packets in ---------------------------------------------------------------------------------

    def feed(self, packet: Any) -> None:
        """One depayloaded aiortc ``RtpPacket`` (``packet._data`` or ``payload``) arriving now."""
        payload = getattr(packet, "_data", None)
        if payload is None:
            payload = packet.payload
        self.feed_rtp(packet.sequence_number, packet.timestamp, bytes(payload))

    def feed_rtp(self, seq: int, timestamp: int, payload: bytes) -> None:
        """One Opus packet (RTP sequence number, RTP timestamp, payload) arriving now."""
        if self._closed:
            return
        now = self._clock()
        if self._playout is not None:
            media = self._media_s(timestamp)
            self._playout.arrival(media, now)
            lost = self._window.stats.lost
        self._emit(self._window.push(Packet(seq=seq, timestamp=timestamp, payload=payload, arrival=now)))
        if self._fec_wait and self._playout is not None and self._window.stats.lost > lost:
            # the frame lost just before this packet is in its in-band FEC: as if it had come now
            self._playout.arrival(media - FRAME_SAMPLES / self._window.clock_rate, now)
        self._schedule()

    def poll(self) -> None:
        """Release what the clock allows, and conceal what the playout needs now. Called by the timer;
        tests without a loop call it."""
        if self._closed:
            return
        now = self._clock()
        self._emit(self._window.poll(now))
        while self._playout is not None and self._window.coverable:
            # after a stall of the loop the device may need several frames at once: cover until it has enough
            until = self._playout.ms_until_dry()
            if until is None or until > NEED_GUARD_MS + 0.5:
                break
            slots = self._window.cover(now)
            if not slots:
                break
            self._emit(slots)
        self._schedule()

    def _media_peek(self, timestamp: int) -> float:
        """Media time of ``timestamp`` near the last one unwrapped, without moving the unwrapping."""
        delta = 0 if self._ts_last is None else (timestamp - self._ts_last) % TS_MOD
        if delta >= TS_MOD // 2:
            delta -= TS_MOD
        return (self._ts_ext + delta) / self._window.clock_rate

    def _media_s(self, timestamp: int) -> float:
        if self._ts_last is not None:
            delta = (timestamp - self._ts_last) % TS_MOD
            if delta >= TS_MOD // 2:
                delta -= TS_MOD
            self._ts_ext += delta
        self._ts_last = timestamp
        return self._ts_ext / self._window.clock_rate

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.poll()

    @property
    def deadline(self) -> float | None:
        """Clock time :meth:`poll` has work: a hole to give up on, or a playout about to need a frame."""
        deadline = self._window.deadline
        if self._playout is not None and self._window.coverable:
            until = self._playout.ms_until_dry()
            if until is not None:
                need = self._clock() + max(0.0, until - NEED_GUARD_MS) / 1000.0
                deadline = need if deadline is None else min(deadline, need)
        return deadline

    def _schedule(self) -> None:
        deadline = self.deadline
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        if deadline is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (synchronous tests): the caller polls
            return
        self._timer = loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)
        self._timer_at = deadline

    # ---- frames out ---------------------------------------------------------------------------------

    def _get_decoder(self) -> LibopusDecoder | AvDecoder:
        if self._decoder is None:
            self._decoder = make_decoder(self._decoder_pref)
            self.stats.decoder = self._decoder.name
        return self._decoder

    def _emit(self, slots: list[Slot]) -> None:
        if not slots:
            return
        dec = self._get_decoder()
        for slot in slots:
            if slot.packet is not None:
                before = dec.errors
                pcm = dec.decode(slot.packet.payload)
                self.stats.decode_errors += dec.errors - before
                self._deliver(pcm, slot.packet.timestamp, False, slot.ready_at)
            elif slot.frames:
                nxt = slot.next_packet.payload if slot.next_packet is not None else None
                pcm = dec.conceal(slot.samples, nxt)
                self.stats.concealed_frames += slot.frames
                self.stats.fec_frames += nxt is not None
                self._deliver(pcm, None, True, slot.ready_at)

    def _deliver(self, pcm: np.ndarray, ts: int | None, concealed: bool, ready_at: float) -> None:
        if len(self._carry):
            pcm = np.concatenate([self._carry, pcm])
        n = len(pcm) - len(pcm) % FRAME_SAMPLES
        self._carry = pcm[n:].copy() if n < len(pcm) else np.zeros(0, dtype=np.int16)
        for start in range(0, n, FRAME_SAMPLES):
            frame = pcm[start : start + FRAME_SAMPLES]
            try:
                self._on_audio(frame)
            except Exception as exc:  # one bad frame must not end the call, nor log 50 tracebacks a second
                self.stats.callback_errors += 1
                self.faults.record(exc)
            self.stats.frames_out += 1
            done = self._clock()
            if not concealed:
                self.delays_ms.append((done - ready_at) * 1000.0)
            if self._observer is not None:
                self._observer(FrameInfo(ts, concealed, ready_at, done))


def receiver_for_track(pc: Any, track: Any) -> RTCRtpReceiver:
    """The ``RTCRtpReceiver`` of a remote ``track`` of ``pc`` (call from ``pc.on("track")``)."""
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.track is track:
            receiver: RTCRtpReceiver = transceiver.receiver
            return receiver
    raise LookupError("no receiver for this track")
