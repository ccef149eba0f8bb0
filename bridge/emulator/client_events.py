"""Client events in: parse a frame, check its envelope, answer mistakes the way the real service does.

Pure (no I/O, no session state): :func:`parse_client_event` turns a text/binary frame or a dict into an
event dict or raises :class:`ClientError` with the real code and wording (PROTOCOL.md 3, 4.1, 4.2, 6).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from bridge.emulator.engine_parts import ClientError

Transport = Literal["ws", "webrtc"]

CLIENT_FIELDS: dict[str, frozenset[str]] = {
    "session.update": frozenset({"session"}),
    "input_audio_buffer.append": frozenset({"audio"}),
    "input_audio_buffer.commit": frozenset(),
    "input_audio_buffer.clear": frozenset(),
    "output_audio_buffer.clear": frozenset(),
    "conversation.item.create": frozenset({"item", "previous_item_id"}),
    "conversation.item.retrieve": frozenset({"item_id"}),
    "conversation.item.truncate": frozenset({"item_id", "content_index", "audio_end_ms"}),
    "conversation.item.delete": frozenset({"item_id"}),
    "response.create": frozenset({"response"}),
    "response.cancel": frozenset({"response_id"}),
}

RESPONSE_FIELDS = frozenset(
    {
        "audio",
        "conversation",
        "input",
        "instructions",
        "max_output_tokens",
        "metadata",
        "output_modalities",
        "parallel_tool_calls",
        "prompt",
        "reasoning",
        "tool_choice",
        "tools",
    }
)


def decode_frame(data: str | bytes | bytearray | dict[str, Any]) -> Any:
    """The JSON value of one frame; binary frames and bad JSON raise :class:`ClientError`."""
    if isinstance(data, bytes | bytearray):
        raise ClientError("invalid_event", "Expected a text WebSocket message; binary frames are not supported.")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise ClientError(
                "invalid_json", f"Invalid JSON in event: {exc.msg} (line {exc.lineno} column {exc.colno})."
            ) from None
    return data


def check_envelope(event: Any, transport: Transport) -> dict[str, Any]:
    """The event as a dict with a supported ``type`` and only that type's fields, else ClientError."""
    if not isinstance(event, dict):
        raise ClientError("invalid_event", "Expected an event object.")
    etype = event.get("type")
    if etype is None:
        raise ClientError("invalid_event", "The 'type' field is missing.")
    allowed = CLIENT_FIELDS.get(etype) if isinstance(etype, str) else None
    if etype == "output_audio_buffer.clear" and transport != "webrtc":
        allowed = None  # PROTOCOL.md 4.2: absent from the WS type list
    if allowed is None:
        names = ", ".join(f"'{t}'" for t in CLIENT_FIELDS if t != "output_audio_buffer.clear")
        raise ClientError("invalid_value", f"Invalid value: '{etype}'. Supported values are: {names}.", "type")
    for key in event:
        if key not in allowed and key not in ("type", "event_id"):
            raise ClientError("unknown_parameter", f"Unknown parameter: '{key}'.", key)
    return event


def event_id_of(event: Any) -> str | None:
    """The client's ``event_id`` to echo in an error, if it sent a usable one."""
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None
