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


def _text_event(e: dict[str, Any], final: bool, key: str) -> AssistantText:
    return AssistantText(e.get("response_id", ""), e.get("item_id", ""), e.get(key) or "", final)


def parse(e: dict[str, Any]) -> Event:
    """Turn one server event (already JSON-decoded) into a typed event; unknown or malformed ones are ``Other``."""
    t = e.get("type")
    if not isinstance(t, str):
        return Other("", e)
    try:
        return _parse(t, e)
    except (KeyError, TypeError, ValueError, AttributeError):
        return Other(t, e)


def _parse(t: str, e: dict[str, Any]) -> Event:  # noqa: C901 - a flat dispatch table reads best
    match t:
        case "session.created" | "session.updated":
            return SessionChanged(t, e["session"])
        case "input_audio_buffer.speech_started":
            return SpeechStarted(int(e["audio_start_ms"]), e["item_id"])
        case "input_audio_buffer.speech_stopped":
            return SpeechStopped(int(e["audio_end_ms"]), e["item_id"])
        case "conversation.item.added" | "conversation.item.done" | "conversation.item.created":
            return ItemAdded(e["item"], e.get("previous_item_id"), t == "conversation.item.done")
        case "conversation.item.input_audio_transcription.delta":
            return InputTranscript(e["item_id"], e.get("delta") or "", False)
        case "conversation.item.input_audio_transcription.completed":
            return InputTranscript(e["item_id"], e.get("transcript") or "", True)
        case "conversation.item.input_audio_transcription.failed":
            return InputTranscript(e["item_id"], "", True, failed=True)
        case "response.created":
            return ResponseCreated(e["response"]["id"])
        case "response.done":
            r = e["response"]
            details = r.get("status_details") or {}
            usage = r.get("usage") if isinstance(r.get("usage"), dict) else None
            return ResponseDone(r["id"], r.get("status", ""), details.get("reason"), r.get("output") or [], usage)
        case "response.output_item.added":
            return OutputItemAdded(e["response_id"], e["item"])
        case "response.output_audio.delta":
            return AudioDelta(e["response_id"], e["item_id"], int(e.get("content_index", 0)), e["delta"])
        case "response.output_audio_transcript.delta" | "response.output_text.delta":
            return _text_event(e, False, "delta")
        case "response.output_audio_transcript.done":
            return _text_event(e, True, "transcript")
        case "response.output_text.done":
            return _text_event(e, True, "text")
        case "output_audio_buffer.started" | "output_audio_buffer.stopped" | "output_audio_buffer.cleared":
            return OutputAudioBuffer(t.rsplit(".", 1)[1], e.get("response_id"))
        case "conversation.item.truncated":
            return ItemTruncated(e["item_id"], int(e.get("content_index", 0)), int(e["audio_end_ms"]))
        case "response.function_call_arguments.done":
            return FunctionCall(e["response_id"], e["item_id"], e["call_id"], e["name"], e["arguments"])
        case "error":
            err = e["error"]
            return ServerError(
                err.get("type") or "error",
                err.get("code"),
                err.get("message") or "",
                err.get("param"),
                err.get("event_id"),
            )
        case _:
            return Other(t, e)
