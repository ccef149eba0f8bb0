"""The GA session objects (realtime and transcription): defaults and ``session.update`` merging
(PROTOCOL.md 1.1, 4.2, 7.2).

Pure functions over plain dicts. Shapes, types and bounds are checked against the official schema first
(:mod:`bridge.emulator.validation`); what is left here are the rules the schema cannot say. A failed update
changes nothing (PROTOCOL.md 3: "the rest of that update is discarded").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from bridge.emulator.engine_parts import ClientError
from bridge.emulator.validation import validate
from bridge.protocol import ids

DEFAULT_INSTRUCTIONS = "You are a helpful, witty, and friendly AI running in an offline emulator. Keep answers short."
SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,  # PROTOCOL.md 4.7: observed default 200, not the documented 500
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}
# The realtime model families (PROTOCOL.md top: the spec's model enum); anything else is ``invalid_model``.
MODEL_PREFIXES = ("gpt-realtime", "gpt-4o-realtime", "gpt-4o-mini-realtime", "gpt-audio")
_READ_ONLY = ("id", "object", "expires_at")
_REPLACED = ("instructions", "tools", "tool_choice", "tracing", "truncation", "prompt", "include",
             "parallel_tool_calls", "reasoning", "max_output_tokens", "output_modalities")  # fmt: skip
SESSION_REQUEST = {"oneOf": [{"$ref": "RealtimeSessionCreateRequestGA"},
                             {"$ref": "RealtimeTranscriptionSessionCreateRequestGA"}]}  # fmt: skip


@dataclass(frozen=True)
class SessionError(Exception):
    """A client mistake in a session object; becomes an ``error`` event or a 400."""

    code: str
    message: str
    param: str | None = None


def check_request(update: Any, path: str = "session") -> None:
    """A ``session`` object (update or new session) against the schema; raises :class:`SessionError`."""
    try:
        validate(SESSION_REQUEST, update, path)
    except ClientError as err:
        raise SessionError(err.code or "invalid_value", err.message, err.param) from None


def check_model(model: str) -> None:
    """``?model=`` and ``session.model`` of a new session: a realtime model, else ``invalid_model``
    (PROTOCOL.md 3, [PROBE 11]: 'Model "gpt-nope" is not supported in realtime mode.')."""
    if not model.startswith(MODEL_PREFIXES):
        raise SessionError("invalid_model", f'Model "{model}" is not supported in realtime mode.', "model")


def _audio_input(turn_detection: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": dict(PCM_FORMAT),
        "transcription": None,
        "noise_reduction": None,
        "turn_detection": turn_detection,
    }


def default_session(model: str) -> dict[str, Any]:
    """The realtime session as ``session.created`` shows it before any update (PROTOCOL.md 1.1, 7.1)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": ids.session_id(),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": 0,
        "audio": {
            "input": _audio_input(dict(SERVER_VAD_DEFAULTS)),
            "output": {"format": dict(PCM_FORMAT), "voice": "alloy", "speed": 1.0},
        },
        "include": None,
    }


def default_transcription_session() -> dict[str, Any]:
    """A transcription session as ``session.created`` shows it ([PROBE 7], PROTOCOL.md 7.2)."""
    td = {k: SERVER_VAD_DEFAULTS[k] for k in ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")}
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": ids.session_id(),
        "expires_at": 0,
        "audio": {"input": _audio_input(td)},
        "include": None,
    }


def session_from_secret(stored: dict[str, Any]) -> dict[str, Any]:
    """A new session (fresh id) configured as the client secret's session was (a full session object)."""
    session = copy.deepcopy(stored)
    session["id"], session["expires_at"] = ids.session_id(), 0
    return session


def new_session(request: Any, default_model: str) -> dict[str, Any]:
    """A session from a ``RealtimeSessionCreateRequestGA`` / transcription request (client secret, ``/calls``);
    the request must already be schema-checked. The model rule is the WS's ``?model=`` rule."""
    if request is None:
        return default_session(default_model)
    if request.get("type") == "transcription":
        return merge_session(default_transcription_session(), request)
    model = request.get("model", default_model)
    check_model(model)
    return merge_session(default_session(model), request, new=True)


def _turn_detection(td: dict[str, Any] | None) -> dict[str, Any] | None:
    """The given turn detection over its type's defaults (what ``session.updated`` shows)."""
    if td is None:
        return None
    base = SERVER_VAD_DEFAULTS if td["type"] == "server_vad" else SEMANTIC_VAD_DEFAULTS
    return {**base, **td}


def _transcription(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """As ``session.updated`` shows it: unset language and prompt come back as null ([PROBE 7])."""
    if value is None:
        return None
    return {"language": None, "prompt": None, **copy.deepcopy(value)}


def _format(fmt: dict[str, Any]) -> dict[str, Any]:
    return dict(PCM_FORMAT) if fmt.get("type", "audio/pcm") == "audio/pcm" else {"type": fmt["type"]}


def _merge_audio(current: dict[str, Any], update: dict[str, Any], *, voice_locked: bool) -> dict[str, Any]:
    out = copy.deepcopy(current)
    inp, outp = update.get("input") or {}, update.get("output") or {}
    if "format" in inp:
        out["input"]["format"] = _format(inp["format"])
    if "turn_detection" in inp:
        out["input"]["turn_detection"] = _turn_detection(inp["turn_detection"])
    if "transcription" in inp:
        out["input"]["transcription"] = _transcription(inp["transcription"])
    if "noise_reduction" in inp:
        out["input"]["noise_reduction"] = copy.deepcopy(inp["noise_reduction"])
    if not outp:
        return out
    if "format" in outp:
        out["output"]["format"] = _format(outp["format"])
    if "voice" in outp and outp["voice"] != out["output"]["voice"]:
        if voice_locked:
            raise SessionError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.audio.output.voice",
            )
        out["output"]["voice"] = copy.deepcopy(outp["voice"])
    if "speed" in outp:
        out["output"]["speed"] = float(outp["speed"])
    return out


def merge_session(
    current: dict[str, Any], update: Any, *, voice_locked: bool = False, new: bool = False
) -> dict[str, Any]:
    """``current`` with the fields present in ``update`` applied; raises :class:`SessionError`.

    The model never changes in an update: a ``model`` there is accepted and ignored (the spec: "any field
    except voice and model"; OpenAI's own Agents SDK sends one when it attaches to a call,
    docs/protocol-notes.md). ``new``: building a new session, whose model the request names. ``voice``
    cannot change once assistant audio exists (PROTOCOL.md 4.2).
    """
    check_request(update)
    if update["type"] != current["type"]:
        kinds = {"realtime": "a realtime", "transcription": "a transcription"}
        raise SessionError(
            "invalid_value",
            f"Passing {kinds[update['type']]} session update event to {kinds[current['type']]} session is not allowed.",
            "session.type",
        )
    out = copy.deepcopy(current)
    if new and "model" in update:
        out["model"] = update["model"]
    mods = update.get("output_modalities")
    if mods is not None and len(set(mods)) != 1:
        raise SessionError(
            "invalid_value", "output_modalities must be ['audio'] or ['text'], not both.", "session.output_modalities"
        )
    if "audio" in update:
        out["audio"] = _merge_audio(current["audio"], update["audio"], voice_locked=voice_locked)
    for key in _REPLACED:
        if key in update:
            out[key] = copy.deepcopy(update[key])
    if mods is not None:
        out["output_modalities"] = [mods[0]]
    for key in _READ_ONLY:
        out[key] = current[key]
    return out
