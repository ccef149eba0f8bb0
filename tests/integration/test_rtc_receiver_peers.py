"""Two real aiortc peers on 127.0.0.1: a PacedAudioTrack on one, AudioReceiver on the other."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection

from bridge.rtc.loopback import loopback_candidates
from bridge.rtc.receiver import AudioReceiver, receiver_for_track
from bridge.rtc.testing import tone
from bridge.rtc.tracks import FRAME_SAMPLES, PacedAudioTrack

BURST = tone(0.2, 1000.0, level=0.5)


def _host_candidates(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("a=candidate") and " host" in line]


async def test_audio_arrives_through_audio_receiver_with_low_latency() -> None:
    sent_at: list[float] = []  # monotonic time each burst started going on the wire
    state = {"burst": -1}

    def pull() -> np.ndarray | None:
        i = state["burst"]
        if i < 0:
            return None
        chunk = BURST[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
        if i == 0:
            sent_at.append(time.monotonic())
        state["burst"] = i + 1 if (i + 1) * FRAME_SAMPLES < len(BURST) else -1
        return chunk

    heard_at: list[float] = []  # onsets: first loud frame after a quiet one
    loud = asyncio.Event()
    was_loud = {"v": False}

    def on_audio(frame: np.ndarray) -> None:
        level = int(np.abs(frame).max())
        if level > 3000 and not was_loud["v"]:
            heard_at.append(time.monotonic())
            loud.set()
        was_loud["v"] = level > 1000

    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    rx = AudioReceiver(on_audio)
    got_track = asyncio.Event()

    @b.on("track")
    def _on_track(track) -> None:  # type: ignore[no-untyped-def]
        rx.attach(receiver_for_track(b, track))
        got_track.set()

    try:
        a.addTrack(PacedAudioTrack(pull))
        b.addTransceiver("audio", direction="recvonly")
        with loopback_candidates():
            async with asyncio.timeout(10):
                await a.setLocalDescription(await a.createOffer())
                assert all("127.0.0.1" in c for c in _host_candidates(a.localDescription.sdp))
                await b.setRemoteDescription(a.localDescription)
                await b.setLocalDescription(await b.createAnswer())
                await a.setRemoteDescription(b.localDescription)
                await got_track.wait()
        # Let the connection settle, then send three bursts and time each one.
        latencies = []
        for _ in range(3):
            await asyncio.sleep(0.4)
            loud.clear()
            state["burst"] = 0
            async with asyncio.timeout(5):
                await loud.wait()
            latencies.append((heard_at[-1] - sent_at[-1]) * 1000)
        st = rx.stats
        assert st.frames_out > 40 and st.decoder == "libopus"
        assert st.window.lost == 0 and st.concealed == 0
        # Receive path adds nothing on a clean link; one-way is encode + loopback + decode.
        assert max(rx.delays_ms) < 5.0
        print(f"one-way burst latency ms: {[round(x, 1) for x in latencies]}")
        assert sorted(latencies)[1] < 40.0
        # aiortc's own bookkeeping before the tap still runs: RTCP stats count our packets.
        stats = await receiver_for_track(b, b.getTransceivers()[0].receiver.track).getStats()
        inbound = [s for s in stats.values() if s.type == "inbound-rtp"]
        assert inbound and inbound[0].packetsReceived >= st.received
    finally:
        rx.close()
        await a.close()
        await b.close()


async def _until(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return  # the caller's assertions say what did not happen
        await asyncio.sleep(0.05)


async def _call_emulator(declare_fec: bool, lose_every: int) -> tuple[object, object]:
    """A stock aiortc client calls the emulator (tone replies) and loses every ``lose_every``-th reply packet
    before aiortc counts it (so its receiver reports say so); returns (the emulator's call, the client pc)."""
    import aiohttp
    from aiortc import RTCSessionDescription

    from bridge.emulator.testing import running_emulator
    from bridge.rtc.opus import declare_inband_fec

    async with running_emulator(behaviour="tone", think_ms=0, reply_seconds=8.0) as emu:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{emu.base_url}/realtime/client_secrets",
                headers={"Authorization": f"Bearer {emu.api_key}"},
                json={"session": {"type": "realtime", "model": "gpt-realtime"}},
            ) as r:
                ek = (await r.json())["value"]
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(PacedAudioTrack(lambda: None))
            channel = pc.createDataChannel("oai-events")
            with loopback_candidates():
                await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            async with http.post(
                f"{emu.base_url}/realtime/calls",
                data=declare_inband_fec(offer) if declare_fec else offer,
                headers={"Authorization": f"Bearer {ek}", "Content-Type": "application/sdp"},
            ) as r:
                answer = await r.text()
            receiver = pc.getTransceivers()[0].receiver
            handle = receiver._handle_rtp_packet
            seen = {"n": 0}

            async def lossy(packet, arrival_time_ms: int) -> None:  # type: ignore[no-untyped-def]
                seen["n"] += 1
                if seen["n"] % lose_every:
                    await handle(packet, arrival_time_ms=arrival_time_ms)

            receiver._handle_rtp_packet = lossy
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            opened = asyncio.Event()
            channel.on("open", opened.set)
            async with asyncio.timeout(10):
                await opened.wait()
            channel.send('{"type": "response.create"}')  # an 8 s reply streams while reports come back
            (call,) = emu.state.calls.values()
            encoder = call.track.encoder
            if encoder is not None:
                await _until(lambda: encoder.loss_perc >= 5, 12)  # set by the call's FEC task
            await pc.close()
            return call, encoder


async def test_the_emulator_codes_fec_only_for_a_client_that_declares_it_at_the_loss_it_reports() -> None:
    """RFC 7587 6.1 / libwebrtc: in-band FEC for a receiver that offered useinbandfec=1, at the loss its RTCP
    receiver reports give (every 8th packet lost: ~12 %); a receiver that declared nothing gets none."""
    call, encoder = await _call_emulator(declare_fec=True, lose_every=8)
    assert encoder is not None and 5 <= encoder.loss_perc <= 20, encoder
    assert call.fec_loss.smoothed is not None and 4 < call.fec_loss.smoothed < 20
    _, plain = await _call_emulator(declare_fec=False, lose_every=8)
    assert plain is None  # aiortc's own encoder, no FEC
