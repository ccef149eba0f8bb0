"""The WebRTC offer's Opus parameters (RFC 7587)."""

from __future__ import annotations

from aiortc.sdp import SessionDescription

from bridge.rtc.opus import declare_inband_fec


def test_the_offer_declares_inband_fec_for_every_opus_payload_type() -> None:
    """RFC 7587 6.1: ``useinbandfec=1`` on the Opus ``a=fmtp`` line (added, or a line of its own); other codecs,
    and an SDP without Opus, unchanged; the result parses as aiortc would read it."""
    bare = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    assert declare_inband_fec(bare) == bare.replace(
        "a=rtpmap:96 opus/48000/2\r\n", "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"
    )
    with_fmtp = "v=0\r\na=rtpmap:111 OPUS/48000/2\r\na=fmtp:111 minptime=10\r\na=fmtp:0 x=1\r\n"
    assert "a=fmtp:111 minptime=10;useinbandfec=1\r\na=fmtp:0 x=1\r\n" in declare_inband_fec(with_fmtp)
    assert declare_inband_fec(declare_inband_fec(with_fmtp)) == declare_inband_fec(with_fmtp)  # idempotent
    no_opus = "v=0\r\na=rtpmap:0 PCMU/8000\r\n"
    assert declare_inband_fec(no_opus) == no_opus

    pc_sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
        "a=rtpmap:96 opus/48000/2\r\n"
    )
    parsed = SessionDescription.parse(declare_inband_fec(pc_sdp))
    assert parsed.media[0].rtp.codecs[0].parameters == {"useinbandfec": 1}
