"""The short RTP paths (bridge.rtc.fastpath) against a stock aiortc peer on 127.0.0.1.

Peer A is the bridge's side: MicTrack + LibopusEncoder sent by FastSend, remote audio taken by FastReceive
into an AudioReceiver. Peer B is plain aiortc: it decodes A's packets with its own receive path and sends
a tone with its own sender. Both directions must carry the audio, and RTCP must stay true both ways.
A's microphone is a file-like paced source (uplink sent from the event loop) or the PulseAudio virtual
microphone (uplink sent from PortAudio's capture thread, beside aiortc's RTCP on the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from bridge.faults import Faults
from bridge.media.base import AudioSource
from bridge.media.devices import DeviceSource
from bridge.media.mic import routed
from bridge.media.paced import PacedSource
from bridge.media.track import MicTrack
from bridge.rtc import fastpath, fec
from bridge.rtc.loopback import loopback_candidates
from bridge.rtc.opus import LibopusEncoder
from bridge.rtc.receiver import AudioReceiver, receiver_for_track
from bridge.rtc.testing import tone
from bridge.rtc.tracks import FRAME_SAMPLES, PacedAudioTrack
from tests.helpers import until
from tests.pulse import Pulse, pulse  # noqa: F401

A_TONE = tone(1.0, 1000.0, level=0.5)
B_TONE = tone(1.0, 400.0, level=0.5)


class ToneSource(PacedSource):
    """A 1 kHz microphone, paced by monotonic deadlines."""

    def _frame(self, index: int) -> np.ndarray:
        start = (index * FRAME_SAMPLES) % (len(A_TONE) - FRAME_SAMPLES)
        return A_TONE[start : start + FRAME_SAMPLES].copy()


def _dominant_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum[1:]) + 1) * 48_000 / len(pcm)


async def _until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    await until(predicate, what, timeout)


async def test_both_directions_carry_audio_and_rtcp_through_the_short_paths() -> None:
    stats = await _call_stock_peer(ToneSource())
    assert stats.uplink == "loop"


@pytest.mark.pulseaudio
@pytest.mark.timeout(60)
async def test_uplink_from_the_capture_thread_of_a_real_microphone(pulse: Pulse, tmp_path: Path) -> None:  # noqa: F811
    """The same call with the PulseAudio virtual microphone: every packet leaves from PortAudio's thread,
    while aiortc's RTCP sender shares the SRTP session from the loop."""
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(np.tile(A_TONE, 20).tobytes())  # 20 s: longer than the call
    player = await asyncio.create_subprocess_exec("paplay", "-d", "micsink", str(wav), env=pulse.env())
    source = DeviceSource(None)
    try:
        # 2 s at B: paplay's first samples reach the virtual microphone a few hundred ms after it starts
        stats = await _call_stock_peer(source, max_skipped=0, frames_seen=100)
    finally:
        player.terminate()
        await player.wait()
        await source.aclose()
    assert stats.uplink == "capture thread" and stats.send_errors == 0


async def _call_stock_peer(
    source: AudioSource, *, max_skipped: int | None = None, frames_seen: int = 40
) -> fastpath.FastStats:
    """A (``source`` routed to a MicTrack sent by FastSend, FastReceive) <-> B (stock aiortc) on 127.0.0.1;
    asserts both directions and RTCP; ``max_skipped``: frames the timeline may jump over (default: what the
    mic side dropped); B decodes ``frames_seen`` frames and checks the tone in the last 25."""
    async with contextlib.AsyncExitStack() as stack:
        mic = MicTrack(capture_thread=source.has_capture_thread, encoder=LibopusEncoder())
        await stack.enter_async_context(routed(source, mic))
        return await _call_stock_peer_with(mic, source, max_skipped=max_skipped, frames_seen=frames_seen)


async def _call_stock_peer_with(
    mic: MicTrack, source: AudioSource, *, max_skipped: int | None, frames_seen: int
) -> fastpath.FastStats:
    fastpath.check_seam()
    stats = fastpath.FastStats()
    faults = Faults("uplink", logging.getLogger(__name__))
    heard_by_a: list[np.ndarray] = []
    rx = AudioReceiver(heard_by_a.append)
    b_pos = {"i": 0}

    def b_pull() -> np.ndarray:
        i = b_pos["i"]
        b_pos["i"] = (i + 1) % (len(B_TONE) // FRAME_SAMPLES)
        return B_TONE[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]

    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    fast_receive: fastpath.FastReceive | None = None
    b_tracks: list = []  # type: ignore[type-arg]
    a_receivers: list = []  # type: ignore[type-arg]

    @a.on("track")
    def _a_track(track) -> None:  # type: ignore[no-untyped-def]
        r = receiver_for_track(a, track)
        rx.attach(r)
        a_receivers.append(r)

    @b.on("track")
    def _b_track(track) -> None:  # type: ignore[no-untyped-def]
        b_tracks.append(track)

    publisher: asyncio.Task[None] | None = None
    try:
        fast_send = fastpath.FastSend(a.addTrack(mic), mic, stats, faults)
        fast_send.install()

        async def publish() -> None:  # what WebRTCLink.run_media does: counters to aiortc's RTCP sender
            while True:
                await asyncio.sleep(0.2)
                fast_send.publish_counters()

        publisher = asyncio.create_task(publish())
        b.addTrack(PacedAudioTrack(b_pull))
        b_headers: list[tuple[int, int]] = []  # (sequence, timestamp) of A's packets, before B's jitter buffer
        b_receiver = b.getTransceivers()[0].receiver
        b_handle = b_receiver._handle_rtp_packet

        async def _b_rtp(packet, arrival_time_ms: int) -> None:  # type: ignore[no-untyped-def]
            b_headers.append((packet.sequence_number, packet.timestamp))
            await b_handle(packet, arrival_time_ms=arrival_time_ms)

        b_receiver._handle_rtp_packet = _b_rtp
        with loopback_candidates():
            async with asyncio.timeout(10):
                await a.setLocalDescription(await a.createOffer())
                await b.setRemoteDescription(a.localDescription)
                await b.setLocalDescription(await b.createAnswer())
                await a.setRemoteDescription(b.localDescription)
        await _until(lambda: a_receivers and a_receivers[0].transport.state == "connected", 10, "DTLS")
        fast_receive = fastpath.FastReceive(a_receivers[0], rx, stats)
        fast_receive.install()

        # B (stock aiortc) decodes what FastSend wrote: the 1 kHz tone.
        assert b_tracks
        frames = [await asyncio.wait_for(b_tracks[0].recv(), 5) for _ in range(frames_seen)]
        pcm = np.concatenate([f.to_ndarray().reshape(-1)[::2] for f in frames[-25:]])  # stereo s16 -> left
        assert abs(_dominant_hz(pcm) - 1000) < 10 and np.abs(pcm).max() > 8000

        # On the wire, the timestamp advances one frame per packet; it jumps further only over frames the
        # microphone side itself dropped (a loaded machine stalls the loop; the timeline keeps real time).
        skipped = 0
        for (s0, t0), (s1, t1) in zip(b_headers, b_headers[1:], strict=False):
            packets, frames_advanced = (s1 - s0) & 0xFFFF, ((t1 - t0) & 0xFFFFFFFF) / FRAME_SAMPLES
            assert packets == 1, f"loopback lost or reordered packets: {s0} -> {s1}"
            assert frames_advanced == int(frames_advanced) >= 1, f"timestamp {t0} -> {t1}"
            skipped += int(frames_advanced) - 1
        assert len(b_headers) >= 40
        assert skipped <= (mic.dropped + source.dropped if max_skipped is None else max_skipped)

        # A's AudioReceiver gets B's 400 Hz tone through FastReceive.
        await _until(lambda: stats.rtp_in >= 25, 5, "packets on the short receive path")
        got = np.concatenate(heard_by_a[-25:])
        assert abs(_dominant_hz(got) - 400) < 10 and np.abs(got).max() > 8000
        assert stats.rtp_out >= 40 and stats.srtp_errors == stats.malformed == stats.unknown_payload_type == 0
        assert rx.stats.window.lost == 0

        # RTCP stays true: B sees A's sender reports (counts kept by FastSend), and A's receiver reports,
        # built from the statistics FastReceive keeps, tell B that nothing was lost.
        async def b_view() -> tuple[list, list]:  # type: ignore[type-arg]
            rs = await b.getTransceivers()[0].receiver.getStats()
            ss = await b.getTransceivers()[0].sender.getStats()
            return (
                [s for s in rs.values() if s.type == "remote-outbound-rtp"],
                [s for s in ss.values() if s.type == "remote-inbound-rtp"],
            )

        deadline = time.monotonic() + 6
        while True:
            outbound, inbound = await b_view()
            if outbound and inbound:
                break
            assert time.monotonic() < deadline, "no RTCP reports within 6 s"
            await asyncio.sleep(0.2)
        assert 0 < outbound[0].packetsSent <= stats.rtp_out
        assert inbound[0].packetsLost == 0
        a_in = [s for s in (await a_receivers[0].getStats()).values() if s.type == "inbound-rtp"]
        assert a_in and a_in[0].packetsReceived >= stats.rtp_in  # what A's receiver reports are built from
    finally:
        if publisher is not None:
            publisher.cancel()
        if fast_receive is not None:
            fast_receive.uninstall()
        rx.close()
        async with asyncio.timeout(10):  # FastSend's loop ends and reports it: stop() would hang otherwise
            await a.close()
            await b.close()
    assert mic.readyState == "ended" and faults.count == 0
    return stats


async def test_uplink_fec_follows_the_loss_the_far_end_reports() -> None:
    """B (stock aiortc) loses every 8th packet of A's; its receiver reports say so, and A's encoder starts
    coding FEC for about that much loss (bridge.rtc.fec, as WebRTCLink.pump_audio runs it)."""
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    encoder = LibopusEncoder()
    mic = MicTrack(encoder=encoder)
    tracker = fec.LossTracker()
    follow: asyncio.Task[None] | None = None
    stack = contextlib.AsyncExitStack()
    try:
        await stack.enter_async_context(routed(ToneSource(), mic))
        sender = a.addTrack(mic)
        fastpath.FastSend(sender, mic, fastpath.FastStats(), Faults("uplink", logging.getLogger(__name__))).install()
        b_tracks: list = []  # type: ignore[type-arg]
        b.on("track", b_tracks.append)
        with loopback_candidates():
            async with asyncio.timeout(10):
                await a.setLocalDescription(await a.createOffer())
                await b.setRemoteDescription(a.localDescription)
                b_receiver = b.getTransceivers()[0].receiver
                b_handle = b_receiver._handle_rtp_packet
                seen = {"n": 0}

                async def _lossy(packet, arrival_time_ms: int) -> None:  # type: ignore[no-untyped-def]
                    seen["n"] += 1
                    if seen["n"] % 8:
                        await b_handle(packet, arrival_time_ms=arrival_time_ms)

                b_receiver._handle_rtp_packet = _lossy
                await b.setLocalDescription(await b.createAnswer())
                await a.setRemoteDescription(b.localDescription)
        assert encoder.loss_perc == 0  # a clean start codes no FEC
        follow = asyncio.ensure_future(fec.follow_reported_loss(sender, encoder, tracker))
        await _until(lambda: encoder.loss_perc >= 5, 12, "the encoder to follow the reported loss")
        assert tracker.smoothed is not None and 4 < tracker.smoothed < 20, tracker.smoothed
    finally:
        if follow is not None:
            follow.cancel()
        async with asyncio.timeout(10):
            await a.close()
            await b.close()
        await stack.aclose()
