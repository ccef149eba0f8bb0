"""Telling a new session what was said: the conversation replayed after a reconnect, and a guard that the
replies after it are spoken.

The history is the call's :class:`bridge.call.record.Turn`\\ s, in words: user turns as transcribed,
assistant turns as heard (an interrupted turn with only the text that was played), tool calls as their
results, handoffs as a note. Within a budget (the last ``turns`` turns and at most ``chars`` characters)
it is sent with ``conversation.item.create`` (PROTOCOL.md 4.3) in one of two shapes:

- ``summary`` (default): ONE ``system`` message holding the conversation as a role-labelled transcript.
  Assistant text items are not used at all, which is deliberate: a session seeded with assistant *text*
  items may start answering in text only (reported against the real API: openai/openai-realtime-api-beta
  issue 72; LiveKit users). Pipecat packs history into one message for the same reason; the system role
  keeps the model from taking it for a new user turn. One event also makes the replay one round trip.
- ``items``: one item per turn, as LiveKit and openai-agents-js (``updateHistory``, PR 1175) replay it:
  user turns as ``input_text``, assistant turns as ``output_text``, tools and notes as ``system``. Closer
  to the original structure, and exposed to the trap above.

Either way the session is then asked for audio explicitly (``session.update`` with
``output_modalities: ["audio"]``), and :class:`SpokenReplies` watches every completed response: one that
comes back without audio (text only) is deleted and asked for again with ``output_modalities: ["audio"]``,
the recovery the trap needs (the emulator reproduces it: ``--text-only-after-assistant-text``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from bridge.call.record import Turn
from bridge.protocol import events as ev

log = logging.getLogger(__name__)

ReplayShape = Literal["summary", "items"]
REPLAY_ID_PREFIX = "replay_"  # client-supplied item ids are kept by the server (PROTOCOL.md 4.1)
SUMMARY_HEAD = (
    "The connection to this conversation was lost and restored in a new session. What was said before, "
    "oldest first (continue from there; do not greet the user again or repeat yourself):"
)
LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool", "note": "Note"}


@dataclass(frozen=True)
class ReplayBudget:
    """How much of the conversation a new session is told: the last ``turns`` turns, at most ``chars``
    characters of text (older turns go first)."""

    turns: int = 40
    chars: int = 8000
    shape: ReplayShape = "summary"


def within(history: Iterable[Turn], budget: ReplayBudget) -> list[Turn]:
    """The newest turns that fit the budget, oldest first."""
    picked: list[Turn] = []
    used = 0
    for turn in reversed(list(history)):
        if len(picked) >= budget.turns or used + len(turn.text) > budget.chars:
            break
        picked.append(turn)
        used += len(turn.text)
    return picked[::-1]


def _line(turn: Turn) -> str:
    if turn.interrupted:
        return f"Assistant (interrupted; the user heard only): {turn.text}"
    return f"{LABELS[turn.role]}: {turn.text}"


def replay_events(history: Iterable[Turn], budget: ReplayBudget) -> list[dict[str, Any]]:
    """The client events that tell a new session what was said (empty when nothing was)."""
    turns = within(history, budget)
    if not turns:
        return []
    if budget.shape == "summary":
        text = "\n".join([SUMMARY_HEAD, *(_line(t) for t in turns)])
        return [_create(f"{REPLAY_ID_PREFIX}0", "system", "input_text", text)]
    out = []
    for n, turn in enumerate(turns):
        item_id = f"{REPLAY_ID_PREFIX}{n}"
        if turn.role == "user":
            out.append(_create(item_id, "user", "input_text", turn.text))
        elif turn.role == "assistant":
            out.append(_create(item_id, "assistant", "output_text", turn.text))
        else:
            out.append(_create(item_id, "system", "input_text", _line(turn)))
    return out


def _create(item_id: str, role: str, kind: str, text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"id": item_id, "type": "message", "role": role, "content": [{"type": kind, "text": text}]},
    }


ASK_FOR_AUDIO = {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}}


class SpokenReplies:
    """Watches a session's completed responses; one without audio is deleted and asked for again, spoken
    (see module docstring). ``recovered`` counts them."""

    def __init__(self) -> None:
        self.recovered = 0

    def recovery(self, e: ev.Event) -> list[dict[str, Any]]:
        """The client events to send for this server event (none, unless it is a text-only reply)."""
        if not isinstance(e, ev.ResponseDone) or e.status != "completed":
            return []
        texts = [item for item in e.output if _is_assistant_message(item)]
        if not texts or any(_has_audio(item) for item in texts):
            return []
        self.recovered += 1
        log.warning("a reply came back as text only (%s): asking for it again, spoken", e.response_id)
        deletes = [{"type": "conversation.item.delete", "item_id": item["id"]} for item in texts if item.get("id")]
        return [*deletes, {"type": "response.create", "response": {"output_modalities": ["audio"]}}]


def _is_assistant_message(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "message" and item.get("role") == "assistant"


def _has_audio(item: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("type") in ("output_audio", "audio") for c in item.get("content") or [])
