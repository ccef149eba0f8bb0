"""Plain data and pure helpers of the engine: the AudioOut seam, client errors, response state, items.

Kept apart from ``engine.py`` so the session logic there stays readable; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import binascii
import copy
import random
import string
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.protocol import ids
from bridge.protocol.pcm import BYTES_PER_MS, b64decode

_BASE62 = string.ascii_letters + string.digits


class AudioOut(Protocol):
    """WebRTC output for reply audio (implemented by the transport in ``webrtc.py``)."""

    def begin(self, response_id: str, item_id: str) -> None: ...

    def write(self, pcm24: bytes) -> None: ...

    def end(self) -> None: ...

    def interrupt(self) -> int:
        """Stop now; return the ms of this item's audio actually put on the wire."""
        ...


class ClientError(Exception):
    def __init__(self, code: str | None, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class ResponseState:
    id: str
    conversation: bool  # False: out-of-band (conversation "none")
    modalities: list[str]
    metadata: Any
    voice: Any
    fmt: dict[str, Any]
    max_output_tokens: Any
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    text_chars: int = 0
    audio_begun: bool = False  # AudioOut.begin called (WebRTC)
    first_audio_at: float | None = None  # monotonic time of the first audio chunk (WS playback estimate)
    audio_item: str | None = None
    output_started: bool = False
    output_stopped: bool = False
    cleared: bool = False
    done: bool = False

    def as_object(self, status: str, details: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": copy.deepcopy(self.output),
            "conversation_id": None,  # filled by the engine
            "output_modalities": list(self.modalities),
            "max_output_tokens": self.max_output_tokens,
            "audio": {"output": {"format": dict(self.fmt), "voice": self.voice}},
            "usage": usage,
            "metadata": self.metadata,
        }


def obfuscation(delta: str) -> str:
    """The random padding the service adds to streamed deltas so their sizes do not leak their tokens
    (PROTOCOL.md 4.1, [PROBE 7/8]: e.g. "hbKWaqwA7ya"); clients ignore it."""
    return "".join(random.choices(_BASE62, k=max(4, 16 - len(delta))))


def transcription_deltas(model: str | None, text: str) -> list[str]:
    """whisper-1 sends the whole text in one delta; the gpt-4o-* transcribers stream word by word
    (PROTOCOL.md 4.4: [TRACE-WEBRTC-BETA], [PROBE 7])."""
    if model == "whisper-1" or not text:
        return [text] if text else []
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def transcription_usage(model: str | None, text: str, pcm_bytes: int) -> dict[str, Any]:
    """``usage`` of a completed transcription: seconds for whisper-1, tokens for the others ([PROBE 7])."""
    if model == "whisper-1":
        return {"type": "duration", "seconds": round(pcm_bytes / 48000, 3)}
    audio_tokens = max(1, pcm_bytes // 48 // 100)  # ~10 audio tokens per second ([PROBE 7]: 1.6 s -> 16)
    text_tokens = max(1, len(text) // 4)
    return {
        "type": "tokens",
        "total_tokens": audio_tokens + text_tokens,
        "input_tokens": audio_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
        "output_tokens": text_tokens,
    }


def split_words(text: str) -> list[str]:
    """Transcript deltas: words with their following space, as the model streams them."""
    if not text:
        return []
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]] if parts[-1] else [p + " " for p in parts[:-1]]


def response_usage(resp: ResponseState) -> dict[str, Any]:
    audio_tokens = int(resp.audio_bytes / BYTES_PER_MS / 50)  # ~1 output audio token per 50 ms
    text_tokens = max(1, resp.text_chars // 4) if resp.text_chars else 0
    out_tokens = audio_tokens + text_tokens
    in_tokens = 120
    return {
        "total_tokens": in_tokens + out_tokens,
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "input_token_details": {
            "text_tokens": in_tokens,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
    }


def normalise_item(raw: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    item = copy.deepcopy(raw)
    kind = item.get("type")
    audio: bytes | None = None
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "system", "assistant"):
            raise ClientError("invalid_value", f"Invalid value: '{role}'.", "item.role")
        content = item.get("content")
        if not isinstance(content, list):
            raise ClientError(
                "missing_required_parameter", "Missing required parameter: 'item.content'.", "item.content"
            )
        allowed = {
            "user": {"input_text", "input_audio", "input_image"},
            "system": {"input_text"},
            "assistant": {"output_text"},
        }[role]
        for n, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in allowed:
                raise ClientError(
                    "invalid_value", f"Invalid content type for a {role} message.", f"item.content[{n}].type"
                )
            if part["type"] == "input_audio":
                if "audio" in part:
                    try:
                        audio = b64decode(part.pop("audio"))
                    except (binascii.Error, ValueError):
                        raise ClientError(
                            "invalid_value", "Invalid base64 audio.", f"item.content[{n}].audio"
                        ) from None
                part.setdefault("transcript", None)
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), str):
            raise ClientError(
                "missing_required_parameter", "function_call_output needs 'call_id' and 'output'.", "item.call_id"
            )
    elif kind == "function_call":
        if not isinstance(item.get("name"), str):
            raise ClientError("missing_required_parameter", "Missing required parameter: 'item.name'.", "item.name")
        item.setdefault("call_id", ids.call_id())
        item.setdefault("arguments", "")
    else:
        raise ClientError("invalid_value", f"Invalid value: '{kind}'.", "item.type")
    item.setdefault("id", ids.item_id())
    item["object"] = "realtime.item"
    item["status"] = "completed"
    return item, audio
