"""JSONL log of every event the emulator sends and receives, audio payloads replaced by byte counts.

One line per event: ``{"t": unix, "dir": "in"|"out", "transport", "session", "event": {...}}``.
The same records are kept in memory (bounded) so tests can inspect them (``running_emulator().log_events()``).
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
from pathlib import Path
from typing import IO, Any, Literal

log = logging.getLogger(__name__)

Direction = Literal["in", "out"]
_AUDIO_KEYS = {"audio", "delta"}


def _audio_len(value: str) -> int | str:
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return value


def redact(event: Any, parent_type: str | None = None) -> Any:
    """A copy of ``event`` with base64 audio replaced by its decoded byte length."""
    if isinstance(event, dict):
        etype = event.get("type", parent_type)
        out = {}
        for key, value in event.items():
            is_audio = key == "audio" or (key == "delta" and etype == "response.output_audio.delta")
            if is_audio and isinstance(value, str) and key in _AUDIO_KEYS:
                out[key] = _audio_len(value)
            else:
                out[key] = redact(value, etype)
        return out
    if isinstance(event, list):
        return [redact(v, parent_type) for v in event]
    return event


class EventLog:
    """Append-only event log; the file is opened lazily on the first record (constructors do no I/O)."""

    def __init__(self, path: str | None = None, *, keep: int = 200_000, clock: Any = None) -> None:
        import time

        self._path = Path(path) if path else None
        self._file: IO[str] | None = None
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.dropped = 0  # records pushed out of the in-memory window
        self._clock = clock or time.time

    def record(self, direction: Direction, transport: str, session: str | None, event: Any) -> None:
        rec = {"t": self._clock(), "dir": direction, "transport": transport, "session": session, "event": redact(event)}
        if len(self._records) == self._records.maxlen:
            self.dropped += 1
        self._records.append(rec)
        if self._path is not None:
            if self._file is None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self._path.open("a", encoding="utf-8")
            self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._file.flush()

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
