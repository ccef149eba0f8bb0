"""The GA realtime session object: defaults, validation and ``session.update`` merging (PROTOCOL.md 1.1, 4.2).

Pure functions over plain dicts. A failed update changes nothing (PROTOCOL.md 3: "the rest of that update
is discarded").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from bridge.protocol import ids

DEFAULT_INSTRUCTIONS = "You are a helpful, witty, and friendly AI running in an offline emulator. Keep answers short."
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})
SESSION_FIELDS = frozenset(
    {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "include",
        "tracing",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning",
        "max_output_tokens",
        "truncation",
        "prompt",
        # echoed back by clients that resend a whole session object; read-only, ignored
        "id",
        "object",
        "expires_at",
    }
)
_READ_ONLY = ("id", "object", "expires_at")
AUDIO_IN_FIELDS = frozenset({"format", "transcription", "noise_reduction", "turn_detection"})
AUDIO_OUT_FIELDS = frozenset({"format", "voice", "speed"})
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
_READ_ONLY_FIELDS = ("id", "object", "expires_at")


@dataclass(frozen=True)
class SessionError(Exception):
    """A client mistake in a session object; becomes an ``error`` event or a 400."""

    code: str
    message: str
    param: str | None = None


def check_model(model: str) -> None:
    """``?model=`` and ``session.model`` of a new session: a realtime model, else ``invalid_model``
    (PROTOCOL.md 3, [PROBE 11]: 'Model "gpt-nope" is not supported in realtime mode.')."""
    if not model.startswith(MODEL_PREFIXES):
        raise SessionError("invalid_model", f'Model "{model}" is not supported in realtime mode.', "model")


def default_transcription_session() -> dict[str, Any]:
    """A transcription session as ``session.created`` shows it ([PROBE 7], PROTOCOL.md 7.2)."""
    td = {k: SERVER_VAD_DEFAULTS[k] for k in ("type", "threshold", "prefix_padding_ms", "silence_duration_ms")}
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": ids.session_id(),
        "expires_at": 0,
        "audio": {
            "input": {
                "format": dict(PCM_FORMAT),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": td,
            }
        },
        "include": None,
    }


def session_from_secret(stored: dict[str, Any]) -> dict[str, Any]:
    """A new session (fresh id) configured as the client secret's session was."""
    update = {k: v for k, v in stored.items() if k not in _READ_ONLY_FIELDS}
    if stored.get("type") == "transcription":
        return merge_session(default_transcription_session(), update)
    return merge_session(default_session(stored["model"]), update)


def default_session(model: str) -> dict[str, Any]:
    """The session as ``session.created`` shows it before any update (PROTOCOL.md 1.1, 7.1)."""
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
            "input": {
                "format": dict(PCM_FORMAT),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD_DEFAULTS),
            },
            "output": {"format": dict(PCM_FORMAT), "voice": "alloy", "speed": 1.0},
        },
        "include": None,
    }


def _check_format(fmt: Any, param: str) -> dict[str, Any]:
    if not isinstance(fmt, dict) or fmt.get("type") not in ("audio/pcm", "audio/pcmu", "audio/pcma"):
        raise SessionError("invalid_value", "Invalid value for audio format type.", param + ".type")
    if fmt["type"] == "audio/pcm":
        rate = fmt.get("rate", 24000)
        if not isinstance(rate, int) or rate < 24000:
            raise SessionError(
                "integer_below_min_value", f"Invalid '{param}.rate': Expected a value >= 24000.", param + ".rate"
            )
        if rate > 24000:
            raise SessionError(
                "integer_above_max_value", f"Invalid '{param}.rate': Expected a value <= 24000.", param + ".rate"
            )
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": fmt["type"]}


def _turn_detection(td: Any) -> dict[str, Any] | None:
    if td is None:
        return None
    if not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad"):
        raise SessionError("invalid_value", "Invalid turn_detection type.", "session.audio.input.turn_detection.type")
    base = SERVER_VAD_DEFAULTS if td["type"] == "server_vad" else SEMANTIC_VAD_DEFAULTS
    unknown = set(td) - set(base)
    if unknown:
        name = sorted(unknown)[0]
        raise SessionError(
            "unknown_parameter",
            f"Unknown parameter: 'session.audio.input.turn_detection.{name}'.",
            f"session.audio.input.turn_detection.{name}",
        )
    merged = {**base, **td}
    if td["type"] == "server_vad":
        threshold = merged["threshold"]
        if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
            raise SessionError(
                "invalid_value", "threshold must be between 0 and 1.", "session.audio.input.turn_detection.threshold"
            )
        idle = merged["idle_timeout_ms"]
        if idle is not None and not 5000 <= idle <= 30000:
            raise SessionError(
                "invalid_value",
                "idle_timeout_ms must be between 5000 and 30000.",
                "session.audio.input.turn_detection.idle_timeout_ms",
            )
    return merged


def _merge_audio(current: dict[str, Any], update: Any, *, voice_locked: bool) -> dict[str, Any]:
    if not isinstance(update, dict):
        raise SessionError("invalid_type", "Invalid type for 'session.audio'.", "session.audio")
    out = copy.deepcopy(current)
    for side, allowed in (("input", AUDIO_IN_FIELDS), ("output", AUDIO_OUT_FIELDS)):
        part = update.get(side)
        if part is None:
            continue
        for key in part:
            if key not in allowed:
                raise SessionError(
                    "unknown_parameter",
                    f"Unknown parameter: 'session.audio.{side}.{key}'.",
                    f"session.audio.{side}.{key}",
                )
        if "format" in part:
            out[side]["format"] = _check_format(part["format"], f"session.audio.{side}.format")
    for key in set(update) - {"input", "output"}:
        raise SessionError("unknown_parameter", f"Unknown parameter: 'session.audio.{key}'.", f"session.audio.{key}")
    inp = update.get("input") or {}
    if "turn_detection" in inp:
        out["input"]["turn_detection"] = _turn_detection(inp["turn_detection"])
    for key in ("transcription", "noise_reduction"):
        if key in inp:
            out["input"][key] = copy.deepcopy(inp[key])
    outp = update.get("output") or {}
    if "voice" in outp and outp["voice"] != out["output"]["voice"]:
        voice = outp["voice"]
        if voice_locked:
            raise SessionError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                "session.audio.output.voice",
            )
        if not (voice in VOICES or (isinstance(voice, dict) and "id" in voice)):
            raise SessionError("invalid_value", f"Invalid value: '{voice}'.", "session.audio.output.voice")
        out["output"]["voice"] = voice
    if "speed" in outp:
        speed = outp["speed"]
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 1.5:
            raise SessionError("invalid_value", "speed must be between 0.25 and 1.5.", "session.audio.output.speed")
        out["output"]["speed"] = float(speed)
    return out


def merge_session(
    current: dict[str, Any], update: Any, *, voice_locked: bool = False, new: bool = False
) -> dict[str, Any]:
    """``current`` with the fields present in ``update`` applied; raises :class:`SessionError`.

    ``model`` cannot change and ``voice`` cannot change once assistant audio exists (PROTOCOL.md 4.2).
    """
    if not isinstance(update, dict):
        raise SessionError("invalid_type", "Invalid type for 'session': expected an object.", "session")
    for key in update:
        if key not in SESSION_FIELDS:
            raise SessionError("unknown_parameter", f"Unknown parameter: 'session.{key}'.", f"session.{key}")
    if "type" not in update:
        raise SessionError("missing_required_parameter", "Missing required parameter: 'session.type'.", "session.type")
    if update["type"] != "realtime":
        raise SessionError(
            "invalid_value", f"Invalid value: '{update['type']}'. Supported values are: 'realtime'.", "session.type"
        )
    out = copy.deepcopy(current)
    if new and isinstance(update.get("model"), str):
        out["model"] = update["model"]
    if "output_modalities" in update:
        mods = update["output_modalities"]
        if mods not in (["audio"], ["text"]):
            raise SessionError(
                "invalid_value", "output_modalities must be ['audio'] or ['text'].", "session.output_modalities"
            )
        out["output_modalities"] = list(mods)
    if "audio" in update:
        out["audio"] = _merge_audio(current["audio"], update["audio"], voice_locked=voice_locked)
    if "max_output_tokens" in update:
        mot = update["max_output_tokens"]
        if mot != "inf" and not (isinstance(mot, int) and 1 <= mot <= 4096):
            raise SessionError(
                "invalid_value", "max_output_tokens must be 1..4096 or 'inf'.", "session.max_output_tokens"
            )
        out["max_output_tokens"] = mot
    for key in (
        "instructions",
        "tools",
        "tool_choice",
        "tracing",
        "truncation",
        "prompt",
        "include",
        "parallel_tool_calls",
        "reasoning",
    ):
        if key in update:
            out[key] = copy.deepcopy(update[key])
    for key in _READ_ONLY:
        out[key] = current[key]
    return out


def session_from_request(request: Any, default_model: str) -> dict[str, Any]:
    """A new session from a ``RealtimeSessionCreateRequestGA`` (client secret, ``/calls`` multipart)."""
    model = request.get("model", default_model) if isinstance(request, dict) else default_model
    base = default_session(model if isinstance(model, str) else default_model)
    if request is None:
        return base
    return merge_session(base, request)
