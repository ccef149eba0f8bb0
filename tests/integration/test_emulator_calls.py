"""``/v1/realtime/calls`` through the official SDK (multipart + Location), the sideband WS, hangup.

The sideband test uses a stand-in call object so it runs without the WebRTC answerer; the SDK test
makes a real aiortc offer and lets the emulator answer it (no media flows here; see
test_emulator_webrtc.py for audio).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from emulator_client import checked_emulator, offering_peer

from bridge.emulator.session_config import default_session
from bridge.emulator.testing import RunningEmulator


class StandInCall:
    """What rest/ws need from ``webrtc.RtcCall``: id, engine, aclose, wait_closed."""

    def __init__(self, engine: Any) -> None:
        self.id = "rtc_" + "0" * 32
        self.engine = engine
        self._closed = asyncio.Event()

    async def aclose(self) -> None:
        await self.engine.aclose()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


@pytest.fixture
async def emu() -> AsyncIterator[RunningEmulator]:
    async with checked_emulator(think_ms=0, reply_seconds=0.3, speed=20.0) as e:
        yield e


async def test_sideband_sees_call_events_and_can_drive_the_session(emu: RunningEmulator) -> None:
    engine = emu.state.new_engine(default_session("gpt-realtime"), "webrtc")
    engine.start()
    channel: list[dict[str, Any]] = []
    engine.add_listener(channel.append)  # the call's "data channel"
    call = StandInCall(engine)
    emu.state.calls[call.id] = call
    emu.state.watch_call(call)
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    async with client.realtime.connect(call_id=call.id) as side:
        first = await side.recv()
        assert first.type == "session.created" and first.session.id == engine.id
        await side.session.update(session={"type": "realtime", "instructions": "from the server side"})
        assert (await side.recv()).type == "session.updated"
        await side.response.create(response={"output_modalities": ["text"]})
        while (event := await side.recv()).type != "response.done":
            pass
        assert event.response.status == "completed"
    # the data channel saw the same events (after its own session.created)
    seen = [e["type"] for e in channel]
    assert seen[0] == "session.created" and "session.updated" in seen and "response.done" in seen
    assert engine.session["instructions"] == "from the server side"
    sideband_in = [r for r in emu.log_events("in") if r["transport"] == "sideband"]
    assert sideband_in and sideband_in[0]["event"]["type"] == "session.update"
    async with aiohttp.ClientSession() as http:
        url = f"{emu.base_url}/realtime/calls/{call.id}/hangup"
        async with http.post(url, headers={"Authorization": f"Bearer {emu.api_key}"}) as r:
            assert r.status == 200
    assert engine.closed and call.id not in emu.state.calls


async def test_sdk_creates_a_call_and_hangs_up(emu: RunningEmulator) -> None:
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    async with offering_peer() as pc:
        answer = await client.realtime.calls.with_raw_response.create(
            sdp=pc.localDescription.sdp,
            session={"type": "realtime", "model": "gpt-realtime", "instructions": "hi"},
        )
        assert answer.status_code == 201
        assert answer.headers["content-type"].startswith("application/sdp")
        location = answer.headers["location"]
        call_id = location.split("/")[-1]
        assert location == f"/v1/realtime/calls/{call_id}" and call_id.startswith("rtc_") and len(call_id) == 36
        sdp = answer.text
        assert sdp.startswith("v=0") and "m=audio" in sdp and "m=application" in sdp
        call = emu.state.calls[call_id]
        assert call.engine.session["instructions"] == "hi"
        await client.realtime.calls.hangup(call_id)
        assert call_id not in emu.state.calls and call.engine.closed


async def test_calls_with_ephemeral_key_use_the_secret_session(emu: RunningEmulator) -> None:
    client = openai.AsyncOpenAI(api_key=emu.api_key, base_url=emu.base_url)
    secret = await client.realtime.client_secrets.create(
        session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
    )
    async with offering_peer() as pc, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {secret.value}", "Content-Type": "application/sdp"}
        async with http.post(f"{emu.base_url}/realtime/calls", data=pc.localDescription.sdp, headers=headers) as r:
            assert r.status == 201, await r.text()
            call_id = r.headers["Location"].split("/")[-1]
        call = emu.state.calls[call_id]
        assert call.engine.session["audio"]["output"]["voice"] == "cedar"
        assert json.dumps(call.engine.session)  # a plain JSON session
        await call.aclose()
