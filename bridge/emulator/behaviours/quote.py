"""``--quote-context``: any behaviour's replies also quote the most recent earlier user turn.

So a test can check that a session knows what was said before (e.g. history a client replayed after a
reconnect): the reply to turn N says ``You said before: "<turn N-1>".``. The earlier turn's words are its
text (``input_text``) or what the "model" heard of its audio (the behaviour's transcription).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bridge.emulator.behaviours.base import Behaviour, Reply, Turn


def user_words(item: dict[str, Any]) -> str | None:
    for part in item.get("content") or []:
        text = part.get("text") if part.get("type") == "input_text" else part.get("transcript")
        if text:
            return str(text)
    return None


def earlier_user_turn(items: tuple[dict[str, Any], ...]) -> str | None:
    """The words of the user turn before the latest one, or None."""
    said = [w for w in (user_words(i) for i in items if i.get("role") == "user") if w]
    return said[-2] if len(said) >= 2 else None


class QuotingBehaviour:
    def __init__(self, inner: Behaviour) -> None:
        self.inner = inner
        self.name = inner.name
        self.echoes_input = inner.echoes_input

    async def reply(self, turn: Turn) -> Reply:
        reply = await self.inner.reply(turn)
        earlier = earlier_user_turn(turn.items)
        if earlier is None or reply.error is not None:
            return reply
        quote = f'You said before: "{earlier}".'
        return replace(reply, text=f"{reply.text} {quote}".strip())

    def transcribe(self, pcm24: bytes, turn_index: int) -> str:
        return self.inner.transcribe(pcm24, turn_index)
