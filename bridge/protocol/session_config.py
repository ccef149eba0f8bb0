"""The GA session config bridge asks for (``RealtimeSessionCreateRequestGA``, PROTOCOL.md 1.1 / 4.7).

One builder for ``bridge run`` and ``bridge serve``. Audio formats are left out on purpose: WebRTC
negotiates Opus, and WS uses the 24 kHz PCM16 default.
"""

from __future__ import annotations

from typing import Any, Literal

TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"


def default_turn_detection() -> dict[str, Any]:
    """Server VAD with the observed session defaults (PROTOCOL.md 4.7), but a calmer 500 ms end of turn."""
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


def realtime_session(
    model: str,
    voice: str,
    instructions: str | None = None,
    *,
    transcription_model: str = TRANSCRIPTION_MODEL,
    language: str | None = None,
    turn_detection: dict[str, Any] | None = None,
    vad: bool = True,
    noise_reduction: Literal["near_field", "far_field", "off"] | None = None,
) -> dict[str, Any]:
    """``vad=False`` (push-to-talk) sends ``turn_detection: null``: the client commits each turn.
    ``noise_reduction``: ``audio.input.noise_reduction`` (``off``: null; None: not sent, the API's default)."""
    transcription: dict[str, Any] = {"model": transcription_model}
    if language:
        transcription["language"] = language
    td = (turn_detection or default_turn_detection()) if vad else None
    session: dict[str, Any] = {
        "type": "realtime",
        "model": model,
        "audio": {"input": {"transcription": transcription, "turn_detection": td}, "output": {"voice": voice}},
    }
    if noise_reduction is not None:
        session["audio"]["input"]["noise_reduction"] = None if noise_reduction == "off" else {"type": noise_reduction}
    if instructions:
        session["instructions"] = instructions
    return session
