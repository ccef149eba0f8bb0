"""triage -> korean_20s -> empathetic end to end against the emulator's ``script:`` behaviour.

The real client stack (link + Runtime + AgentController) talks to a real emulator on 127.0.0.1 over
WebSocket, over WebRTC (data channel + media), and through the sideband of a call created the way
``bridge serve`` creates browser calls (API key, multipart ``sdp`` + ``session``). Checked from the
server's side: the instructions in force when each response started, the function_call_output items in
its conversation, no errors, formats and voice untouched; and from ours: the transcript's handoff and tool
lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from bridge.agents import AgentController, AgentSet, load_agents
from bridge.agents.sideband import create_call, run_sideband
from bridge.aio import task_group
from bridge.call.connector import Connector
from bridge.call.record import CallRecord
from bridge.call.station import Station
from bridge.config import Credentials
from bridge.emulator.testing import RunningEmulator, running_emulator
from bridge.link.base import Transport
from bridge.protocol.session_config import realtime_session
from bridge.rtc.loopback import loopback_candidates
from bridge.transcript import TranscriptWriter
from tests.helpers import Quiet, until

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
SCRIPT = ROOT / "examples" / "agents" / "korean" / "emulator_script.toml"
USER_TURNS = {
    0: "안녕하세요, 저는 스물네 살이에요.",
    2: "사실 요즘 취업 준비 때문에 너무 불안하고 우울해요.",
    4: "한 70 정도요.",
}
EXPECTED_AGENT = ["triage", "korean_20s", "korean_20s", "empathetic", "empathetic", "empathetic"]


def responses_done(emu: RunningEmulator) -> int:
    return sum(1 for e in emu.server_events() if e["type"] == "response.done")


def user_text(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


def assistant_lines(path: Path) -> int:
    return sum(1 for x in path.read_text().splitlines() if json.loads(x)["kind"] == "assistant")


def played_on_the_wire(emu: RunningEmulator) -> int:
    """WebRTC: replies whose audio the server finished sending (``output_audio_buffer.stopped``)."""
    return sum(1 for e in emu.server_events() if e["type"] == "output_audio_buffer.stopped")


async def drive(emu: RunningEmulator, send: Any, heard: Any) -> None:
    """Play the user's three turns, each once the previous reply was heard (``heard()`` replies so far).

    The model's function calls in between are answered by the controller under test.
    """
    for index, text in USER_TURNS.items():
        await until(lambda i=index: responses_done(emu) >= i, f"response {index}")
        await until(lambda i=index: heard() >= i // 2, f"reply before turn {index} heard")
        await send(user_text(text))
        await send({"type": "response.create"})
    await until(lambda: responses_done(emu) >= 6, "all six responses")
    await until(lambda: heard() >= 3, "the last reply heard")


def check_server_side(emu: RunningEmulator, agents: AgentSet) -> None:
    events = emu.server_events()
    assert not [e for e in events if e["type"] == "error"], [e for e in events if e["type"] == "error"]
    instructions = {agents.instructions_for(name): name for name in agents.agents}
    active: list[str] = []
    current = None
    for e in events:
        if e["type"] in ("session.created", "session.updated"):
            current = instructions.get(e["session"].get("instructions"), current)
        elif e["type"] == "response.created":
            active.append(current or "?")
    assert active == EXPECTED_AGENT  # the next reply always came from the new agent

    outputs = {
        e["item"]["call_id"]: json.loads(e["item"]["output"])
        for e in events
        if e["type"] == "conversation.item.done" and e["item"].get("type") == "function_call_output"
    }
    assert outputs["call_handoff_korean"] == {"ok": True, "agent": "korean_20s"}
    assert outputs["call_handoff_empathetic"] == {"ok": True, "agent": "empathetic"}
    assert outputs["call_score_before"] == {"emotion": "불안", "score": 70, "moment": "before", "recorded": True}

    (engine,) = emu.state.engines
    first = next(e for e in events if e["type"] == "session.created")["session"]
    assert engine.session["audio"]["input"]["format"] == first["audio"]["input"]["format"]
    assert engine.session["audio"]["output"]["format"] == first["audio"]["output"]["format"]
    assert engine.session["audio"]["output"]["voice"] == "marin"
    assert engine.session["audio"]["input"]["transcription"]["language"] == "ko"
    assert [t["name"] for t in engine.session["tools"]] == [t["name"] for t in agents.tools_for("empathetic")]


def check_transcript(path: Path) -> None:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    handoffs = [(x["from"], x["to"]) for x in lines if x["kind"] == "handoff"]
    assert handoffs == [("triage", "korean_20s"), ("korean_20s", "empathetic")]
    (tool,) = [x for x in lines if x["kind"] == "tool"]
    assert tool["name"] == "record_emotion_score" and tool["result"]["score"] == 70 and tool["ok"]
    said = [x["text"] for x in lines if x["kind"] == "assistant" and x["text"]]
    assert any("스물넷" in t for t in said) and any("숨을" in t for t in said)


@contextlib.asynccontextmanager
async def emulator() -> AsyncIterator[RunningEmulator]:
    async with running_emulator(behaviour=f"script:{SCRIPT}", think_ms=20, speed=20.0) as emu:
        yield emu


async def run_flow(tmp_path: Path, emu: RunningEmulator, http: aiohttp.ClientSession, transport: Transport) -> None:
    """The client stack as ``bridge run`` builds it: a station (null devices playing in real time, so the
    transcript writes a reply once it was heard), a connector, one connection with the agents' runtime."""
    agents = load_agents(AGENTS)
    ctrl = AgentController(agents)
    session = ctrl.session_config(realtime_session("gpt-realtime", "marin", None))
    session["audio"]["input"]["turn_detection"] = None  # text turns only: the test drives each response
    tw = TranscriptWriter(tmp_path / "t.jsonl")
    tw.open()
    creds = Credentials(api_key=emu.api_key, api_base=emu.base_url)
    station = Station.for_devices("null", "null", paced_replies=transport == "webrtc")
    async with station.running(), task_group() as tg:
        conn = await Connector(http, creds, station, transport=transport).open(session, CallRecord(tw, Quiet()), ctrl)
        running = tg.create_task(conn.run())
        try:
            if transport == "ws":
                await drive(emu, conn.runtime.send, lambda: assistant_lines(tw.path))  # written once played
            else:
                # Over WebRTC the runtime holds the LAST reply's line until the next reply or the end of the
                # call (idle silence frames keep counting as its audio), so go by the server's playback.
                await drive(emu, conn.runtime.send, lambda: played_on_the_wire(emu))
            check_server_side(emu, agents)  # while the call (and its engine) is still up
        finally:
            await conn.aclose()
            await asyncio.wait_for(running, 5)  # the runtime ends with its link
    tw.close()
    check_transcript(tw.path)
    assert [h.to_agent for h in ctrl.history] == ["korean_20s", "empathetic"]


@pytest.mark.parametrize("transport", ["ws", "webrtc"])
async def test_triage_to_korean_to_empathetic(tmp_path: Path, transport: str) -> None:
    with loopback_candidates():
        async with emulator() as emu, aiohttp.ClientSession() as http:
            await run_flow(tmp_path, emu, http, transport)


async def test_browser_call_through_the_sideband(tmp_path: Path) -> None:
    """A 'browser' (an aiortc peer that only offers) + the server side: create_call, then run_sideband."""
    agents = load_agents(AGENTS)
    session = agents.session_config(realtime_session("gpt-realtime", "marin", None))
    session["audio"]["input"]["turn_detection"] = None
    with loopback_candidates():
        async with emulator() as emu, aiohttp.ClientSession() as http:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            try:
                channel = pc.createDataChannel("oai-events")
                pc.addTrack(AudioStreamTrack())  # a browser's microphone, silent
                await pc.setLocalDescription(await pc.createOffer())
                answer, call_id = await create_call(http, emu.base_url, emu.api_key, pc.localDescription.sdp, session)
                from aiortc import RTCSessionDescription

                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
                opened = asyncio.Event()
                channel.on("open", opened.set)
                await asyncio.wait_for(opened.wait(), 10)

                tw = TranscriptWriter(tmp_path / "t.jsonl")
                tw.open()
                ctrl = AgentController(agents)
                side = asyncio.create_task(
                    run_sideband(http, emu.base_url, emu.api_key, call_id, agents, tw, controller=ctrl)
                )
                await until(lambda: any(e["type"] == "session.updated" for e in emu.server_events()), "sideband attach")

                async def browser_send(event: dict[str, Any]) -> None:  # the page's data channel
                    channel.send(json.dumps(event))

                await drive(emu, browser_send, lambda: played_on_the_wire(emu))
                await until(lambda: assistant_lines(tw.path) >= 3, "the server's transcript of the call")
                check_server_side(emu, agents)
                assert not side.done()
            finally:
                await pc.close()
            # the call ends with the browser peer: the sideband closes and run_sideband returns
            await asyncio.wait_for(side, 10)
            tw.close()
    check_transcript(tw.path)
    assert [h.to_agent for h in ctrl.history] == ["korean_20s", "empathetic"]
    first = json.loads(tw.path.read_text().splitlines()[0])
    assert first["kind"] == "session" and first["call_id"] == call_id and first["via"] == "sideband"
