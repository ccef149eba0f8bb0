"""Typed server events for the handful the client acts on; everything else stays a raw dict.

Follows openai-agents-python ``realtime/model_events.py``: one small frozen dataclass per event, a union
alias, ``parse()`` that never raises on an unknown type (the API adds events). Field names and required
fields match the GA spec (PROTOCOL.md 4.4; checked in tests against the spec's event index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SessionChanged:
    """``session.created`` or ``session.updated``."""

    type: str
    session: dict[str, Any]


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True)
class ItemAdded:
    """``conversation.item.added`` (``done=False``) or ``conversation.item.done`` (``done=True``)."""

    item: dict[str, Any]
    previous_item_id: str | None
    done: bool


@dataclass(frozen=True)
class InputTranscript:
    """User speech transcription: a delta, the completed text, or a failure (``failed=True``)."""

    item_id: str
    text: str
    final: bool
    failed: bool = False


@dataclass(frozen=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True)
class ResponseDone:
    response_id: str
    status: str
    reason: str | None
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None  # token counts (PROTOCOL.md 4: null in response.created)


@dataclass(frozen=True)
class OutputItemAdded:
    response_id: str
    item: dict[str, Any]


@dataclass(frozen=True)
class AudioDelta:
    """``response.output_audio.delta`` (WebSocket only): base64 PCM in the session's output format."""

    response_id: str
    item_id: str
    content_index: int
    delta: str


@dataclass(frozen=True)
class AssistantText:
    """Assistant transcript / text: ``response.output_audio_transcript.*`` or ``response.output_text.*``."""

    response_id: str
    item_id: str
    text: str
    final: bool


@dataclass(frozen=True)
class OutputAudioBuffer:
    """WebRTC only: ``output_audio_buffer.started|stopped|cleared`` (``what``)."""

    what: str
    response_id: str | None


@dataclass(frozen=True)
class ItemTruncated:
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True)
class FunctionCall:
    """``response.function_call_arguments.done``: the model wants a tool run."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ServerError:
    type: str
    code: str | None
    message: str
    param: str | None
    event_id: str | None


@dataclass(frozen=True)
class Other:
    """Any event we do not act on, kept raw."""

    type: str
    raw: dict[str, Any]


Event = (
    SessionChanged
    | SpeechStarted
    | SpeechStopped
    | ItemAdded
    | InputTranscript
    | ResponseCreated
    | ResponseDone
    | OutputItemAdded
    | AudioDelta
    | AssistantText
    | OutputAudioBuffer
    | ItemTruncated
    | FunctionCall
    | ServerError
    | Other
)


TYPED = frozenset(
    {
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
        "response.output_audio_transcript.done",
        "response.output_text.done",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "conversation.item.truncated",
        "response.function_call_arguments.done",
        "error",
    }
)
"""The event types :func:`parse` returns typed; one of these coming back as ``Other`` was malformed."""


def _str(e: dict[str, Any], key: str) -> str:
    value = e[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _opt_str(e: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = e.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _int(e: dict[str, Any], key: str, default: int | None = None) -> int:
    value = e.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # noqa: PLR0124 - NaN
        raise TypeError(f"{key} is not a number")
    return int(value)


def _obj(e: dict[str, Any], key: str) -> dict[str, Any]:
    value = e[key]
    if not isinstance(value, dict):
        raise TypeError(f"{key} is not an object")
    return value


def _item(e: dict[str, Any]) -> dict[str, Any]:
    """A conversation item: an object with a string id; ``type``, ``role`` and ``content`` well typed if there."""
    item = _obj(e, "item")
    _str(item, "id")
    _opt_str(item, "type")
    _opt_str(item, "role")
    content = item.get("content")
    if content is not None and not (isinstance(content, list) and all(isinstance(c, dict) for c in content)):
        raise TypeError("item.content is not a list of objects")
    return item


def _text_event(e: dict[str, Any], final: bool, key: str) -> AssistantText:
    return AssistantText(_opt_str(e, "response_id", "") or "", _str(e, "item_id"), _opt_str(e, key) or "", final)


def parse(e: dict[str, Any]) -> Event:
    """Turn one server event (already JSON-decoded) into a typed event; unknown or malformed ones are ``Other``
    (a field of a typed event that is missing or of the wrong type makes it malformed: it is never half-used)."""
    t = e.get("type")
    if not isinstance(t, str):
        return Other("", e)
    try:
        return _parse(t, e)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return Other(t, e)


def _parse(t: str, e: dict[str, Any]) -> Event:  # noqa: C901 - a flat dispatch table reads best
    match t:
        case "session.created" | "session.updated":
            return SessionChanged(t, _obj(e, "session"))
        case "input_audio_buffer.speech_started":
            return SpeechStarted(_int(e, "audio_start_ms"), _str(e, "item_id"))
        case "input_audio_buffer.speech_stopped":
            return SpeechStopped(_int(e, "audio_end_ms"), _str(e, "item_id"))
        case "conversation.item.added" | "conversation.item.done" | "conversation.item.created":
            return ItemAdded(_item(e), _opt_str(e, "previous_item_id"), t == "conversation.item.done")
        case "conversation.item.input_audio_transcription.delta":
            return InputTranscript(_str(e, "item_id"), _opt_str(e, "delta") or "", False)
        case "conversation.item.input_audio_transcription.completed":
            return InputTranscript(_str(e, "item_id"), _opt_str(e, "transcript") or "", True)
        case "conversation.item.input_audio_transcription.failed":
            return InputTranscript(_str(e, "item_id"), "", True, failed=True)
        case "response.created":
            return ResponseCreated(_str(_obj(e, "response"), "id"))
        case "response.done":
            r = _obj(e, "response")
            details = r.get("status_details") or {}
            if not isinstance(details, dict):
                raise TypeError("status_details is not an object")
            output = r.get("output") or []
            if not isinstance(output, list):
                raise TypeError("output is not a list")
            reason = _opt_str(details, "reason")
            usage = r.get("usage")  # informational: a wrong-typed usage is dropped, not the event
            usage = usage if isinstance(usage, dict) else None
            return ResponseDone(_str(r, "id"), _opt_str(r, "status", "") or "", reason, output, usage)
        case "response.output_item.added":
            return OutputItemAdded(_str(e, "response_id"), _item(e))
        case "response.output_audio.delta":
            return AudioDelta(_str(e, "response_id"), _str(e, "item_id"), _int(e, "content_index", 0), _str(e, "delta"))
        case "response.output_audio_transcript.delta" | "response.output_text.delta":
            return _text_event(e, False, "delta")
        case "response.output_audio_transcript.done":
            return _text_event(e, True, "transcript")
        case "response.output_text.done":
            return _text_event(e, True, "text")
        case "output_audio_buffer.started" | "output_audio_buffer.stopped" | "output_audio_buffer.cleared":
            return OutputAudioBuffer(t.rsplit(".", 1)[1], _opt_str(e, "response_id"))
        case "conversation.item.truncated":
            return ItemTruncated(_str(e, "item_id"), _int(e, "content_index", 0), _int(e, "audio_end_ms"))
        case "response.function_call_arguments.done":
            return FunctionCall(
                _str(e, "response_id"), _str(e, "item_id"), _str(e, "call_id"), _str(e, "name"), _str(e, "arguments")
            )
        case "error":
            err = _obj(e, "error")
            return ServerError(
                _opt_str(err, "type") or "error",
                _opt_str(err, "code"),
                _opt_str(err, "message") or "",
                _opt_str(err, "param"),
                _opt_str(err, "event_id"),
            )
        case _:
            return Other(t, e)
