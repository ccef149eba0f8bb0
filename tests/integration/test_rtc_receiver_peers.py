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
