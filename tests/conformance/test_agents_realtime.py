"""openai-agents' realtime runner, unmodified, against ``bridge emulate`` (issue 19 conformance).

Over the WebSocket (``OpenAIRealtimeWebSocketModel`` with ``url``) and over a call's sideband
(``OpenAIRealtimeSIPModel`` with ``call_id``, the way OpenAI's SIP example attaches): a function tool,
a handoff, a spoken turn ended by server VAD and a barge-in the SDK truncates itself. Asserted on what the
SDK reports (its session events: tool_start/tool_end, handoff, agent_start, audio, audio_interrupted,
error) and, for the truncate, on what reached the emulator. Every server event validates against the
official SDK types and the spec.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from agents import function_tool, set_tracing_disabled
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from agents.realtime.openai_realtime import OpenAIRealtimeSIPModel, OpenAIRealtimeWebSocketModel
from emulator_client import connected_client
from spec_oracle import assert_valid_server_events

from bridge.emulator.testing import RunningEmulator, running_emulator

set_tracing_disabled(True)  # no trace export: nothing may leave 127.0.0.1
RATE = 24_000

SCRIPT = {
    "turns": [
        {"function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"text": "It is sunny in Paris.", "audio": "tone", "seconds": 0.4},
        {"function_calls": [{"name": "transfer_to_french_agent", "arguments": {}}]},
        {"text": "Bonjour, je suis l'agent français.", "audio": "tone", "seconds": 0.4},
        {"text": "A long answer that the user will interrupt.", "audio": "tone", "seconds": 6.0},
        {"text": "Yes?", "audio": "tone", "seconds": 0.3},
    ]
}
weather_calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    weather_calls.append(city)
    return f"sunny in {city}"


def make_agents() -> RealtimeAgent:
    french = RealtimeAgent(name="french_agent", instructions="Parle français.", handoff_description="French")
    return RealtimeAgent(name="triage", instructions="Help with the weather.", tools=[get_weather], handoffs=[french])


def speech(tone_ms: int, silence_ms: int = 600) -> bytes:
    t = np.arange(int(RATE * tone_ms / 1000)) / RATE
    pcm = np.concatenate([0.4 * np.sin(2 * np.pi * 250 * t), np.zeros(int(RATE * silence_ms / 1000))])
    return (pcm * 32767).astype(np.int16).tobytes()


class Seen:
    """The SDK's session events, read in order; ``until`` waits (with a deadline) for the next match."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.events: list[Any] = []
        self._iter = session.__aiter__()

    async def until(self, etype: str, timeout: float = 10.0, **match: Any) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                event = await anext(self._iter)
                self.events.append(event)
                assert event.type != "error", f"the SDK reported an error: {event}"
                if event.type == etype and all(getattr(event, k, None) == v for k, v in match.items()):
                    return event

    def types(self) -> list[str]:
        return [e.type for e in self.events]


@pytest.fixture
async def emu(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(SCRIPT))
    weather_calls.clear()
    async with running_emulator(behaviour=f"script:{script}", think_ms=0, speed=20.0) as e:
        yield e
        assert_valid_server_events(e.server_events())


async def drive_conversation(seen: Seen, emu: RunningEmulator, session: RealtimeSession) -> None:
    """Tool call, handoff, a spoken turn and a barge-in, asserted on the SDK's own events."""
    await session.send_message("What's the weather in Paris?")
    end = await seen.until("tool_end")
    assert end.tool.name == "get_weather" and "sunny in Paris" in str(end.output) and weather_calls == ["Paris"]
    await seen.until("audio_end")
    await session.send_message("Speak French please")
    handoff = await seen.until("handoff")
    assert (handoff.from_agent.name, handoff.to_agent.name) == ("triage", "french_agent")
    await seen.until("audio_end")
    instructions = [e["session"].get("instructions") for e in emu.server_events() if e["type"] == "session.updated"]
    assert instructions[-1] == "Parle français."  # the new agent's instructions reached the session
    # a spoken turn: server VAD ends it, the long reply starts; then the user talks over it
    await session.send_audio(speech(500))
    await seen.until("audio")
    await session.send_audio(speech(400))
    await seen.until("audio_interrupted")
    await seen.until("audio_end")


async def replies(emu: RunningEmulator, n: int, timeout: float = 10.0) -> None:
    """Wait until the emulator has finished ``n`` responses."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(1 for e in emu.server_events() if e["type"] == "response.done") < n:
        assert loop.time() < deadline, f"no {n} responses in {timeout} s"
        await asyncio.sleep(0.02)


def truncates(emu: RunningEmulator) -> list[dict[str, Any]]:
    return [r["event"] for r in emu.log_events("in") if r["event"].get("type") == "conversation.item.truncate"]


async def test_agents_over_websocket(emu: RunningEmulator) -> None:
    runner = RealtimeRunner(make_agents(), model=OpenAIRealtimeWebSocketModel())
    config = {"url": f"{emu.ws_url}?model=gpt-realtime", "api_key": emu.api_key}
    session = await runner.run(model_config=config)
    async with session:
        seen = Seen(session)
        await drive_conversation(seen, emu, session)
    assert "agent_start" in seen.types()
    cuts = truncates(emu)
    assert cuts, "the SDK truncated what it had played"
    truncated = {e["item_id"] for e in emu.server_events() if e["type"] == "conversation.item.truncated"}
    assert {c["item_id"] for c in cuts} <= truncated  # ... and the emulator accepted every truncate
    errors = [e for e in emu.server_events() if e["type"] == "error"]
    assert errors == [], errors


async def test_agents_attach_to_a_call_over_the_sideband(emu: RunningEmulator) -> None:
    """The way OpenAI's SIP example attaches: call_id, the SDK's own default model in session.update."""
    async with aiohttp.ClientSession() as http:
        async with connected_client(emu, http) as call:
            call_id = call.call_path.rsplit("/", 1)[1]
            runner = RealtimeRunner(make_agents(), model=OpenAIRealtimeSIPModel())
            config = {"url": f"{emu.ws_url}?call_id={call_id}", "api_key": emu.api_key, "call_id": call_id}
            session = await runner.run(model_config=config)
            async with session:
                seen = Seen(session)
                await session.send_message("What's the weather in Paris?")
                end = await seen.until("tool_end")
                assert end.tool.name == "get_weather" and weather_calls == ["Paris"]
                await replies(emu, 2)  # the answer to the tool output (audio goes to the call, not to us)
                await session.send_message("Speak French please")
                handoff = await seen.until("handoff")
                assert handoff.to_agent.name == "french_agent"
                await seen.until("agent_start", agent=handoff.to_agent)
                await replies(emu, 4)  # the French agent's greeting
                call.say(0.6)  # the caller speaks: server VAD on the call ends the turn, the long reply starts
                await seen.until("history_added")
                await call.wait_event("output_audio_buffer.started", after=len(call.events))
                started = len(call.events)
                call.say(0.5)  # ... and talks over it: the server cuts the reply where it is on the wire
                truncated = await call.wait_event("conversation.item.truncated", after=started)
                async with asyncio.timeout(10):  # the SDK's history comes to hold the reply that was cut
                    while truncated["item_id"] not in [
                        i.item_id for i in (await seen.until("history_updated")).history
                    ]:
                        pass
                sent = [r["event"].get("type") for r in emu.log_events("in") if r["transport"] == "sideband"]
                assert "conversation.item.truncate" not in sent  # over WebRTC the server truncates by itself
            (engine,) = emu.state.open_engines()
            assert engine.session["instructions"] == "Parle français."
            assert engine.session["model"] == "gpt-realtime"  # the call's model; the SDK's gpt-realtime-2.1 ignored
            assert [t["name"] for t in engine.session["tools"]] == []  # french_agent has no tools
            errors = [e for e in emu.server_events() if e["type"] == "error"]
            assert errors == [], errors
