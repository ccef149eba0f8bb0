"""``script:FILE``: replies read from a JSON or TOML file, one turn per response.

Format (JSON shown; TOML uses ``[[turns]]`` tables with the same keys)::

    {"turns": [
      {"user": "what's the weather in Paris",       # input transcription for this turn (optional)
       "think_ms": 200,                             # delay before the reply (optional)
       "text": "Let me check.",                     # transcript / output text (optional)
       "audio": "tone" | "speech" | "silence" | "none" | "reply.wav",   # default "tone"
       "seconds": 1.5,                              # tone/silence length (default: --reply-seconds)
       "function_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "call_id": "call_x"}],
       "error": {"code": "server_error", "message": "boom", "type": "server_error"}},
      {"text": "It is sunny."}
    ]}

Each response the engine generates consumes the next turn, so after a function call the client's
``function_call_output`` + ``response.create`` gets the following turn (PROTOCOL.md 4.6). When the
turns run out, every further reply is a short tone saying so.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from bridge.emulator.behaviours.base import (
    FunctionCall,
    InjectedError,
    Reply,
    Turn,
    default_transcript,
    tone,
)
from bridge.emulator.behaviours.speech import parse_wav, synthesize
from bridge.errors import ConfigError
from bridge.protocol.pcm import RATE


def load_script(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read script {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw) if path.suffix == ".toml" else json.loads(raw)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"script {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    turns = data.get("turns") if isinstance(data, dict) else data
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ConfigError(f"script {path}: expected {{'turns': [ {{...}}, ... ]}}")
    return turns


class ScriptBehaviour:
    name = "script"
    echoes_input = False

    def __init__(self, path: str | Path, seconds: float = 2.0) -> None:
        self.path = Path(path)
        self.seconds = seconds
        self.turns = load_script(self.path)  # read at start-up so a bad file fails the CLI at once

    def _turn(self, index: int) -> dict[str, Any] | None:
        return self.turns[index] if index < len(self.turns) else None

    async def _audio(self, spec: dict[str, Any], text: str) -> bytes:
        kind = spec.get("audio", "tone")
        seconds = float(spec.get("seconds", self.seconds))
        if kind == "none":
            return b""
        if kind == "silence":
            return b"\x00" * (int(seconds * RATE) * 2)
        if kind == "speech":
            return await synthesize(text or "okay") or tone(seconds)
        if kind == "tone":
            return tone(seconds)
        wav = (self.path.parent / kind).read_bytes()
        rate, pcm = parse_wav(wav)
        if rate != RATE:
            raise ConfigError(f"{kind}: expected a 24 kHz mono 16-bit WAV, got {rate} Hz")
        return pcm

    async def reply(self, turn: Turn) -> Reply:
        spec = self._turn(turn.index)
        if spec is None:
            return Reply(text="The script has no more turns.", audio=tone(0.5))
        text = str(spec.get("text", ""))
        calls = tuple(
            FunctionCall(
                name=str(c["name"]),
                arguments=c["arguments"] if isinstance(c.get("arguments"), str) else json.dumps(c.get("arguments", {})),
                call_id=c.get("call_id"),
            )
            for c in spec.get("function_calls", ())
        )
        err = spec.get("error")
        error = None
        if isinstance(err, dict):
            error = InjectedError(
                code=err.get("code"),
                message=str(err.get("message", "injected error")),
                type=str(err.get("type", "invalid_request_error")),
                param=err.get("param"),
            )
        audio = b"" if error or (calls and "audio" not in spec and not text) else await self._audio(spec, text)
        think = spec.get("think_ms")
        return Reply(
            text=text,
            audio=audio,
            function_calls=calls,
            error=error,
            think_ms=int(think) if think is not None else None,
            user_transcript=spec.get("user"),
        )

    def transcribe(self, pcm24: bytes, turn_index: int) -> str:
        spec = self._turn(turn_index)
        if spec is not None and "user" in spec:
            return str(spec["user"])
        return default_transcript(pcm24)
