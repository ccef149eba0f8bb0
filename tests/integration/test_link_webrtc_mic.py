"""WebRTCLink keeps the microphone closed until the data channel is open (both ends' DTLS is then up), so the
server's input timeline and ours start with the same frame. On aiortc's RTP loops and on the short paths."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bridge.config import Credentials
from bridge.emulator.testing import running_emulator
from bridge.link import http as rest
from bridge.link.webrtc import WebRTCLink
from bridge.media.null import NullSource
from bridge.media.track import MicTrack
from bridge.protocol.session import realtime_session
from bridge.rtc.loopback import loopback_candidates
from bridge.rtc.opus import LibopusEncoder


@pytest.mark.parametrize("fast_rtp", [True, False], ids=["short-paths", "aiortc-loops"])
async def test_no_microphone_audio_before_the_data_channel_opens(fast_rtp: bool) -> None:
    source = NullSource()
    mic = MicTrack(source, encoder=LibopusEncoder())
    at_release: list[tuple[float, int, float | None]] = []
    release = mic.release

    def recording_release() -> None:
        at_release.append((time.monotonic(), mic.frames_sent, source.start_mono))
        release()

    mic.release = recording_release  # type: ignore[method-assign]
    async with running_emulator(behaviour="echo") as emu, aiohttp.ClientSession() as http:
        creds = Credentials(api_key=emu.api_key, api_base=emu.base_url)
        ek = await rest.mint_key(http, creds, realtime_session("gpt-realtime", "marin", None))
        link = WebRTCLink(
            http, emu.base_url, ek.value, mic, lambda frame: None, hangup_key=emu.api_key, fast_rtp=fast_rtp
        )
        with loopback_candidates():
            try:
                await link.connect()
                assert len(at_release) == 1
                released_at, frames_before, started_before = at_release[0]
                assert frames_before == 0 and started_before is None  # nothing pulled, the mic not even open
                deadline = time.monotonic() + 5
                while mic.frames_sent < 10:  # and then audio flows
                    assert time.monotonic() < deadline, "no microphone frames after the data channel opened"
                    await asyncio.sleep(0.02)
                assert source.start_mono is not None and source.start_mono >= released_at
                if fast_rtp:
                    assert link.fast_stats is not None and link.fast_stats.rtp_out >= 5
            finally:
                await link.aclose()
