"""Bad client input, table-driven: each frame gets the real service's error code, ``param`` and wording
(docs/protocol-notes.md "Validation errors"), and the session goes on; REST bodies get the same rules."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from spec_oracle import assert_valid_server_events

from bridge.emulator.testing import RunningEmulator, running_emulator

RT = {"type": "realtime"}
ACCEPTED = (
    "'session.update', 'session.close', 'input_audio_buffer.append', 'session.input_audio_buffer.append', "
    "'input_audio_buffer.commit', 'input_audio_buffer.clear', 'conversation.item.create', "
    "'conversation.item.truncate', 'conversation.item.delete', 'conversation.item.retrieve', "
    "'response.create', and 'response.cancel'"
)


def update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {**RT, **session}}


def user_text(text: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


# (frame: dict -> JSON text, str -> sent as is, bytes -> binary), code, param, message (exact or a prefix "...")
CASES: list[tuple[str, Any, str | None, str | None, str]] = [
    ("binary", b"\x00\x01", "invalid_event", None,
     "Expected a text WebSocket message; binary frames are not supported."),
    ("non-JSON", "not json", "invalid_json", None, "Invalid event: failed to parse JSON value. ..."),
    ("not an object", "[1, 2]", "invalid_event", None, "Expected a JSON object as the event."),
    ("no type", {"event_id": "e1"}, "invalid_event", None, "The 'type' field is missing."),
    ("type not a string", {"type": 5}, "invalid_type", "type",
     "Invalid type for 'type': expected a string, but got an integer instead."),
    ("unknown type", {"type": "nope"}, "invalid_value", "type",
     f"Invalid value: 'nope'. Supported values are: {ACCEPTED}."),
    ("beta type", {"type": "transcription_session.update", "session": {}}, "invalid_value", "type",
     "Invalid value: ..."),
    ("WebRTC-only type over WS", {"type": "output_audio_buffer.clear"}, "invalid_value", "type", "Invalid value: ..."),
    ("unknown top-level field", {"type": "input_audio_buffer.clear", "bogus": 1}, "unknown_parameter", "bogus",
     "Unknown parameter: 'bogus'."),
    ("event_id too long", {"type": "input_audio_buffer.clear", "event_id": "x" * 513}, "string_above_max_length",
     "event_id", "Invalid 'event_id': string too long. Expected a string with maximum length 512, but got a string "
     "with length 513 instead."),
    ("missing session", {"type": "session.update"}, "missing_required_parameter", "session",
     "Missing required parameter: 'session'."),
    ("missing session.type", {"type": "session.update", "session": {}}, "missing_required_parameter",
     "session.type", "Missing required parameter: 'session.type'."),
    ("instructions a number", update(instructions=5), "invalid_type", "session.instructions",
     "Invalid type for 'session.instructions': expected a string, but got an integer instead."),
    ("max_output_tokens 0", update(max_output_tokens=0), "integer_below_min_value", "session.max_output_tokens",
     "Invalid 'session.max_output_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead."),
    ("max_output_tokens 5000", update(max_output_tokens=5000), "integer_above_max_value",
     "session.max_output_tokens", "Invalid 'session.max_output_tokens': integer above maximum value. ..."),
    ("speed 2.0", update(audio={"output": {"speed": 2.0}}), "decimal_above_max_value", "session.audio.output.speed",
     "Invalid 'session.audio.output.speed': decimal above maximum value. Expected a value <= 1.5, but got 2.0 "
     "instead."),
    ("rate 16000", update(audio={"input": {"format": {"type": "audio/pcm", "rate": 16000}}}),
     "integer_below_min_value", "session.audio.input.format.rate", "Invalid 'session.audio.input.format.rate': ..."),
    ("format null", update(audio={"input": {"format": None}}), "invalid_type", "session.audio.input.format",
     "Invalid type for 'session.audio.input.format': expected an object, but got null."),
    ("voice a number", update(audio={"output": {"voice": 5}}), "invalid_type", "session.audio.output.voice",
     "Invalid type for 'session.audio.output.voice': expected one of 'alloy', 'ash', ..."),
    ("voice unknown", update(audio={"output": {"voice": "fable"}}), "invalid_value", "session.audio.output.voice",
     "Invalid value: 'fable'. Supported values are: 'alloy', 'ash', 'ballad', 'coral', 'echo', 'sage', 'shimmer', "
     "'verse', 'marin', and 'cedar'."),
    ("turn detection type", update(audio={"input": {"turn_detection": {"type": "loud"}}}), "invalid_value",
     "session.audio.input.turn_detection.type", "Invalid value: 'loud'. Supported values are: 'server_vad' and "
     "'semantic_vad'."),
    ("idle timeout too short", update(audio={"input": {"turn_detection": {"type": "server_vad",
                                                                          "idle_timeout_ms": 100}}}),
     "integer_below_min_value", "session.audio.input.turn_detection.idle_timeout_ms", "Invalid ..."),
    ("unknown session field", update(bogus_field=1), "unknown_parameter", "session.bogus_field",
     "Unknown parameter: 'session.bogus_field'."),
    ("unknown tool field", update(tools=[{"type": "function", "name": "f", "meta": {}}]), "unknown_parameter",
     "session.tools[0].meta", "Unknown parameter: 'session.tools[0].meta'."),
    ("modalities video", update(output_modalities=["video"]), "invalid_value", "session.output_modalities[0]",
     "Invalid value: 'video'. Supported values are: 'text' and 'audio'."),
    ("transcription update to a realtime session", {"type": "session.update", "session": {"type": "transcription"}},
     "invalid_value", "session.type",
     "Passing a transcription session update event to a realtime session is not allowed."),
    ("append without audio", {"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio",
     "Missing required parameter: 'audio'."),
    ("append audio a number", {"type": "input_audio_buffer.append", "audio": 5}, "invalid_type", "audio",
     "Invalid type for 'audio': expected a string, but got an integer instead."),
    ("append empty audio", {"type": "input_audio_buffer.append", "audio": ""}, "invalid_value", "audio",
     "Invalid 'audio'. Expected base64-encoded audio bytes (mono PCM16 at 24kHz)."),
    ("append not base64", {"type": "input_audio_buffer.append", "audio": "@@@@"}, "invalid_value", "audio",
     "Invalid 'audio'. Expected base64-encoded audio bytes (mono PCM16 at 24kHz)."),
    ("append over 15 MiB", {"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(bytes(15 * 1024 * 1024 + 2)).decode()},
     "invalid_value", "audio", "Audio chunk too large: at most 15 MiB per append."),
    ("commit too little", {"type": "input_audio_buffer.commit", "event_id": "c1"}, "input_audio_buffer_commit_empty",
     None, "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer "
     "only has 0.00ms of audio."),
    ("item missing", {"type": "conversation.item.create"}, "missing_required_parameter", "item",
     "Missing required parameter: 'item'."),
    ("item type unknown", {"type": "conversation.item.create", "item": {"type": "foo"}}, "invalid_value",
     "item.type", "Invalid value: 'foo'. Supported values are: 'message', 'function_call', ..."),
    ("item role unknown", {"type": "conversation.item.create", "item": {"type": "message", "role": "robot",
                                                                          "content": []}},
     "invalid_value", "item.role", "Invalid value: 'robot'. Supported values are: 'system', 'user', and 'assistant'."),
    ("item text a number", {"type": "conversation.item.create", "item": user_text(5)}, "invalid_type",
     "item.content[0].text", "Invalid type for 'item.content[0].text': expected a string, but got an integer "
     "instead."),
    ("truncate unknown item", {"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0,
                               "audio_end_ms": 0}, "invalid_value", "item_id", "Item with item_id 'nope' not found."),
    ("truncate index a string", {"type": "conversation.item.truncate", "item_id": "x", "content_index": "0",
                                 "audio_end_ms": 0}, "invalid_type", "content_index", "Invalid type for ..."),
    ("delete without id", {"type": "conversation.item.delete"}, "missing_required_parameter", "item_id",
     "Missing required parameter: 'item_id'."),
    ("response metadata a number", {"type": "response.create", "response": {"metadata": {"k": 1}}}, "invalid_type",
     "response.metadata.k", "Invalid type for 'response.metadata.k': expected a string, but got an integer instead."),
    ("response modalities both", {"type": "response.create", "response": {"output_modalities": ["text", "audio"]}},
     "invalid_value", "response.output_modalities", "output_modalities must be ..."),
    ("cancel with nothing active", {"type": "response.cancel"}, "response_cancel_not_active", None,
     "Cancellation failed: no active response found"),
]  # fmt: skip


def _frame(frame: Any) -> tuple[str, Any]:
    if isinstance(frame, bytes):
        return "bytes", frame
    return "str", frame if isinstance(frame, str) else json.dumps(frame)


def _check_message(got: str, want: str) -> None:
    if want.endswith("..."):
        assert got.startswith(want[:-3]), got
    else:
        assert got == want


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def ws() -> AsyncIterator[tuple[RunningEmulator, aiohttp.ClientWebSocketResponse]]:
    async with running_emulator(think_ms=0, reply_seconds=0.2, speed=20) as emu, aiohttp.ClientSession() as http:
        sock = await http.ws_connect(emu.ws_url + "?model=gpt-realtime",
                                     headers={"Authorization": f"Bearer {emu.api_key}"})  # fmt: skip
        assert json.loads((await sock.receive(timeout=5)).data)["type"] == "session.created"
        yield emu, sock
        assert_valid_server_events(emu.server_events())


async def next_of(sock: aiohttp.ClientWebSocketResponse, etype: str) -> dict[str, Any]:
    while True:
        msg = await sock.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        event = json.loads(msg.data)
        if event["type"] == etype:
            return event


@pytest.mark.parametrize(("name", "frame", "code", "param", "message"), CASES, ids=[c[0] for c in CASES])
async def test_bad_frame_gets_the_real_error_and_the_session_goes_on(
    ws: tuple[RunningEmulator, aiohttp.ClientWebSocketResponse],
    name: str,
    frame: Any,
    code: str,
    param: str | None,
    message: str,
) -> None:
    emu, sock = ws
    kind, data = _frame(frame)
    await (sock.send_bytes(data) if kind == "bytes" else sock.send_str(data))
    error = (await next_of(sock, "error"))["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param), error
    _check_message(error["message"], message)
    sent_id = frame.get("event_id") if isinstance(frame, dict) else None
    assert error["event_id"] == (sent_id if isinstance(sent_id, str) and len(sent_id) <= 512 else None)
    (session,) = emu.state.open_engines()
    assert session.session["instructions"] != 5 and session.session["max_output_tokens"] == "inf"  # nothing applied
    await sock.send_json({"type": "conversation.item.create", "item": user_text("still there?")})
    await sock.send_json({"type": "response.create", "response": {"output_modalities": ["text"]}})
    assert (await next_of(sock, "response.done"))["response"]["status"] == "completed"


async def test_truncating_what_is_not_model_audio(ws: tuple[RunningEmulator, aiohttp.ClientWebSocketResponse]) -> None:
    """livekit/agents PR #6158: unsupported_content_type, "Only model output audio messages can be truncated"."""
    _, sock = ws
    await sock.send_json({"type": "conversation.item.create", "item": user_text("hi")})
    user_item = (await next_of(sock, "conversation.item.done"))["item"]["id"]
    await sock.send_json({"type": "response.create", "response": {"output_modalities": ["text"]}})
    text_item = (await next_of(sock, "response.done"))["response"]["output"][0]["id"]
    for item_id in (user_item, text_item):
        await sock.send_json({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                              "audio_end_ms": 0})  # fmt: skip
        error = (await next_of(sock, "error"))["error"]
        assert (error["code"], error["message"]) == (
            "unsupported_content_type",
            "Only model output audio messages can be truncated",
        )


CLIENT_SECRET_CASES = [
    ({"session": {"type": "realtime", "instructions": 5}}, "invalid_type", "session.instructions"),
    ({"session": {"type": "realtime", "max_output_tokens": 0}}, "integer_below_min_value", "session.max_output_tokens"),
    ({"session": {"instructions": "x"}}, "missing_required_parameter", "session.type"),
    ({"session": {"type": "realtime", "model": "gpt-nope"}}, "invalid_model", "model"),
    ({"expires_after": {"anchor": "created_at", "seconds": 5}}, "integer_below_min_value", "expires_after.seconds"),
    ({"expires_after": {"anchor": "now", "seconds": 60}}, "invalid_value", "expires_after.anchor"),
    ({"bogus": 1}, "unknown_parameter", "bogus"),
]


@pytest.mark.parametrize(("body", "code", "param"), CLIENT_SECRET_CASES)
async def test_client_secrets_bad_bodies(body: dict[str, Any], code: str, param: str) -> None:
    async with running_emulator() as emu, aiohttp.ClientSession() as http:
        async with http.post(f"{emu.base_url}/realtime/client_secrets", json=body,
                             headers={"Authorization": f"Bearer {emu.api_key}"}) as r:  # fmt: skip
            assert r.status == 400
            error = (await r.json())["error"]
        assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
