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
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from bridge.agents import AgentController, AgentSet, load_agents
from bridge.agents.sideband import create_call, run_sideband
from bridge.app.run import WEBRTC_PLAYOUT_TARGET_MS
from bridge.config import Credentials
from bridge.emulator.testing import RunningEmulator, running_emulator
from bridge.link import http as rest
from bridge.link.base import RealtimeLink
from bridge.link.webrtc import WebRTCLink
from bridge.link.ws import WebSocketLink
from bridge.media.null import NullSink, NullSource
from bridge.media.playout import PlayoutBuffer
from bridge.media.track import MicTrack
from bridge.protocol.session import realtime_session
from bridge.rtc.loopback import loopback_candidates
from bridge.session import Runtime
from bridge.transcript import TranscriptWriter

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ROOT / "examples" / "agents" / "korean" / "agents.toml"
SCRIPT = ROOT / "examples" / "agents" / "korean" / "emulator_script.toml"
USER_TURNS = {
    0: "안녕하세요, 저는 스물네 살이에요.",
    2: "사실 요즘 취업 준비 때문에 너무 불안하고 우울해요.",
    4: "한 70 정도요.",
}
EXPECTED_AGENT = ["triage", "korean_20s", "korean_20s", "empathetic", "empathetic", "empathetic"]


class Quiet:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def line(self, who: str, text: str) -> None:
        self.lines.append((who, text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))


async def until(pred: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


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


async def run_flow(tmp_path: Path, emu: RunningEmulator, http: aiohttp.ClientSession, transport: str) -> None:
    agents = load_agents(AGENTS)
    ctrl = AgentController(agents)
    session = ctrl.session_config(realtime_session("gpt-realtime", "marin", None))
    session["audio"]["input"]["turn_detection"] = None  # text turns only: the test drives each response
    box: list[Runtime] = []
    link: RealtimeLink
    if transport == "ws":
        link = WebSocketLink(http, emu.base_url, "gpt-realtime", emu.api_key, None)
    else:
        creds = Credentials(api_key=emu.api_key, api_base=emu.base_url)
        ek = await rest.mint_key(http, creds, session)
        link = WebRTCLink(
            http,
            emu.base_url,
            ek.value,
            MicTrack(NullSource()),
            lambda f: box[0].on_remote_audio(f),
            hangup_key=emu.api_key,
        )
    tw = TranscriptWriter(tmp_path / "t.jsonl")
    tw.open()
    playout = PlayoutBuffer(target_ms=WEBRTC_PLAYOUT_TARGET_MS if transport == "webrtc" else None)  # as bridge run
    rt = Runtime(link, playout, tw, Quiet(), tools=ctrl)
    box.append(rt)
    sink = NullSink()  # plays the replies in real time: the transcript writes a reply once it was heard
    await sink.start(playout.pull)
    await link.connect()
    if transport == "ws":
        await link.send({"type": "session.update", "session": {k: v for k, v in session.items() if k != "model"}})
    pumps = [link.pump_audio()] if isinstance(link, WebRTCLink) else []
    task = asyncio.create_task(rt.run(*pumps))
    try:
        if transport == "ws":
            await drive(emu, rt.send, lambda: assistant_lines(tw.path))  # written once played
        else:
            # Over WebRTC the runtime holds the LAST reply's line until the next reply or the end of the
            # call (idle silence frames keep counting as its audio), so go by the server's playback.
            await drive(emu, rt.send, lambda: played_on_the_wire(emu))
        check_server_side(emu, agents)  # while the call (and its engine) is still up
    finally:
        await link.aclose()
        await sink.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
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
                pc.addTrack(MicTrack(NullSource()))
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
