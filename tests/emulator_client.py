"""A minimal WebRTC Realtime client for the emulator's tests (not bridge.link): aiortc on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bridge.emulator.testing import RunningEmulator, running_emulator
from bridge.rtc.loopback import loopback_candidates
from bridge.rtc.receiver import AudioReceiver, receiver_for_track
from bridge.rtc.testing import tone
from bridge.rtc.tracks import FRAME_SAMPLES, PacedAudioTrack

LOUD = 2000  # int16 peak that counts as "audio" (the reply tone and our bursts are far above it)


class Client:
    """A minimal WebRTC Realtime client: mic = scripted frames, speaker = AudioReceiver, events = list."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic: deque[np.ndarray] = deque()
        self.pulled = 0  # frames the mic track asked for: this client's own 20 ms clock
        self._tick = asyncio.Event()
        self.burst_sent_at: list[float] = []  # when each burst's first frame went to the wire
        self.track = PacedAudioTrack(self._pull)
        self.events: list[dict[str, Any]] = []
        self.event_times: list[float] = []
        self._new_event = asyncio.Event()
        self.heard: list[tuple[float, int]] = []  # (time, peak) per received 20 ms frame
        self.onsets: list[float] = []
        self.onset = asyncio.Event()
        self.peer_closed = asyncio.Event()
        self._loud = False
        self.rx = AudioReceiver(self._on_audio)
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        self.call_path = ""

    def _on_state(self) -> None:
        if self.pc.connectionState in ("closed", "failed"):
            self.peer_closed.set()

    def _pull(self) -> np.ndarray | None:
        self.pulled += 1  # called once per 20 ms frame by the paced track
        self._tick.set()
        if not self.mic:
            return None
        frame = self.mic.popleft()
        if getattr(frame, "first", False):
            self.burst_sent_at.append(time.monotonic())
        return np.asarray(frame)

    def say(self, seconds: float, freq: float = 300.0) -> None:
        """Queue a tone burst followed by silence (enough for the server VAD to end the turn)."""
        pcm = tone(seconds, freq, level=0.5)
        frames = [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
        first = _Marked(frames[0])
        self.mic.extend([first, *frames[1:]])

    def _on_track(self, track: Any) -> None:
        self.rx.attach(receiver_for_track(self.pc, track))

    def _on_audio(self, frame: np.ndarray) -> None:
        now = time.monotonic()
        peak = int(np.abs(frame).max())
        self.heard.append((now, peak))
        if peak > LOUD and not self._loud:
            self.onsets.append(now)
            self.onset.set()
        self._loud = peak > LOUD // 2

    def _on_message(self, message: str | bytes) -> None:
        assert isinstance(message, str), "events are JSON text messages"
        self.events.append(json.loads(message))
        self.event_times.append(time.monotonic())
        self._new_event.set()

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_event(self, etype: str, timeout: float = 5.0, after: int = 0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for e in self.events[after:]:
                    if e["type"] == etype:
                        return e
                self._new_event.clear()
                await self._new_event.wait()

    async def frames(self, n: int, timeout: float = 5.0) -> None:
        """Wait until this client's own paced mic clock has sent ``n`` more 20 ms frames (a clock, not a sleep:
        an absence check then covers a known stretch of the call)."""
        target = self.pulled + n
        async with asyncio.timeout(timeout):
            while self.pulled < target:
                self._tick.clear()
                await self._tick.wait()

    async def connect(self, emu: RunningEmulator, http: aiohttp.ClientSession) -> None:
        async with http.post(
            f"{emu.base_url}/realtime/client_secrets",
            headers={"Authorization": f"Bearer {emu.api_key}"},
            json={"session": {"type": "realtime", "model": "gpt-realtime"}},
        ) as r:
            assert r.status == 200, await r.text()
            ek = (await r.json())["value"]
        self.pc.addTrack(self.track)
        with loopback_candidates():
            await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(
            f"{emu.base_url}/realtime/calls",
            data=self.pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {ek}", "Content-Type": "application/sdp"},
        ) as r:
            assert r.status == 201, await r.text()
            assert r.content_type == "application/sdp"
            self.call_path = r.headers["Location"]
            answer = await r.text()
        assert self.call_path.startswith("/v1/realtime/calls/rtc_")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def close(self) -> None:
        self.rx.close()
        await self.pc.close()


class _Marked(np.ndarray):
    """A frame flagged as the first of a burst (so the pull records its send time)."""

    def __new__(cls, arr: np.ndarray) -> _Marked:
        obj = np.asarray(arr).view(cls)
        obj.first = True  # type: ignore[attr-defined]
        return obj


@contextlib.asynccontextmanager
async def connected_client(emu: RunningEmulator, http: aiohttp.ClientSession) -> AsyncIterator[Client]:
    """A :class:`Client` with its call up and ``session.created`` received; closed on exit."""
    client = Client()
    try:
        async with asyncio.timeout(10):
            await client.connect(emu, http)
            await client.wait_event("session.created")
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def checked_emulator(**overrides: Any) -> AsyncIterator[RunningEmulator]:
    """``running_emulator(**overrides)``; on exit every server event it sent must validate (SDK types, spec)."""
    from spec_oracle import assert_valid_server_events

    async with running_emulator(**overrides) as emu:
        yield emu
        assert_valid_server_events(emu.server_events())


@contextlib.asynccontextmanager
async def offering_peer() -> AsyncIterator[RTCPeerConnection]:
    """An aiortc peer with the ``oai-events`` channel and an audio transceiver, its offer set (loopback ICE)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        with loopback_candidates():
            pc.createDataChannel("oai-events")
            pc.addTransceiver("audio", direction="sendrecv")
            await pc.setLocalDescription(await pc.createOffer())
        yield pc
    finally:
        await pc.close()
