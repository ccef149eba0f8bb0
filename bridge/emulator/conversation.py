"""The conversation: ordered items plus their audio, pure (no events, no I/O).

Items are GA ``RealtimeConversationItem`` dicts (PROTOCOL.md 4.3) as they appear in events: audio is
kept aside in ``audio`` and only put back by :meth:`Conversation.with_audio` (``conversation.item.retrieve``).
"""

from __future__ import annotations

import copy
from typing import Any

from bridge.protocol.pcm import b64encode


class Conversation:
    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self.audio: dict[str, bytes] = {}  # item id -> PCM16 24 kHz (user input audio, assistant output)
        self.heard: dict[str, str] = {}  # user audio item id -> what the "model" understood (transcribed or not)
        self.seeded_assistant_text: set[str] = set()  # assistant text items the client created

    def __contains__(self, item_id: object) -> bool:
        return any(i["id"] == item_id for i in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> tuple[dict[str, Any], ...]:
        return tuple(self._items)

    def get(self, item_id: str) -> dict[str, Any] | None:
        return next((i for i in self._items if i["id"] == item_id), None)

    def last_id(self) -> str | None:
        return self._items[-1]["id"] if self._items else None

    def previous_id(self, item_id: str) -> str | None:
        for n, item in enumerate(self._items):
            if item["id"] == item_id:
                return self._items[n - 1]["id"] if n else None
        return None

    def insert(self, item: dict[str, Any], after: str | None = None, *, first: bool = False) -> str | None:
        """Insert ``item`` (at the end, first, or after ``after``); returns its previous item id."""
        if first:
            self._items.insert(0, item)
        elif after is not None:
            pos = next(n for n, i in enumerate(self._items) if i["id"] == after)
            self._items.insert(pos + 1, item)
        else:
            self._items.append(item)
        return self.previous_id(item["id"])

    def replace(self, item: dict[str, Any]) -> None:
        for n, old in enumerate(self._items):
            if old["id"] == item["id"]:
                self._items[n] = item
                return

    def delete(self, item_id: str) -> bool:
        before = len(self._items)
        self._items = [i for i in self._items if i["id"] != item_id]
        self.audio.pop(item_id, None)
        self.heard.pop(item_id, None)
        self.seeded_assistant_text.discard(item_id)
        return len(self._items) != before

    def as_heard(self) -> tuple[dict[str, Any], ...]:
        """The items as the model understands them: user audio carries what was heard as its transcript."""
        out = []
        for item in self._items:
            heard = self.heard.get(item["id"])
            if heard is not None:
                item = copy.deepcopy(item)
                for part in item.get("content", []):
                    if part.get("type") == "input_audio" and not part.get("transcript"):
                        part["transcript"] = heard
            out.append(item)
        return tuple(out)

    def with_audio(self, item_id: str) -> dict[str, Any] | None:
        """The item with its audio inlined as base64 (``conversation.item.retrieved``)."""
        item = self.get(item_id)
        if item is None:
            return None
        out = copy.deepcopy(item)
        pcm = self.audio.get(item_id)
        if pcm is not None:
            for part in out.get("content", []):
                if part.get("type") in ("input_audio", "output_audio"):
                    part["audio"] = b64encode(pcm)
        return out
