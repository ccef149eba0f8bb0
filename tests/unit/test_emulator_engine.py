"""The transport-agnostic Engine: GA event sequences, misuse errors, barge-in (WS and WebRTC), scripts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from spec_oracle import assert_valid_server_events

from bridge.emulator.behaviours import load_behaviour
from bridge.emulator.config import EmulatorConfig
from bridge.emulator.engine import Engine
from bridge.emulator.session_config import default_session

RATE = 24_000
PCM16K = {"type": "audio/pcm", "rate": 16000}


def tone(ms: int, level: float = 0.3) -> bytes:
    t = np.arange(int(RATE * ms / 1000)) / RATE
    return (level * np.sin(2 * np.pi * 300 * t) * 32767).astype(np.int16).tobytes()


def silence(ms: int) -> bytes:
    return bytes(int(RATE * ms / 1000) * 2)


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


class Rec:
    """Collects an engine's events; ``wait`` polls with a deadline (no sleeping-and-hoping)."""

    def __init__(self, engine: Engine) -> None:
        self.events: list[dict[str, Any]] = []
        engine.add_listener(self.events.append)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == etype]

    async def wait(self, etype: str, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while len(self.of(etype)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}x {etype} in {timeout}s; got {self.types()}")
            await asyncio.sleep(0.005)
        return self.of(etype)[count - 1]

    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.of("error")]


async def poll(cond: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class FakeOut:
    """An AudioOut that 'sends' instantly and records what it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.bytes = 0
        self.sent_ms = -1

    def begin(self, response_id: str, item_id: str) -> None:
        self.calls.append(("begin", (response_id, item_id)))

    def write(self, pcm24: bytes) -> None:
        self.bytes += len(pcm24)

    def end(self) -> None:
        self.calls.append(("end", None))

    def interrupt(self) -> int:
        self.calls.append(("interrupt", None))
        self.sent_ms = self.bytes // 48 // 2  # pretend half of it made it onto the wire
        return self.sent_ms


def make(behaviour: str = "tone", transport: str = "ws", **cfg: Any) -> Engine:
    config = EmulatorConfig(**{"think_ms": 0, "speed": 50.0, "reply_seconds": 0.5, **cfg})
    return Engine(config, default_session("gpt-realtime"), load_behaviour(behaviour, config.reply_seconds),
                  transport=transport)  # fmt: skip


@contextlib.asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[Rec]:
    """Record and start ``engine``; on exit close it and validate every event it sent."""
    rec = Rec(engine)
    engine.start()
    try:
        yield rec
    finally:
        await engine.aclose()
    assert_valid_server_events(rec.events)


@pytest.fixture
async def eng() -> AsyncIterator[tuple[Engine, Rec]]:
    engine = make()
    async with running(engine) as rec:
        yield engine, rec


async def send(engine: Engine, **event: Any) -> None:
    await engine.handle_client_event(json.dumps(event))


RESPONSE_SEQUENCE = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
RESPONSE_TAIL = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
    "response.done",
    "rate_limits.updated",
]


async def test_session_created_is_buffered_until_first_listener() -> None:
    engine = make()
    engine.start()
    rec = Rec(engine)
    late = Rec.__new__(Rec)
    late.events = []
    engine.add_listener(late.events.append)
    assert rec.types() == ["session.created"]
    assert late.events == []  # later listeners only see new events
    s = rec.events[0]["session"]
    assert s["object"] == "realtime.session" and s["expires_at"] > time.time() + 3500
    await engine.aclose()


async def test_text_turn_has_exact_ga_sequence(eng: tuple[Engine, Rec]) -> None:
    engine, rec = eng
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    await send(engine, type="conversation.item.create", item=item)
    await send(engine, type="response.create")
    await rec.wait("rate_limits.updated")
    types = rec.types()
    assert types[:3] == ["session.created", "conversation.item.added", "conversation.item.done"]
    body = [t for t in types[3:] if not t.endswith(".delta")]
    assert body == RESPONSE_SEQUENCE + RESPONSE_TAIL
    deltas = rec.of("response.output_audio.delta")
    assert deltas and all(e["delta"] for e in deltas)
    audio = b"".join(base64.b64decode(e["delta"]) for e in deltas)
    assert len(audio) == 24_000  # 0.5 s of PCM16 24 kHz
    transcript = "".join(e["delta"] for e in rec.of("response.output_audio_transcript.delta"))
    assert transcript == rec.of("response.output_audio_transcript.done")[0]["transcript"] != ""
    done = rec.of("response.done")[0]["response"]
    assert done["status"] == "completed" and done["status_details"] is None
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]
    assert done["usage"]["total_tokens"] > 0
    assert rec.of("response.created")[0]["response"]["usage"] is None
    part = rec.of("response.content_part.added")[0]["part"]
    assert part == {"type": "audio", "transcript": ""}


async def test_ws_audio_is_generated_faster_than_real_time() -> None:
    engine = make(speed=4.0, reply_seconds=1.0)
    async with running(engine) as rec:
        t0 = time.monotonic()
        await send(engine, type="response.create")
        await rec.wait("response.done")
        elapsed = time.monotonic() - t0
        assert 0.15 < elapsed < 0.9, elapsed  # 1 s of audio at 4x ~ 0.25 s: faster than real time
        sizes = [len(base64.b64decode(e["delta"])) for e in rec.of("response.output_audio.delta")]
        assert max(sizes) == 80 * 48  # 80 ms chunks


async def test_text_modality(eng: tuple[Engine, Rec]) -> None:
    engine, rec = eng
    await send(engine, type="session.update", session={"type": "realtime", "output_modalities": ["text"]})
    await send(engine, type="response.create")
    await rec.wait("response.done")
    assert not rec.of("response.output_audio.delta")
    assert rec.of("response.content_part.added")[0]["part"] == {"type": "text", "text": ""}
    text = "".join(e["delta"] for e in rec.of("response.output_text.delta"))
    assert text and rec.of("response.output_text.done")[0]["text"] == text


async def test_session_update_merges_and_reports_full_config(eng: tuple[Engine, Rec]) -> None:
    engine, rec = eng
    await send(
        engine,
        type="session.update",
        event_id="ev1",
        session={"type": "realtime", "instructions": "be brief", "audio": {"output": {"voice": "marin"}}},
    )
    s = (await rec.wait("session.updated"))["session"]
    assert s["instructions"] == "be brief" and s["audio"]["output"]["voice"] == "marin"
    assert s["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200  # untouched fields stay
    await send(
        engine, type="session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
    )
    s = (await rec.wait("session.updated", 2))["session"]
    assert s["audio"]["input"]["turn_detection"] is None and s["instructions"] == "be brief"
    await send(engine, type="session.update", event_id="ev2", session={"type": "realtime", "bogus": 1})
    await send(engine, type="session.update", event_id="ev3", session={"type": "realtime", "model": "gpt-x"})
    await send(
        engine,
        type="session.update",
        event_id="ev4",
        session={
            "type": "realtime",
            "instructions": "x",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
        },
    )
    await rec.wait("error", 2)
    errs = rec.errors()
    assert [(e["code"], e["param"], e["event_id"]) for e in errs] == [
        ("unknown_parameter", "session.bogus", "ev2"),
        ("integer_below_min_value", "session.audio.input.format.rate", "ev4"),
    ]
    assert engine.session["instructions"] == "be brief"  # a failed update changes nothing
    # a model in session.update is accepted and ignored: the model never changes (docs/protocol-notes.md)
    assert (await rec.wait("session.updated", 3))["session"]["model"] == "gpt-realtime"


async def test_voice_cannot_change_after_audio(eng: tuple[Engine, Rec]) -> None:
    engine, rec = eng
    await send(engine, type="response.create")
    await rec.wait("response.done")
    await send(engine, type="session.update", session={"type": "realtime", "audio": {"output": {"voice": "cedar"}}})
    err = (await rec.wait("error"))["error"]
    assert err["param"] == "session.audio.output.voice"


async def test_misuse_errors_are_non_fatal_and_echo_event_id(eng: tuple[Engine, Rec]) -> None:
    engine, rec = eng
    await send(engine, type="input_audio_buffer.append", audio=b64(silence(50)))
    await send(engine, type="input_audio_buffer.commit", event_id="c1")
    await send(engine, type="response.cancel", event_id="x1")
    await send(engine, type="nope.nope", event_id="t1")
    await send(engine, type="response.create", bogus=True, event_id="u1")
    await engine.handle_client_event("{not json")
    await engine.handle_client_event(b"\x00\x01")
    await engine.handle_client_event(json.dumps({"event_id": "m1"}))
    await send(engine, type="output_audio_buffer.clear", event_id="o1")  # WebRTC only
    await send(engine, type="conversation.item.retrieve", item_id="item_missing", event_id="r1")
    await send(engine, type="conversation.item.delete", item_id="item_missing", event_id="d1")
    await send(engine, type="conversation.item.truncate", item_id="item_missing", content_index=0, audio_end_ms=0)
    await send(
        engine,
        type="conversation.item.create",
        previous_item_id="item_nope",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
    )
    errs = rec.errors()
    got = [(e["code"], e["param"], e["event_id"]) for e in errs]
    assert got == [
        ("input_audio_buffer_commit_empty", None, "c1"),
        ("response_cancel_not_active", None, "x1"),
        ("invalid_value", "type", "t1"),
        ("unknown_parameter", "bogus", "u1"),
        ("invalid_json", None, None),
        ("invalid_event", None, None),
        ("invalid_event", None, "m1"),
        ("invalid_value", "type", "o1"),
        ("invalid_value", "item_id", "r1"),
        ("invalid_value", "item_id", "d1"),
        ("invalid_value", "item_id", None),
        ("invalid_value", "previous_item_id", None),
    ]
    assert "50.00ms" in errs[0]["message"]
    assert errs[1]["message"] == "Cancellation failed: no active response found"
    assert errs[5]["message"].startswith("Expected a text WebSocket message")
    # still works afterwards
    await send(engine, type="response.create")
    await send(engine, type="response.create", event_id="dup")
    err = (await rec.wait("error", len(errs) + 1))["error"]
    assert err["code"] == "conversation_already_has_active_response" and err["event_id"] == "dup"
    await rec.wait("response.done")


async def test_cancel_gives_cancelled_response(eng: tuple[Engine, Rec]) -> None:
    engine, rec = eng
    engine.config.__class__  # noqa: B018 - config is frozen; use a long reply instead
    await send(engine, type="response.create")
    await rec.wait("response.output_audio.delta")
    await send(engine, type="response.cancel")
    done = (await rec.wait("response.done"))["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"


async def test_item_ordering_retrieve_delete_truncate(eng: tuple[Engine, Rec]) -> None:
    engine, rec = eng
    msg = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]}
    await send(engine, type="conversation.item.create", item={**msg, "id": "first"})
    await send(engine, type="conversation.item.create", item={**msg, "id": "zeroth"}, previous_item_id="root")
    await send(engine, type="conversation.item.create", item={**msg, "id": "middle"}, previous_item_id="zeroth")
    added = rec.of("conversation.item.added")
    assert [(e["item"]["id"], e["previous_item_id"]) for e in added] == [
        ("first", None), ("zeroth", None), ("middle", "zeroth")]  # fmt: skip
    assert [i["id"] for i in engine.conversation.items()] == ["zeroth", "middle", "first"]
    await send(engine, type="response.create")
    done = (await rec.wait("response.done"))["response"]
    assistant = done["output"][0]["id"]
    await send(engine, type="conversation.item.truncate", item_id=assistant, content_index=0, audio_end_ms=900)
    err = (await rec.wait("error"))["error"]
    assert err["message"] == "Audio content of 500ms is already shorter than 900ms"
    await send(engine, type="conversation.item.truncate", item_id=assistant, content_index=0, audio_end_ms=200)
    truncated = await rec.wait("conversation.item.truncated")
    assert truncated["audio_end_ms"] == 200 and truncated["item_id"] == assistant
    await send(engine, type="conversation.item.retrieve", item_id=assistant)
    item = (await rec.wait("conversation.item.retrieved"))["item"]
    assert len(base64.b64decode(item["content"][0]["audio"])) == 200 * 48
    assert item["content"][0]["transcript"] == ""  # unheard transcript dropped
    await send(engine, type="conversation.item.delete", item_id="middle")
    assert (await rec.wait("conversation.item.deleted"))["item_id"] == "middle"
    assert "middle" not in engine.conversation


async def test_manual_commit_and_transcription() -> None:
    engine = make()
    async with running(engine) as rec:
        await send(engine, type="session.update", session={"type": "realtime", "audio": {"input": {
            "turn_detection": None, "transcription": {"model": "gpt-4o-mini-transcribe"}}}})  # fmt: skip
        await send(engine, type="input_audio_buffer.append", audio=b64(tone(400)))
        await send(engine, type="input_audio_buffer.commit")
        committed = await rec.wait("input_audio_buffer.committed")
        done = await rec.wait("conversation.item.input_audio_transcription.completed")
        assert done["item_id"] == committed["item_id"] and done["transcript"] == "(audio 400 ms)"
        assert not rec.of("response.created")  # no VAD: the client asks for the response
        await send(engine, type="response.create")
        await rec.wait("response.done")
        await send(engine, type="input_audio_buffer.append", audio=b64(tone(200)))
        await send(engine, type="input_audio_buffer.clear")
        await rec.wait("input_audio_buffer.cleared")
        await send(engine, type="input_audio_buffer.commit")
        assert rec.errors()[-1]["code"] == "input_audio_buffer_commit_empty"


async def test_server_vad_turn_and_ws_barge_in() -> None:
    engine = make(speed=2.0, reply_seconds=3.0)
    async with running(engine) as rec:
        engine.feed_input_audio(silence(200) + tone(600) + silence(400))
        started = await rec.wait("input_audio_buffer.speech_started")
        stopped = await rec.wait("input_audio_buffer.speech_stopped")
        assert started["audio_start_ms"] == 0 and stopped["audio_end_ms"] == 1000
        assert started["item_id"] == stopped["item_id"] == rec.of("input_audio_buffer.committed")[0]["item_id"]
        user = rec.of("conversation.item.done")[0]["item"]
        assert user["content"] == [{"type": "input_audio", "transcript": None}]
        assert len(engine.conversation.audio[user["id"]]) == 1000 * 48  # 0..1000 ms of the timeline
        await rec.wait("response.output_audio.delta", 2)
        engine.feed_input_audio(tone(300))  # user talks over the reply
        done = (await rec.wait("response.done"))["response"]
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        types = rec.types()
        assert types.index("input_audio_buffer.speech_started", types.index("response.created")) < types.index(
            "response.done")  # fmt: skip
        assert not rec.of("conversation.item.truncated")  # over WS truncation is the client's job


async def test_webrtc_output_buffer_events_and_auto_truncation() -> None:
    engine = make(transport="webrtc", speed=1.0, reply_seconds=2.0)
    out = FakeOut()
    engine.attach_audio_out(out)
    async with running(engine) as rec:
        await send(engine, type="response.create")
        created = await rec.wait("response.content_part.added")
        rid = created["response_id"]
        await poll(lambda: out.bytes > 0)
        assert out.calls[0] == ("begin", (rid, created["item_id"]))
        engine.on_output_started(rid)
        assert rec.types()[-1] == "output_audio_buffer.started" or "output_audio_buffer.started" in rec.types()
        engine.feed_input_audio(tone(300))  # barge-in while playing
        await rec.wait("response.done")
        types = rec.types()
        i = types.index("input_audio_buffer.speech_started")
        assert types[i + 1 : i + 3] == ["output_audio_buffer.cleared", "conversation.item.truncated"]
        assert rec.of("conversation.item.truncated")[0]["audio_end_ms"] == out.sent_ms > 0  # what interrupt() said
        assert ("interrupt", None) in out.calls
        assert not rec.of("response.output_audio.delta")  # never on WebRTC
        engine.on_output_stopped(rid)
        assert not rec.of("output_audio_buffer.stopped")  # cleared, not drained


async def test_webrtc_stopped_comes_after_response_done() -> None:
    engine = make(transport="webrtc", reply_seconds=0.3)
    out = FakeOut()
    engine.attach_audio_out(out)
    async with running(engine) as rec:
        await send(engine, type="response.create")
        done = await rec.wait("response.done")
        rid = done["response"]["id"]
        engine.on_output_started(rid)
        engine.on_output_stopped(rid)
        assert rec.types()[-2:] == ["output_audio_buffer.started", "output_audio_buffer.stopped"]
        assert out.calls[-1] == ("end", None) and out.bytes == 300 * 48
        # and if the wire drains before generation ends, stopped waits for response.done
        await send(engine, type="response.create")
        added = await rec.wait("response.content_part.added", 2)
        engine.on_output_started(added["response_id"])
        engine.on_output_stopped(added["response_id"])
        await rec.wait("output_audio_buffer.stopped", 2)
        types = rec.types()
        assert types.index("response.done", len(types) - 4) < len(types) - 1


async def test_script_function_call_then_continue(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"turns": [
        {"user": "weather in paris?", "function_calls": [
            {"name": "get_weather", "arguments": {"city": "Paris"}, "call_id": "call_abc"}]},
        {"text": "It is sunny in Paris.", "seconds": 0.2, "think_ms": 0},
        {"error": {"code": "server_error", "type": "server_error", "message": "injected"}},
    ]}))  # fmt: skip
    engine = make(f"script:{script}")
    async with running(engine) as rec:
        await send(engine, type="response.create")
        done = (await rec.wait("response.done"))["response"]
        assert done["output"][0]["type"] == "function_call"
        args = await rec.wait("response.function_call_arguments.done")
        assert (args["call_id"], args["name"], json.loads(args["arguments"])) == ("call_abc", "get_weather",
                                                                                   {"city": "Paris"})  # fmt: skip
        body = [t for t in rec.types()[1:] if not t.endswith(".delta")]
        assert body == ["response.created", "response.output_item.added", "conversation.item.added",
                        "response.function_call_arguments.done", "conversation.item.done",
                        "response.output_item.done", "response.done", "rate_limits.updated"]  # fmt: skip
        await send(
            engine,
            type="conversation.item.create",
            item={"type": "function_call_output", "call_id": "call_abc", "output": '{"sky":"clear"}'},
        )
        await send(engine, type="response.create")
        await rec.wait("response.done", 2)
        assert rec.of("response.output_audio_transcript.done")[0]["transcript"] == "It is sunny in Paris."
        await send(engine, type="response.create")
        failed = (await rec.wait("response.done", 3))["response"]
        assert failed["status"] == "failed" and rec.errors()[-1]["message"] == "injected"


async def test_session_expiry_sends_error_and_closes_1001() -> None:
    engine = make(session_max_seconds=0.1)
    async with running(engine) as rec:
        code, reason = await asyncio.wait_for(engine.wait_closed(), 2)
        assert code == 1001 and "maximum duration" in reason
        assert rec.errors()[-1]["code"] == "session_expired"
        await send(engine, type="response.create")  # ignored after close
        assert not rec.of("response.created")


async def test_echo_ws_returns_each_append_at_once() -> None:
    engine = make("echo")
    async with running(engine) as rec:
        chunk = tone(100)
        await send(engine, type="input_audio_buffer.append", audio=b64(chunk))
        delta = await rec.wait("response.output_audio.delta")
        assert base64.b64decode(delta["delta"]) == chunk
        engine.feed_input_audio(silence(500))
        await rec.wait("response.done")
        assert rec.of("response.done")[0]["response"]["status"] == "completed"


async def test_truncating_an_item_still_being_generated_is_accepted() -> None:
    """Barge-in truncates the reply that is still streaming: its audio so far counts (no content part yet)."""
    engine = make(speed=1.0, reply_seconds=2.0)
    async with running(engine) as rec:
        await send(engine, type="response.create")
        delta = await rec.wait("response.output_audio.delta", count=2)
        assert not rec.of("response.done")  # still generating
        await send(
            engine, type="conversation.item.truncate", item_id=delta["item_id"], content_index=0, audio_end_ms=50
        )
        truncated = await rec.wait("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 50 and not rec.errors()
