"""What every behaviour gets (a committed user turn) and gives back (a reply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bridge.protocol.pcm import RATE, to_int16


@dataclass(frozen=True)
class Turn:
    """The context of one response: what the user said last, and how many responses came before."""

    index: int  # 0 for the session's first response
    user_text: str | None  # text of the last user item (input_text, or the audio transcript)
    user_audio_ms: float  # length of the last user audio item, 0 if none
    last_item_type: str | None  # e.g. "message", "function_call_output"
    items: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: str  # a JSON string, as on the wire (PROTOCOL.md 4.6)
    call_id: str | None = None  # None: the engine mints ``call_`` + 16


@dataclass(frozen=True)
class InjectedError:
    """An ``error`` event to emit instead of a reply (the response then ends ``failed``)."""

    code: str | None
    message: str
    type: str = "invalid_request_error"
    param: str | None = None


@dataclass(frozen=True)
class Reply:
    text: str = ""
    audio: bytes = b""  # PCM16 24 kHz mono
    function_calls: tuple[FunctionCall, ...] = ()
    error: InjectedError | None = None
    think_ms: int | None = None  # None: the config's think_ms
    user_transcript: str | None = None  # what the input transcription should say for this turn
    extra: dict[str, Any] = field(default_factory=dict)


class Behaviour(Protocol):
    """Decides what the "model" answers.

    ``echoes_input``: the user's audio goes straight back out (WS: as output deltas of one open response;
    WebRTC: relayed by the transport), VAD does not barge in and no reply is generated on its own.
    """

    name: str
    echoes_input: bool

    async def reply(self, turn: Turn) -> Reply: ...

    def transcribe(self, pcm24: bytes, turn_index: int) -> str:
        """The input transcription for a committed user audio item."""
        ...


class TimedBehaviour:
    """A behaviour whose replies last ``seconds`` (``--reply-seconds``); input is transcribed generically."""

    name = "timed"
    echoes_input = False

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds

    def transcribe(self, pcm24: bytes, turn_index: int) -> str:
        return default_transcript(pcm24)


def tone(seconds: float, freq: float = 440.0, level: float = 0.3) -> bytes:
    """A sine tone with 5 ms fades, PCM16 24 kHz mono."""
    n = max(0, int(seconds * RATE))
    t = np.arange(n) / RATE
    wave = level * np.sin(2 * np.pi * freq * t)
    fade = min(n // 2, RATE // 200)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return to_int16(wave).tobytes()


def default_transcript(pcm24: bytes) -> str:
    return f"(audio {len(pcm24) // 48} ms)"
