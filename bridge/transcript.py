"""The JSONL transcript: one JSON object per line, written and flushed as it happens.

Every line is ``{"ts": ISO-8601 UTC with ms, "kind": ..., ...}``. Kinds: ``session``, ``user``, ``assistant``,
``interrupted``, ``error``, ``latency`` (and later ``tool``/``handoff``).

Conversation lines (``user``/``assistant``/``interrupted``) follow the conversation order given by the
server's ``previous_item_id``, not arrival order: user transcription is asynchronous and often completes
after the assistant has answered. :class:`Conversation` holds each item back until it is final and every
item before it has been written; a user item whose transcript never comes is released after
``hold_s`` seconds (text ``null``) so nothing waits forever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

# Speaking rate used to estimate how much of an interrupted reply's text was heard when the reply's full
# length is unknown (WebRTC never tells the client). ~15 characters/s is typical of TTS voices.
CHARS_PER_SECOND = 15.0


def iso_utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


def heard_text(text: str, played_ms: float, total_ms: float | None) -> str:
    """The prefix of ``text`` that ``played_ms`` of audio carried, cut at a word boundary."""
    if total_ms and total_ms > 0:
        n = round(len(text) * min(1.0, played_ms / total_ms))
    else:
        n = round(played_ms / 1000.0 * CHARS_PER_SECOND)
    if n >= len(text):
        return text
    cut = text[:n]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else cut


@dataclass
class Item:
    item_id: str
    role: str
    previous_item_id: str | None
    text: str = ""
    final: bool = False
    done_at: float | None = None
    audio_pending: bool = False  # reply audio still playing: hold the line until it has been heard
    interrupted_ms: float | None = None
    total_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> dict[str, Any]:
        if self.interrupted_ms is not None:
            return {
                "kind": "interrupted",
                "item_id": self.item_id,
                "text": heard_text(self.text, self.interrupted_ms, self.total_ms),
                "full_text": self.text,
                "played_ms": int(self.interrupted_ms),
            }
        kind = "user" if self.role == "user" else "assistant"
        return {
            "kind": kind,
            "item_id": self.item_id,
            "text": self.text or None,
            **self.extra,
        }


class Conversation:
    """Orders message items by ``previous_item_id`` and releases each once it is final."""

    def __init__(self, hold_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: dict[str, Item] = {}
        self._order: list[str] = []
        self._written: set[str] = set()
        self._hold_s = hold_s
        self._clock = clock

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def add(self, item_id: str, role: str, previous_item_id: str | None) -> Item:
        """Insert an item after ``previous_item_id`` (or at the end when unknown)."""
        if item_id in self._items:
            return self._items[item_id]
        item = Item(item_id, role, previous_item_id)
        self._items[item_id] = item
        if previous_item_id in self._items:
            self._order.insert(self._order.index(previous_item_id) + 1, item_id)
        else:
            self._order.append(item_id)
        return item

    def remove(self, item_id: str) -> None:
        if item_id in self._items and item_id not in self._written:
            self._order.remove(item_id)
            del self._items[item_id]

    def ready(self, force: bool = False) -> list[Item]:
        """Items that can be written now, in conversation order."""
        now = self._clock()
        out: list[Item] = []
        for item_id in self._order:
            if item_id in self._written:
                continue
            item = self._items[item_id]
            held_too_long = item.done_at is not None and now - item.done_at >= self._hold_s
            complete = item.final and (not item.audio_pending or item.interrupted_ms is not None)
            if not (complete or force or held_too_long):
                break
            self._written.add(item_id)
            out.append(item)
        return out


class TranscriptWriter:
    """Appends lines to a JSONL file, flushing each one, so a crash loses nothing already said."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._file: IO[str] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        line = {"ts": iso_utc(self._clock()), "kind": kind, **fields}
        if self._file is not None:
            self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._file.flush()
        return line

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def default_path(now: float | None = None) -> Path:
    stamp = datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("transcripts") / f"{stamp}.jsonl"
