"""The client's typed events against the official spec's event index and real-shaped payloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.protocol import events as ev

SHARED = Path(__file__).resolve().parents[3] / "shared"
INDEX = SHARED / "openai-spec" / "realtime_event_index.ga.json"


def test_speech_started_and_truncated_parse() -> None:
    e = ev.parse({"type": "input_audio_buffer.speech_started", "event_id": "e", "audio_start_ms": 2900, "item_id": "i"})
    assert e == ev.SpeechStarted(2900, "i")
    t = ev.parse(
        {
            "type": "conversation.item.truncated",
            "event_id": "e",
            "item_id": "a",
            "content_index": 0,
            "audio_end_ms": 1860,
        }
    )
    assert t == ev.ItemTruncated("a", 0, 1860)


def test_response_done_reason_and_nulls() -> None:
    done = ev.parse(
        {
            "type": "response.done",
            "event_id": "e",
            "response": {
                "id": "resp_1",
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"},
                "output": [],
            },
        }
    )
    assert done == ev.ResponseDone("resp_1", "cancelled", "turn_detected", [])
    ok = ev.parse(
        {
            "type": "response.done",
            "event_id": "e",
            "response": {"id": "r", "status": "completed", "status_details": None},
        }
    )
    assert isinstance(ok, ev.ResponseDone) and ok.reason is None


def test_unknown_and_malformed_events_never_raise() -> None:
    assert isinstance(ev.parse({"type": "brand.new_event", "x": 1}), ev.Other)
    assert isinstance(ev.parse({"type": "input_audio_buffer.speech_started"}), ev.Other)  # missing fields
    assert isinstance(ev.parse({"no_type": True}), ev.Other)
    assert isinstance(ev.parse({"type": "response.done", "response": None}), ev.Other)


def test_error_event_fields() -> None:
    e = ev.parse(
        {
            "type": "error",
            "event_id": "e",
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "m",
                "param": "type",
                "event_id": "c1",
            },
        }
    )
    assert e == ev.ServerError("invalid_request_error", "invalid_value", "m", "type", "c1")


@pytest.mark.spec
def test_every_typed_event_type_exists_in_the_ga_spec_with_the_fields_we_read() -> None:
    if not INDEX.exists():
        pytest.skip(f"official spec not found at {INDEX} (needs the shared/ folder beside the checkout)")
    schemas = json.loads(INDEX.read_text())["schemas"]
    ga = {s["type"]: s for name, s in schemas.items() if name.startswith("RealtimeServerEvent")}
    read = {
        "input_audio_buffer.speech_started": ["audio_start_ms", "item_id"],
        "input_audio_buffer.speech_stopped": ["audio_end_ms", "item_id"],
        "conversation.item.added": ["item"],
        "conversation.item.done": ["item"],
        "conversation.item.input_audio_transcription.completed": ["item_id", "transcript"],
        "response.created": ["response"],
        "response.done": ["response"],
        "response.output_item.added": ["response_id", "item"],
        "response.output_audio.delta": ["response_id", "item_id", "content_index", "delta"],
        "response.output_audio_transcript.delta": ["response_id", "item_id", "delta"],
        "response.output_audio_transcript.done": ["response_id", "item_id", "transcript"],
        "output_audio_buffer.started": ["response_id"],
        "output_audio_buffer.cleared": ["response_id"],
        "conversation.item.truncated": ["item_id", "content_index", "audio_end_ms"],
        "response.function_call_arguments.done": ["response_id", "item_id", "call_id", "name", "arguments"],
        "error": ["error"],
    }
    for type_, fields in read.items():
        assert type_ in ga, type_
        assert set(fields) <= set(ga[type_]["required"]), (type_, ga[type_]["required"])
