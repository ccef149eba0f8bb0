"""What a call writes and keeps across its connections: transcript, console, conversation order, metrics.

One :class:`CallRecord` per call. Each connection's :class:`bridge.call.runtime.Runtime` writes into it,
so nothing is lost or reordered when a connection is replaced: items held back for ordering
(:class:`bridge.transcript.Conversation`) are flushed when their connection ends, and the metrics the
latency lab and the tests read accumulate over the whole call.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bridge.faults import Faults
from bridge.transcript import Conversation, Item, TranscriptWriter

log = logging.getLogger(__name__)


class Console(Protocol):
    def line(self, who: str, text: str) -> None: ...
    def error(self, text: str) -> None: ...


class PrintConsole:
    """Plain stdout console: one readable line per turn, errors on stderr."""

    def line(self, who: str, text: str) -> None:
        print(f"{who:>10}: {text}", flush=True)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=sys.stderr, flush=True)


@dataclass
class Metrics:
    """Numbers the latency lab and the tests read, over the whole call."""

    response_ms: list[float] = field(default_factory=list)
    bargein_ms: list[float] = field(default_factory=list)
    stop_after_event_ms: list[float] = field(default_factory=list)
    truncate_gap_ms: list[float] = field(default_factory=list)
    dropped_late_audio_ms: float = 0.0
    errors: int = 0
    malformed: int = 0  # server events we could not use (shape known, content broken)
    internal_errors: int = 0  # bugs that ended a connection (logged with their traceback)


HISTORY_MAX = 500  # turns remembered for replaying into a new session (the replay budget picks the last few)


@dataclass(frozen=True)
class Turn:
    """One step of the conversation as words, for replaying it into a new session."""

    role: Literal["user", "assistant", "tool", "note"]
    text: str
    interrupted: bool = False
    """An assistant turn cut by the user: ``text`` is what was heard."""


class CallRecord:
    """The transcript (JSONL + console), the conversation's order, the metrics and the history (what was
    said, in words) of one call."""

    def __init__(
        self,
        transcript: TranscriptWriter,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transcript = transcript
        self.console: Console = console or PrintConsole()
        self.clock = clock
        self.conv = Conversation(clock=clock)
        self.metrics = Metrics()
        self.history: deque[Turn] = deque(maxlen=HISTORY_MAX)
        self.malformed = Faults("malformed server event, dropped", log, level=logging.WARNING)
        """Events of a type we act on whose fields are missing or wrong: counted, the first logged."""

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self.transcript.write(kind, **fields)

    def flush(self, force: bool = False) -> None:
        """Write every conversation item that is ready (all of them with ``force``: a connection ended)."""
        for item in self.conv.ready(force=force):
            self._write_item(item)

    def remember(self, turn: Turn) -> None:
        self.history.append(turn)

    def _write_item(self, item: Item) -> None:
        line = item.line()
        kind = line.pop("kind")
        self.transcript.write(kind, **line)
        text = line.get("text")
        if text:
            role: Literal["user", "assistant"] = "user" if kind == "user" else "assistant"
            self.remember(Turn(role, text, interrupted=kind == "interrupted"))
        if kind == "interrupted":
            self.console.line("assistant", f"{line['text']} [interrupted at {line['played_ms']} ms]")
