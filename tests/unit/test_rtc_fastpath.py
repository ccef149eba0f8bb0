"""bridge.rtc.fastpath: the seam check against the installed aiortc, and the receive filter's RTP parsing."""

from __future__ import annotations

import logging
import struct
from types import SimpleNamespace
from typing import Any

import pylibsrtp
import pytest

from bridge.faults import Faults
from bridge.media.track import MicTrack
from bridge.rtc import fastpath


def test_seam_matches_the_installed_aiortc() -> None:
    fastpath.check_seam()


ADDR = ("127.0.0.1", 50000)  # where the datagrams come from (the far end of the nominated pair)


class _Clear:
    """Stands in for the DTLS transport's SRTP session: 'unprotects' by dropping a 4-byte trailer."""

    def unprotect(self, data: bytes) -> bytes:
        if data.endswith(b"BAD!"):
            raise pylibsrtp.Error("authentication failure")
        return data[:-4]


class _Audio:
    def __init__(self) -> None:
        self.fed: list[tuple[int, int, bytes]] = []
        self.stats = SimpleNamespace(unsupported=0)

    def feed_rtp(self, seq: int, timestamp: int, payload: bytes) -> None:
        self.fed.append((seq, timestamp, payload))


def _rtp(pt: int, seq: int, ts: int, payload: bytes, *, csrcs: int = 0, ext: bytes = b"", pad: int = 0) -> bytes:
    b0 = 0x80 | csrcs | (0x10 if ext else 0) | (0x20 if pad else 0)
    out = struct.pack("!BBHII", b0, 0x80 | pt, seq, ts, 0x1234) + b"\0\0\0\1" * csrcs
    if ext:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload + (b"\0" * (pad - 1) + bytes([pad]) if pad else b"")
    return out + b"AUTH"


@pytest.fixture
def fast() -> tuple[fastpath.FastReceive, _Audio, list[tuple[bytes, Any]]]:
    audio = _Audio()
    rx = fastpath.FastReceive(None, audio, fastpath.FastStats())  # type: ignore[arg-type]
    passed: list[tuple[bytes, Any]] = []
    rx._srtp = _Clear()
    rx._codecs = {
        111: SimpleNamespace(mimeType="audio/opus", clockRate=48_000),
        0: SimpleNamespace(mimeType="audio/PCMU", clockRate=8_000),
    }
    rx._streams = {}
    rx._original = lambda data, addr: passed.append((data, addr))
    return rx, audio, passed


def test_opus_payload_is_cut_out_past_csrcs_extension_and_padding(fast: Any) -> None:
    rx, audio, passed = fast
    rx._datagram_received(_rtp(111, 7, 960, b"opus-1"), ADDR)
    rx._datagram_received(_rtp(111, 8, 1920, b"opus-2", csrcs=2, ext=b"\x10mid\0\0\0\0", pad=3), ADDR)
    assert audio.fed == [(7, 960, b"opus-1"), (8, 1920, b"opus-2")]
    assert rx.stats.rtp_in == 2 and not passed
    assert rx._streams[0x1234].packets_received == 2  # what aiortc's receiver reports are built from


def test_everything_that_is_not_rtp_goes_to_aiortc(fast: Any) -> None:
    rx, audio, passed = fast
    dtls = bytes([22, 254, 253]) + b"\0" * 20
    rtcp = struct.pack("!BBHI", 0x80, 200, 6, 0x1234) + b"\0" * 20  # a sender report
    short = b"\x80\x6f\0\1"
    for data in (dtls, rtcp, short):
        rx._datagram_received(data, ADDR)
    assert [d for d, _c in passed] == [dtls, rtcp, short] and not audio.fed


def test_bad_packets_are_counted_and_dropped(fast: Any) -> None:
    rx, audio, passed = fast
    rx._datagram_received(_rtp(111, 1, 0, b"x")[:-4] + b"BAD!", ADDR)  # fails SRTP authentication
    rx._datagram_received(_rtp(96, 2, 0, b"x"), ADDR)  # payload type never negotiated
    rx._datagram_received(_rtp(0, 3, 0, b"pcmu"), ADDR)  # negotiated, but not Opus
    overpadded = bytearray(_rtp(111, 4, 0, b"ab\xc8"))
    overpadded[0] |= 0x20  # padding bit, and a last byte (200) longer than the whole packet
    rx._datagram_received(bytes(overpadded), ADDR)
    st = rx.stats
    assert (st.srtp_errors, st.unknown_payload_type, st.malformed, audio.stats.unsupported) == (1, 1, 1, 1)
    assert not audio.fed and not passed


def test_send_path_needs_an_encoder() -> None:
    with pytest.raises(fastpath.FastPathUnavailable):
        fastpath.FastSend(None, MicTrack(), fastpath.FastStats(), Faults("uplink", logging.getLogger()))  # type: ignore[arg-type]
