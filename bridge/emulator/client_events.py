"""Client events in: decode a frame, check the event against the official schema, answer mistakes the way
the real service does (PROTOCOL.md 3, 4.1, 4.2; docs/protocol-notes.md).

Pure (no I/O, no session state): :func:`decode_frame` then :func:`check_event` turn a text/binary frame
into a checked event dict or raise :class:`ClientError` with the real code, wording and ``param``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from bridge.emulator import validation
from bridge.emulator.engine_parts import ClientError

Transport = Literal["ws", "webrtc"]

# Event type -> its schema (the 11 of RealtimeClientEvent), plus the two the service accepts undocumented.
EVENT_SCHEMAS: dict[str, str] = {
    "session.update": "RealtimeClientEventSessionUpdate",
    "input_audio_buffer.append": "RealtimeClientEventInputAudioBufferAppend",
    "input_audio_buffer.commit": "RealtimeClientEventInputAudioBufferCommit",
    "input_audio_buffer.clear": "RealtimeClientEventInputAudioBufferClear",
    "output_audio_buffer.clear": "RealtimeClientEventOutputAudioBufferClear",
    "conversation.item.create": "RealtimeClientEventConversationItemCreate",
    "conversation.item.retrieve": "RealtimeClientEventConversationItemRetrieve",
    "conversation.item.truncate": "RealtimeClientEventConversationItemTruncate",
    "conversation.item.delete": "RealtimeClientEventConversationItemDelete",
    "response.create": "RealtimeClientEventResponseCreate",
    "response.cancel": "RealtimeClientEventResponseCancel",
}
# The accepted types as the service lists them for an unknown one, in its order ([PROBE 8], PROTOCOL.md 4.2).
# `session.close` and `session.input_audio_buffer.append` are accepted but undocumented for Realtime; the
# emulator treats them as a goodbye (close 1000) and as `input_audio_buffer.append` (UNCONFIRMED semantics).
WS_TYPES = (
    "session.update",
    "session.close",
    "input_audio_buffer.append",
    "session.input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
)
# WebRTC also takes `output_audio_buffer.clear` (WebRTC/SIP only, PROTOCOL.md 2.3; its place in the list there
# is UNCONFIRMED).
WEBRTC_TYPES = (*WS_TYPES[:6], "output_audio_buffer.clear", *WS_TYPES[6:])
MAX_EVENT_ID = 512  # the spec's maxLength; a longer one is itself the error, not echoed
ALIASES = {"session.input_audio_buffer.append": "input_audio_buffer.append"}


def decode_frame(data: str | bytes | bytearray | dict[str, Any]) -> Any:
    """The JSON value of one frame; binary frames and bad JSON raise :class:`ClientError` ([PROBE 8])."""
    if isinstance(data, bytes | bytearray):
        raise ClientError("invalid_event", "Expected a text WebSocket message; binary frames are not supported.")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            # The service's prefix ([PROBE 8]); the detail after it is the emulator's own.
            raise ClientError(
                "invalid_json",
                f"Invalid event: failed to parse JSON value. {exc.msg} at line {exc.lineno} column {exc.colno}.",
            ) from None
    return data


def check_event(event: Any, transport: Transport) -> dict[str, Any]:
    """The event, checked against its schema; its ``type`` with aliases resolved. Else ClientError."""
    if not isinstance(event, dict):
        raise ClientError("invalid_event", "Expected a JSON object as the event.")
    if "type" not in event:
        raise ClientError("invalid_event", "The 'type' field is missing.")  # the spec's example wording
    etype = event["type"]
    if not isinstance(etype, str):
        raise validation.invalid_type("type", "a string", etype)
    accepted = WEBRTC_TYPES if transport == "webrtc" else WS_TYPES
    if etype not in accepted:
        raise validation.invalid_value("type", etype, list(accepted))
    if etype == "session.close":
        validation.validate({"type": "object", "properties": {"type": {}, "event_id": {"maxLength": 512}}}, event)
        return event
    canonical = ALIASES.get(etype, etype)
    validation.validate_named(EVENT_SCHEMAS[canonical], {**event, "type": canonical})
    return {**event, "type": canonical}


def event_id_of(event: Any) -> str | None:
    """The client's ``event_id`` to echo in an error, if it sent a usable one."""
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) and len(value) <= MAX_EVENT_ID else None
