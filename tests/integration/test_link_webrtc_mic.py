"""A WebRTC connection keeps the microphone closed until the data channel is open (both ends' DTLS is then
up), so the server's input timeline and ours start with the same frame. Through the real connector and
station, on aiortc's RTP loops and on the short paths."""

from __future__ import annotations

import time

import aiohttp
import pytest

from bridge.call.connector import Connector
from bridge.call.record import CallRecord
from bridge.call.station import Station
from bridge.config import Credentials, FastRtp
from bridge.emulator.testing import running_emulator
from bridge.link.webrtc import WebRTCLink
from bridge.media.paced import PacedSource
from bridge.media.track import MicTrack
from bridge.protocol.session_config import realtime_session
from bridge.rtc.loopback import loopback_candidates
from bridge.transcript import TranscriptWriter
from tests.helpers import Quiet, until


@pytest.mark.parametrize("fast_rtp", ["on", "off"], ids=["short-paths", "aiortc-loops"])
async def test_no_microphone_audio_before_the_data_channel_opens(
    tmp_path, monkeypatch: pytest.MonkeyPatch, fast_rtp: FastRtp
) -> None:
    station = Station.for_devices("null", "null", paced_replies=True)
    source = station.source
    assert isinstance(source, PacedSource)
    at_release: list[tuple[float, int, int, float | None]] = []
    release = MicTrack.release

    def recording_release(self: MicTrack) -> None:
        at_release.append((time.monotonic(), self.frames_sent, self.held_dropped, source.start_mono))
        release(self)

    monkeypatch.setattr(MicTrack, "release", recording_release)
    tw = TranscriptWriter(tmp_path / "t.jsonl")
    async with running_emulator(behaviour="echo") as emu, aiohttp.ClientSession() as http:
        creds = Credentials(api_key=emu.api_key, api_base=emu.base_url)
        connector = Connector(http, creds, station, fast_rtp=fast_rtp)
        with loopback_candidates():
            conn = await connector.open(realtime_session("gpt-realtime", "marin", None), CallRecord(tw, Quiet()))
            try:
                link, mic = conn.link, conn.uplink
                assert isinstance(link, WebRTCLink) and isinstance(mic, MicTrack)
                assert len(at_release) == 1
                released_at, sent_before, held_before, started_before = at_release[0]
                # nothing sent, nothing even captured for it: the microphone was not open yet
                assert sent_before == 0 and held_before == 0 and started_before is None
                conn.attach_mic()  # what the supervisor does once the session has started
                async with station.running():
                    await until(lambda: mic.frames_sent >= 10, "microphone frames after the data channel opened", 5)
                assert source.start_mono is not None and source.start_mono >= released_at
                assert mic.held_dropped == 0
                if fast_rtp == "on":
                    assert link.fast_stats is not None and link.fast_stats.rtp_out >= 5
            finally:
                await conn.aclose()
