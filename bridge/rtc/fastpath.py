"""Short RTP paths for the call's audio; aiortc keeps signalling, ICE, DTLS, SCTP and RTCP.

Why: for every 20 ms audio packet, stock aiortc runs a long chain of Python in each direction. In: aioice
first tries to parse the datagram as STUN (a raised ``ValueError``), queues it to the DTLS task (a task
switch), then ``RtpPacket.parse``, the router, ``datetime``-based clocks and ``RTCRtpReceiver``. Out: an
``av.Packet`` with a ``Fraction`` time base, ``RtpPacket`` and header-extension objects, two
``datetime`` clock reads, and three coroutines down to ``sendto``. On this machine the short paths take a
quarter off the bridge's CPU in a call (13.4 -> 10.1 % of a core, docs/benchmarks.md "CPU").

- :class:`FastReceive` replaces the instance attribute ``datagram_received(data, addr)`` of the
  ``StunProtocol`` of aioice's nominated candidate pair (the socket every packet of the call arrives on).
  SRTP (first byte 128-191, RFC 7983: never STUN, so no parse attempt) that is not RTCP (second byte
  192-223, RFC 5761) is unprotected with the DTLS transport's receive session, parsed, counted in aiortc's
  own ``StreamStatistics`` (so receiver reports to the server stay true: loss, jitter, highest sequence)
  and handed to :meth:`bridge.rtc.receiver.AudioReceiver.feed_rtp`. Everything else (STUN consent checks,
  DTLS, the data channel's SCTP, SRTCP) goes to the original method, unchanged.
- :class:`FastSend` sets the instance attribute ``RTCRtpSender._run_rtp`` before ``send()`` starts it.
  Per frame: one Opus encode (:class:`bridge.rtc.opus.LibopusEncoder`), one precomputed RTP header (the
  same fields and ``sdes:mid`` extension aiortc writes) patched with sequence number and timestamp, SRTP
  protect with the DTLS transport's send session, one ``sendto`` on aioice's nominated pair. The counters
  aiortc's RTCP sender reports read (packet and octet counts, RTP and NTP timestamps) are kept current.
  With a sound card as the microphone all of this runs in PortAudio's input thread, as the frame is cut
  (:meth:`bridge.media.track.MicTrack.capture`): the event loop does not wake for the uplink at all, which
  on this machine costs more than the work (docs/benchmarks.md, CPU). That thread writes with its own
  ``dup`` of the socket, and the send session gets a lock, since aiortc's RTCP sender uses it from the loop.

Both touch private names of aiortc 1.16 / aioice 0.13; :func:`check_seam` verifies each one against the
installed versions, and when it fails the stock paths stay in place (one warning), so an upgrade degrades
CPU, never the call. tests/unit/test_rtc_fastpath.py runs the check and the parser;
tests/integration/test_rtc_fastpath_peers.py a call through both paths against a stock aiortc peer.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import aioice.ice
import pylibsrtp
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket

from bridge.rtc.opus import FRAME_SAMPLES
from bridge.rtc.receiver import AudioReceiver

log = logging.getLogger(__name__)

_S = "_RTCRtpSender__"
_R = "_RTCRtpReceiver__"
SENDER_ATTRS = tuple(
    _S + n
    for n in (
        "rtp_started",
        "rtp_exited",
        "track",
        "mid",
        "rtp_header_extensions_map",
        "ntp_timestamp",
        "rtp_timestamp",
        "octet_count",
        "packet_count",
    )
)
RECEIVER_ATTRS = (_R + "codecs", _R + "remote_streams")
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)


class FastPathUnavailable(RuntimeError):
    """The installed aiortc/aioice or this call's negotiation does not fit the short paths."""


def check_seam() -> None:
    """Raise :class:`FastPathUnavailable` unless aiortc/aioice still have what the short paths use."""
    try:
        send_src = inspect.getsource(RTCRtpSender.send)
        ice_src = inspect.getsource(aioice.ice.StunProtocol.datagram_received)
        class_src = inspect.getsource(RTCRtpSender) + inspect.getsource(RTCRtpReceiver)
        dtls_src = inspect.getsource(RTCDtlsTransport)
    except (OSError, TypeError) as exc:  # pragma: no cover - no sources installed
        raise FastPathUnavailable(f"cannot inspect aiortc: {exc}") from exc
    tx_uses = set(re.findall(r"self\._tx_srtp\.(\w+)", dtls_src))
    if tx_uses - {"protect", "protect_rtcp"}:
        raise FastPathUnavailable(f"aiortc uses its send SRTP session for {sorted(tx_uses)}, not only protect")
    if "self._run_rtp(" not in send_src:
        raise FastPathUnavailable("RTCRtpSender.send no longer starts self._run_rtp")
    if "def datagram_received(self, data" not in ice_src or "stun.parse_message(data)" not in ice_src:
        raise FastPathUnavailable("aioice's StunProtocol.datagram_received is not what the short path replaces")
    for name in (*SENDER_ATTRS, *RECEIVER_ATTRS):
        if f"self.__{name.split('__', 1)[1]}" not in class_src:
            raise FastPathUnavailable(f"aiortc no longer has {name}")


def _ice_connection(dtls: Any) -> Any:
    conn = getattr(getattr(dtls, "transport", None), "_connection", None)
    if conn is None or not isinstance(getattr(conn, "_nominated", None), dict):
        raise FastPathUnavailable("no aioice connection behind the DTLS transport")
    return conn


@dataclass
class FastStats:
    """Counters of both short paths (``stats`` transcript line)."""

    rtp_in: int = 0
    rtp_out: int = 0
    uplink: str = "loop"
    """Where RTP is sent from: ``capture thread`` (PortAudio's input thread) or ``loop``."""
    send_errors: int = 0
    srtp_errors: int = 0
    malformed: int = 0
    unknown_payload_type: int = 0


class _Seen:
    """What ``StreamStatistics.add`` reads of a packet."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self, sequence_number: int, timestamp: int) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp


class FastReceive:
    """Incoming SRTP audio straight from aioice to an :class:`AudioReceiver` (see module docstring)."""

    def __init__(self, receiver: RTCRtpReceiver, audio: AudioReceiver, stats: FastStats) -> None:
        self._receiver = receiver
        self._audio = audio
        self.stats = stats
        self._protocol: Any = None
        self._original: Any = None

    def install(self) -> None:
        """Start routing; call once the DTLS transport is connected (its SRTP sessions exist)."""
        dtls = self._receiver.transport
        srtp = getattr(dtls, "_rx_srtp", None)
        if srtp is None or dtls.state != "connected":
            raise FastPathUnavailable("DTLS is not connected yet")
        router = getattr(dtls, "_rtp_router", None)
        if router is None or getattr(router, "receivers", None) != {self._receiver}:
            raise FastPathUnavailable("the DTLS transport carries more than this one audio receiver")
        pair = _ice_connection(dtls)._nominated.get(1)
        if pair is None or not hasattr(pair.protocol, "datagram_received"):
            raise FastPathUnavailable("no nominated ICE pair")
        self._srtp = srtp
        self._codecs: dict[int, Any] = getattr(self._receiver, _R + "codecs")
        self._streams: dict[int, StreamStatistics] = getattr(self._receiver, _R + "remote_streams")
        self._protocol, self._original = pair.protocol, pair.protocol.datagram_received
        pair.protocol.datagram_received = self._datagram_received

    def uninstall(self) -> None:
        if self._protocol is not None:
            self._protocol.datagram_received = self._original
            self._protocol = None

    def _datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12 or not 127 < data[0] < 192 or 191 < data[1] < 224:
            self._original(data, addr)  # STUN, DTLS, SCTP inside DTLS, SRTCP: aioice's and aiortc's own path
            return
        try:
            plain = self._srtp.unprotect(data)
        except pylibsrtp.Error:
            self.stats.srtp_errors += 1
            return
        b0 = plain[0]
        start = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10 and len(plain) >= start + 4:
            start += 4 + 4 * ((plain[start + 2] << 8) | plain[start + 3])
        end = len(plain) - (plain[-1] if b0 & 0x20 else 0)
        if end < start:
            self.stats.malformed += 1
            return
        seq, timestamp, ssrc = struct.unpack_from("!HII", plain, 2)
        codec = self._codecs.get(plain[1] & 0x7F)
        if codec is None:
            self.stats.unknown_payload_type += 1
            return
        streams = self._streams.get(ssrc)
        if streams is None:
            streams = self._streams[ssrc] = StreamStatistics(codec.clockRate)
        streams.add(_Seen(seq, timestamp))  # type: ignore[arg-type]
        self.stats.rtp_in += 1
        if codec.mimeType.lower() != "audio/opus":
            self._audio.stats.unsupported += 1
            return
        self._audio.feed_rtp(seq, timestamp, plain[start:end])


class _LockedSrtp:
    """aiortc's send ``Session``, shared by the loop (RTCP reports) and the capture thread (RTP): a libsrtp
    session is not thread-safe, and pylibsrtp's calls release the GIL."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._lock = threading.Lock()

    def protect(self, data: bytes) -> bytes:
        with self._lock:
            return self._session.protect(data)  # type: ignore[no-any-return]

    def protect_rtcp(self, data: bytes) -> bytes:
        with self._lock:
            return self._session.protect_rtcp(data)  # type: ignore[no-any-return]


class _Packets:
    """One 20 ms frame -> one SRTP packet for aioice's nominated pair, keeping the counters aiortc's RTCP
    sender reports read. Used by the loop or by the capture thread, never both."""

    def __init__(self, sender: RTCRtpSender, codec: Any, encode: Any, stats: FastStats, srtp: Any) -> None:
        self._sender = sender
        self._header = _template(sender, codec)
        self._encode = encode
        self._srtp = srtp
        self.stats = stats
        self._sequence = random.randint(0, 0xFFFF)
        self._origin = random.randint(0, 0xFFFFFFFF)

    def packet(self, pcm: Any, index: int) -> bytes:
        sender, header = self._sender, self._header
        payload = self._encode(pcm)
        timestamp = (self._origin + index * FRAME_SAMPLES) & 0xFFFFFFFF
        struct.pack_into("!HI", header, 2, self._sequence, timestamp)
        data = self._srtp.protect(bytes(header) + payload)
        now = time.time()
        secs = int(now)
        setattr(sender, _S + "ntp_timestamp", ((secs + NTP_EPOCH_OFFSET) << 32) | int((now - secs) * 2**32))
        setattr(sender, _S + "rtp_timestamp", timestamp)
        setattr(sender, _S + "octet_count", getattr(sender, _S + "octet_count") + len(payload))
        setattr(sender, _S + "packet_count", getattr(sender, _S + "packet_count") + 1)
        self.stats.rtp_out += 1
        self._sequence = (self._sequence + 1) & 0xFFFF
        return data


def _template(sender: RTCRtpSender, codec: Any) -> bytearray:
    """The RTP header aiortc would write (marker set, ``sdes:mid``), with sequence/timestamp zero."""
    hdr_map = getattr(sender, _S + "rtp_header_extensions_map")
    pkt = RtpPacket(payload_type=codec.payloadType, marker=1, sequence_number=0, timestamp=0, ssrc=0)
    pkt.ssrc = sender._ssrc
    pkt.extensions.mid = getattr(sender, _S + "mid")
    pkt.extensions.abs_send_time = 0
    first = pkt.serialize(hdr_map)
    pkt.extensions.abs_send_time = 0xABCDEF
    if pkt.serialize(hdr_map) != first:
        raise FastPathUnavailable("abs-send-time negotiated for audio: the header is not constant")
    return bytearray(first)


class _CaptureThreadSend:
    """``send(pcm, index)`` for :meth:`bridge.media.track.MicTrack.capture`: runs in PortAudio's input
    thread and writes with its own ``dup`` of aioice's socket (a UDP ``sendto`` is one syscall; the loop's
    transport is not thread-safe). Nothing raises out of it: failures are counted, the first one logged."""

    def __init__(self, sender: RTCRtpSender, dtls: Any, conn: Any, packets: _Packets) -> None:
        self._sender, self._dtls, self._conn, self._packets = sender, dtls, conn, packets
        self._pair: Any = None
        self._sock: socket.socket | None = None
        self._closed = False
        self._lock = threading.Lock()

    def __call__(self, pcm: Any, index: int) -> None:
        with self._lock:  # close() waits for a send in progress: the socket is never closed under it
            if self._closed or not self._sender._enabled:
                return
            try:
                pair = self._conn._nominated.get(1)
                if pair is None or self._dtls.state != "connected" or pair.protocol.transport is None:
                    return  # the call is ending; the loop notices and stops the track
                if pair is not self._pair:
                    self._reopen(pair)
                assert self._sock is not None
                self._sock.sendto(self._packets.packet(pcm, index), pair.remote_addr)
            except Exception:
                self._packets.stats.send_errors += 1
                if self._packets.stats.send_errors == 1:
                    log.exception("sending audio from the capture thread failed (later failures only counted)")

    def _reopen(self, pair: Any) -> None:
        fd = pair.protocol.transport.get_extra_info("socket").fileno()
        if self._sock is not None:
            self._sock.close()
        # a dup shares the non-blocking flag: a full send buffer raises (counted) instead of waiting
        self._sock, self._pair = socket.socket(fileno=os.dup(fd)), pair

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()


class FastSend:
    """Outgoing audio: encoded frames from a :class:`bridge.media.track.MicTrack`, one ``sendto`` each,
    from the microphone's capture thread when it has one (``capture_thread``), else from the loop."""

    def __init__(self, sender: RTCRtpSender, track: Any, stats: FastStats, *, capture_thread: bool = True) -> None:
        if getattr(track, "encoder", None) is None:
            raise FastPathUnavailable("the mic track has no Opus encoder")
        self._sender = sender
        self._track = track
        self.stats = stats
        self._capture_thread = capture_thread

    def install(self) -> None:
        """Replace the sender's RTP loop; call after ``addTrack`` and before the answer is applied."""
        for name in SENDER_ATTRS:
            if not hasattr(self._sender, name):
                raise FastPathUnavailable(f"aiortc sender has no {name}")
        self._sender._run_rtp = self._run  # type: ignore[method-assign]

    async def _run(self, codec: Any) -> None:
        sender = self._sender
        getattr(sender, _S + "rtp_started").set()
        try:
            dtls = sender.transport
            conn = _ice_connection(dtls)
            encode = self._track.encoder.encode
            if self._capture_thread and hasattr(self._track, "capture"):
                if not isinstance(dtls._tx_srtp, _LockedSrtp):
                    dtls._tx_srtp = _LockedSrtp(dtls._tx_srtp)
                packets = _Packets(sender, codec, encode, self.stats, dtls._tx_srtp)
                send = _CaptureThreadSend(sender, dtls, conn, packets)
                self.stats.uplink = "capture thread"
                try:
                    if await self._track.capture(send):
                        return
                finally:
                    send.close()
                self.stats.uplink = "loop"  # the source has no capture thread
            packets = _Packets(sender, codec, encode, self.stats, dtls._tx_srtp)
            while True:
                pcm, index = await self._track.next_frame()
                if not sender._enabled:
                    continue
                pair = conn._nominated.get(1)
                if pair is None or dtls.state != "connected" or pair.protocol.transport is None:
                    raise ConnectionError("not connected")
                pair.protocol.transport.sendto(packets.packet(pcm, index), pair.remote_addr)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except FastPathUnavailable as exc:  # negotiated something the short path does not write
            log.warning("short RTP send path unavailable (%s); using aiortc's", exc)
            del sender._run_rtp  # the class's own loop, for this sender
            await RTCRtpSender._run_rtp(sender, codec)
            return
        except Exception:
            log.exception("audio send loop failed")
        finally:
            self._end()

    def _end(self) -> None:
        sender = self._sender
        track = getattr(sender, _S + "track")
        if track is not None:
            track.stop()
            setattr(sender, _S + "track", None)
        getattr(sender, _S + "rtp_exited").set()
