"""AgentController over the real Runtime and PlayoutBuffer with a scripted server (no sockets).

Checks the exact client events on a handoff (session.update BEFORE function_call_output BEFORE
response.create), that response.create waits for the call's response to finish, the tool list after
a switch, tool output and errors, and the transcript's tool/handoff lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.agents import AgentController, load_agents
from bridge.agents.config import HANDOFF_NOTE
from tests.helpers import Quiet, scripted_runtime, transcript_lines, until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


class Harness:
    def __init__(self, tmp_path: Path, agents_file: Path) -> None:
        self.agents = load_agents(agents_file)
        self.ctrl = AgentController(self.agents)
        self.rt, self.link, _ = scripted_runtime(tmp_path, "ws", tools=self.ctrl)
        console = self.rt.record.console
        assert isinstance(console, Quiet)
        self.console = console
        self.n = 0

    def emit(self, etype: str, **fields: Any) -> None:
        self.n += 1
        self.link.emit({"type": etype, "event_id": f"event_{self.n}", **fields})

    def call(self, rid: str, name: str, args: dict[str, Any], call_id: str) -> None:
        self.emit(
            "response.function_call_arguments.done",
            response_id=rid,
            item_id=f"item_{call_id}",
            output_index=0,
            call_id=call_id,
            name=name,
            arguments=json.dumps(args),
        )

    def response(self, rid: str, done: bool = True) -> None:
        self.emit("response.created", response={"id": rid, "status": "in_progress"})

    def done(self, rid: str) -> None:
        self.emit("response.done", response={"id": rid, "status": "completed", "output": []})

    async def until(self, pred: Any, timeout: float = 2.0) -> None:
        await until(pred, f"the client events (sent so far: {self.link.sent_types()})", timeout)

    def lines(self) -> list[dict[str, Any]]:
        return transcript_lines(self.rt.record.transcript.path)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, agents_file: Path) -> AsyncIterator[Harness]:
    """A harness whose runtime runs (session created) for the duration of the block."""
    harness = Harness(tmp_path, agents_file)
    harness.emit("session.created", session={"id": "sess_1", "model": "gpt-realtime", "audio": {}})
    task = asyncio.create_task(harness.rt.run())
    try:
        yield harness
    finally:
        harness.link.end()
        await asyncio.wait_for(task, 2)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path, EXAMPLES / "korean" / "agents.toml") as harness:
        yield harness


async def test_handoff_order_and_new_agent_config(h: Harness) -> None:
    h.response("resp_1")
    h.call("resp_1", "transfer_to_korean_20s", {"reason": "Korean speaker, 24"}, "call_a")
    h.done("resp_1")
    await h.until(lambda: "response.create" in h.link.sent_types())
    assert h.link.sent_types() == ["session.update", "conversation.item.create", "response.create"]
    update, output, _ = h.link.sent
    session = update["session"]
    assert session["type"] == "realtime"
    assert session["instructions"] == h.agents.agents["korean_20s"].instructions + HANDOFF_NOTE
    assert [t["name"] for t in session["tools"]] == ["transfer_to_empathetic", "transfer_to_triage"]
    # only the transcription changes under audio: no format, no voice, no turn detection
    assert session["audio"] == {"input": {"transcription": {"model": "gpt-4o-mini-transcribe", "language": "ko"}}}
    assert output["item"] == {
        "type": "function_call_output",
        "call_id": "call_a",
        "output": json.dumps({"ok": True, "agent": "korean_20s"}),
    }
    assert h.ctrl.current.name == "korean_20s"
    assert [(x.from_agent, x.to_agent, x.reason) for x in h.ctrl.history] == [
        ("triage", "korean_20s", "Korean speaker, 24")
    ]
    await h.until(lambda: any(line["kind"] == "handoff" for line in h.lines()))
    handoff = next(line for line in h.lines() if line["kind"] == "handoff")
    assert (handoff["from"], handoff["to"], handoff["reason"]) == ("triage", "korean_20s", "Korean speaker, 24")
    assert ("handoff", "triage -> korean_20s: Korean speaker, 24") in h.console.lines


async def test_response_create_waits_for_the_calls_response(h: Harness) -> None:
    h.response("resp_1")
    h.call("resp_1", "transfer_to_empathetic", {"reason": "sad"}, "call_a")
    await h.until(lambda: "conversation.item.create" in h.link.sent_types())
    await asyncio.sleep(0.05)
    assert "response.create" not in h.link.sent_types()  # resp_1 is still active
    h.done("resp_1")
    await h.until(lambda: "response.create" in h.link.sent_types())


async def test_tool_list_after_switch_and_tool_call(h: Harness) -> None:
    h.response("resp_1")
    h.call("resp_1", "transfer_to_empathetic", {"reason": "stressed"}, "call_a")
    h.done("resp_1")
    await h.until(lambda: h.link.sent_types().count("response.create") == 1)
    names = [t["name"] for t in h.link.sent[0]["session"]["tools"]]
    assert names == ["record_emotion_score", "crisis_resources", "transfer_to_korean_20s", "transfer_to_triage"]
    # the new agent's tool works right away: no "tool not found" after the switch
    h.response("resp_2")
    h.call("resp_2", "record_emotion_score", {"emotion": "불안", "score": 70}, "call_b")
    h.done("resp_2")
    await h.until(lambda: h.link.sent_types().count("response.create") == 2)
    out = h.link.sent[-2]
    assert out["type"] == "conversation.item.create"
    assert json.loads(out["item"]["output"]) == {"emotion": "불안", "score": 70, "moment": "before", "recorded": True}
    await h.until(lambda: any(line["kind"] == "tool" for line in h.lines()))
    tool = next(line for line in h.lines() if line["kind"] == "tool")
    assert tool["name"] == "record_emotion_score" and tool["agent"] == "empathetic"
    assert tool["arguments"] == {"emotion": "불안", "score": 70}
    assert tool["result"]["recorded"] is True and tool["ok"] is True
    assert isinstance(tool["duration_ms"], float)


async def test_several_calls_in_one_response_get_one_response_create(h: Harness) -> None:
    h.response("resp_1")
    h.call("resp_1", "get_weather", {"city": "Seoul"}, "call_a")
    h.call("resp_1", "get_weather", {"city": "Busan"}, "call_b")
    h.done("resp_1")
    await h.until(lambda: h.link.sent_types().count("conversation.item.create") == 2)
    await h.until(lambda: "response.create" in h.link.sent_types())
    await asyncio.sleep(0.05)
    assert h.link.sent_types().count("response.create") == 1
    assert h.link.sent_types()[-1] == "response.create"


async def test_errors_and_unknown_tools_go_back_to_the_model(h: Harness) -> None:
    h.response("resp_1")
    h.call("resp_1", "record_emotion_score", {"emotion": "x", "score": 1}, "call_a")  # not triage's tool
    h.done("resp_1")
    await h.until(lambda: "response.create" in h.link.sent_types())
    out = json.loads(h.link.sent[0]["item"]["output"])
    assert out == {"error": "tool 'record_emotion_score' is not available to agent 'triage'"}
    h.response("resp_2")
    h.call("resp_2", "get_weather", {"town": "Seoul"}, "call_b")  # bad arguments
    h.done("resp_2")
    await h.until(lambda: h.link.sent_types().count("response.create") == 2)
    assert "bad arguments" in json.loads(h.link.sent[2]["item"]["output"])["error"]
    assert h.ctrl.tool_errors == 2
    assert h.ctrl.current.name == "triage"
    assert not h.rt.closed.is_set()  # the session carries on


async def test_on_event_hook_tracks_responses(h: Harness) -> None:
    """With the runtime feeding events (``on_event``) the controller needs no runtime internals."""
    from bridge.protocol import events as ev

    h.ctrl.on_event(ev.ResponseCreated("resp_9"))
    h.ctrl.on_event(ev.FunctionCall("resp_9", "item_x", "call_x", "get_weather", '{"city": "Jeju"}'))
    h.ctrl.on_event(ev.FunctionCall("resp_9", "item_y", "call_y", "get_weather", '{"city": "Seoul"}'))
    task = asyncio.create_task(
        h.ctrl.on_function_call(ev.FunctionCall("resp_9", "item_x", "call_x", "get_weather", '{"city": "Jeju"}'), h.rt)
    )
    await h.until(lambda: "conversation.item.create" in h.link.sent_types())
    h.ctrl.on_event(ev.ResponseDone("resp_9", "completed", None))
    await asyncio.wait_for(task, 1)
    assert "response.create" not in h.link.sent_types()  # call_y is still unanswered
    await h.ctrl.on_function_call(
        ev.FunctionCall("resp_9", "item_y", "call_y", "get_weather", '{"city": "Seoul"}'), h.rt
    )
    assert h.link.sent_types() == ["conversation.item.create", "conversation.item.create", "response.create"]


async def test_english_example_front_desk_to_weather(tmp_path: Path) -> None:
    async with running(tmp_path, EXAMPLES / "weather" / "agents.toml") as h:
        h.response("resp_1")
        h.call("resp_1", "transfer_to_weather", {"reason": "asks about Paris weather"}, "call_a")
        h.done("resp_1")
        await h.until(lambda: h.link.sent_types().count("response.create") == 1)
        update = h.link.sent[0]["session"]
        assert "audio" not in update  # same transcription language: nothing under audio at all
        assert [t["name"] for t in update["tools"]] == ["get_weather", "transfer_to_front_desk"]
        h.response("resp_2")
        h.call("resp_2", "get_weather", {"city": "Paris"}, "call_b")
        h.done("resp_2")
        await h.until(lambda: h.link.sent_types().count("response.create") == 2)
        result = json.loads(h.link.sent[-2]["item"]["output"])
        assert result["city"] == "Paris" and result["unit"] == "celsius"


async def test_handoff_back_clears_the_transcription_language(h: Harness) -> None:
    h.response("resp_1")
    h.call("resp_1", "transfer_to_korean_20s", {"reason": "24"}, "call_a")
    h.done("resp_1")
    await h.until(lambda: h.link.sent_types().count("response.create") == 1)
    h.response("resp_2")
    h.call("resp_2", "transfer_to_triage", {"reason": "wants English"}, "call_b")
    h.done("resp_2")
    await h.until(lambda: h.link.sent_types().count("response.create") == 2)
    back = h.link.sent[3]
    assert back["type"] == "session.update"
    assert back["session"]["audio"] == {"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}}
    assert [x.to_agent for x in h.ctrl.history] == ["korean_20s", "triage"]
