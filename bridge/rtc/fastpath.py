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
  aiortc's RTCP sender reports read (packet and octet counts, RTP and NTP timestamps) are kept per packet
  in one immutable object and copied into the sender on the loop (:meth:`FastSend.publish_counters`,
  called by the link at least once per RTCP interval), so a report never mixes two packets.
  With a sound card as the microphone all of this runs in PortAudio's input thread, as the frame is cut
  (:meth:`bridge.media.track.MicTrack.capture`): the event loop does not wake for the uplink at all, which
  on this machine costs more than the work (docs/benchmarks.md, CPU). That thread writes with its own
  ``dup`` of the socket, the send session gets a lock (aiortc's RTCP sender uses it from the loop), and it
  reads no aiortc or aioice state: the loop tells it where to send whenever DTLS changes state.

Both touch private names of aiortc 1.16 / aioice 0.13; :func:`check_seam` verifies each one against the
installed versions, and when it fails the stock paths stay in place (one warning), so an upgrade degrades
CPU, never the call. tests/unit/test_rtc_fastpath.py runs the check and the parser;
tests/integration/test_rtc_fastpath_peers.py a call through both paths against a stock aiortc peer.
"""

from __future__ import annotations

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

from bridge.faults import Faults
from bridge.media.track import MicTrack
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
        streams.add(_Seen(seq, timestamp))  # type: ignore[arg-type]  # reads only these two fields of a packet
        self.stats.rtp_in += 1
        if codec.mimeType.lower() != "audio/opus":
            self._audio.stats.unsupported += 1
            return
        self._audio.feed_rtp(seq, timestamp, plain[start:end])


class _LockedSrtp:
    """aiortc's send ``Session``, shared by the loop (RTCP reports) and the capture thread (RTP): a libsrtp
    session is not thread-safe, and pylibsrtp's calls release the GIL."""

    def __init__(self, session: pylibsrtp.Session) -> None:
        self._session = session
        self._lock = threading.Lock()

    def protect(self, data: bytes) -> bytes:
        with self._lock:
            return bytes(self._session.protect(data))

    def protect_rtcp(self, data: bytes) -> bytes:
        with self._lock:
            return bytes(self._session.protect_rtcp(data))


@dataclass(frozen=True)
class _Counters:
    """What aiortc's RTCP sender report reads, from one packet: published as one object, so a report never
    mixes the NTP time of one packet with the RTP time of another."""

    ntp_timestamp: int = 0
    rtp_timestamp: int = 0
    octet_count: int = 0
    packet_count: int = 0


class _Packets:
    """One 20 ms frame -> one SRTP packet for aioice's nominated pair. Used by the loop or by the capture
    thread, never both. The counters aiortc's RTCP sender reports read are kept in :attr:`counters` (one
    immutable object, replaced per packet) and copied into the sender on the loop by :meth:`publish`."""

    def __init__(self, sender: RTCRtpSender, codec: Any, encode: Any, stats: FastStats, srtp: Any) -> None:
        self._sender = sender
        self._header = _template(sender, codec)
        self._encode = encode
        self._srtp = srtp
        self.stats = stats
        self.counters = _Counters(
            octet_count=getattr(sender, _S + "octet_count"), packet_count=getattr(sender, _S + "packet_count")
        )
        self._sequence = random.randint(0, 0xFFFF)
        self._origin = random.randint(0, 0xFFFFFFFF)

    def packet(self, pcm: Any, index: int) -> bytes:
        header = self._header
        payload = self._encode(pcm)
        timestamp = (self._origin + index * FRAME_SAMPLES) & 0xFFFFFFFF
        struct.pack_into("!HI", header, 2, self._sequence, timestamp)
        data = self._srtp.protect(bytes(header) + payload)
        now = time.time()
        secs = int(now)
        before = self.counters
        self.counters = _Counters(
            ntp_timestamp=((secs + NTP_EPOCH_OFFSET) << 32) | int((now - secs) * 2**32),
            rtp_timestamp=timestamp,
            octet_count=before.octet_count + len(payload),
            packet_count=before.packet_count + 1,
        )
        self.stats.rtp_out += 1
        self._sequence = (self._sequence + 1) & 0xFFFF
        return bytes(data)

    def publish(self) -> None:
        """Loop only: copy the latest counters into the sender, where its RTCP task (also on the loop) reads them."""
        c, sender = self.counters, self._sender
        setattr(sender, _S + "ntp_timestamp", c.ntp_timestamp)
        setattr(sender, _S + "rtp_timestamp", c.rtp_timestamp)
        setattr(sender, _S + "octet_count", c.octet_count)
        setattr(sender, _S + "packet_count", c.packet_count)


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
    transport is not thread-safe). It reads nothing of aiortc's or aioice's: the loop publishes where to
    send (:meth:`route_to`, or ``None`` while DTLS is not connected). Nothing raises out of it: a failed
    send is counted and the first logged (``faults``)."""

    def __init__(self, packets: _Packets, faults: Faults) -> None:
        self._packets = packets
        self._faults = faults
        self._route: tuple[socket.socket, Any] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def route_to(self, fd: int | None, addr: Any) -> None:
        """Loop: send to ``addr`` through a dup of socket ``fd`` from now on (``None``: send nothing)."""
        sock = socket.socket(fileno=os.dup(fd)) if fd is not None else None
        # a dup shares the non-blocking flag: a full send buffer raises (counted) instead of waiting
        with self._lock:
            old, self._route = self._route, ((sock, addr) if sock is not None and not self._closed else None)
        if old is not None:
            old[0].close()
        if sock is not None and self._route is None:
            sock.close()

    def __call__(self, pcm: Any, index: int) -> None:
        with self._lock:  # close() and route_to() wait for a send in progress: no socket closed under it
            route = self._route
            if route is None:
                return  # not connected (yet, or any more): the loop notices and ends the call
            try:
                route[0].sendto(self._packets.packet(pcm, index), route[1])
            except Exception as exc:
                self._packets.stats.send_errors += 1
                self._faults.record(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            route, self._route = self._route, None
        if route is not None:
            route[0].close()


class FastSend:
    """Outgoing audio: encoded frames from a :class:`bridge.media.track.MicTrack`, one ``sendto`` each,
    from the microphone's capture thread when it has one (``capture_thread``), else from the loop.

    A send loop that dies for any reason other than the end of the call is fatal to the uplink
    (``faults``): the connection ends with a typed reason instead of carrying on with a dead microphone.
    """

    def __init__(
        self, sender: RTCRtpSender, track: MicTrack, stats: FastStats, faults: Faults, *, capture_thread: bool = True
    ) -> None:
        if track.encoder is None:
            raise FastPathUnavailable("the mic track has no Opus encoder")
        self._sender = sender
        self._track = track
        self.stats = stats
        self.faults = faults
        self._capture_thread = capture_thread
        self._packets: _Packets | None = None

    def install(self) -> None:
        """Replace the sender's RTP loop; call after ``addTrack`` and before the answer is applied."""
        for name in SENDER_ATTRS:
            if not hasattr(self._sender, name):
                raise FastPathUnavailable(f"aiortc sender has no {name}")
        self._sender._run_rtp = self._run  # type: ignore[method-assign]  # the seam: an instance override

    def publish_counters(self) -> None:
        """Loop: bring aiortc's sender-report counters up to date (call at least once per RTCP interval)."""
        if self._packets is not None:
            self._packets.publish()

    async def _run(self, codec: Any) -> None:
        sender = self._sender
        getattr(sender, _S + "rtp_started").set()
        try:
            dtls = sender.transport
            conn = _ice_connection(dtls)
            assert self._track.encoder is not None
            encode = self._track.encoder.encode
            if self._capture_thread:
                if not isinstance(dtls._tx_srtp, _LockedSrtp):
                    # the RTCP sender protects from the loop, this thread from PortAudio's: one lock for both
                    dtls._tx_srtp = _LockedSrtp(dtls._tx_srtp)  # type: ignore[assignment]
                self._packets = _Packets(sender, codec, encode, self.stats, dtls._tx_srtp)
                send = _CaptureThreadSend(self._packets, self.faults)
                self.stats.uplink = "capture thread"

                def reroute() -> None:
                    self._route(send, dtls, conn)

                try:
                    reroute()
                    dtls.on("statechange", reroute)
                    if await self._track.capture(send):
                        return
                finally:
                    dtls.remove_listener("statechange", reroute)
                    send.close()
                self.stats.uplink = "loop"  # the microphone has no capture thread
            self._packets = packets = _Packets(sender, codec, encode, self.stats, dtls._tx_srtp)
            while True:
                pcm, index = await self._track.next_frame()
                if not sender._enabled:
                    continue
                pair = conn._nominated.get(1)
                if pair is None or dtls.state != "connected" or pair.protocol.transport is None:
                    raise ConnectionError("not connected")
                pair.protocol.transport.sendto(packets.packet(pcm, index), pair.remote_addr)
        except (ConnectionError, MediaStreamError):
            pass  # the call is ending: the track stopped or the transport went away
        except FastPathUnavailable as exc:  # negotiated something the short path does not write
            log.warning("short RTP send path unavailable (%s); using aiortc's", exc)
            del sender._run_rtp  # the class's own loop, for this sender
            await RTCRtpSender._run_rtp(sender, codec)
            return
        except Exception as exc:  # anything else: the microphone is dead for this call
            self.faults.fatal(exc)
        finally:
            self._end()

    def _route(self, send: _CaptureThreadSend, dtls: Any, conn: Any) -> None:
        """Loop: publish where the capture thread sends (the nominated pair's socket while DTLS is up)."""
        pair = conn._nominated.get(1)
        transport = None if pair is None else pair.protocol.transport
        if dtls.state != "connected" or transport is None or not self._sender._enabled:
            send.route_to(None, None)
            return
        send.route_to(transport.get_extra_info("socket").fileno(), pair.remote_addr)

    def _end(self) -> None:
        sender = self._sender
        track = getattr(sender, _S + "track")
        if track is not None:
            track.stop()
            setattr(sender, _S + "track", None)
        getattr(sender, _S + "rtp_exited").set()
