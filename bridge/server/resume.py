"""Resuming a browser call after a drop (``X-Resume-Call``): which agent the new call starts with.

The page (web/js/ui.js) reconnects a dropped call with a new offer to ``POST /api/call`` and names the call
it replaces in ``X-Resume-Call``. The new call then starts with the agent that was active in the old one
(its instructions and tools), not the start agent, so the conversation goes on where it was. The old call
is found among this process's live calls, its recently ended ones (:class:`RecentCalls`, a bounded memory:
the old call has usually ended by the time the page reconnects) or, with a fleet, the shared store while
its record lives. Only the same identity may resume a call: a kiosk its own calls, the shared token (or no
token) calls made without a kiosk token. Anything else starts with the start agent (no error: the page
replays the conversation either way).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

RESUME_HEADER = "X-Resume-Call"
REMEMBER_S = 900.0  # how long an ended call can be resumed
REMEMBER_MAX = 10_000


@dataclass(frozen=True)
class EndedCall:
    agent: str
    kiosk: str | None
    ended: float  # time.monotonic()


class RecentCalls:
    """The active agent of recently ended calls, by call id (bounded by count and age)."""

    def __init__(self, keep_s: float = REMEMBER_S, limit: int = REMEMBER_MAX) -> None:
        self.keep_s = keep_s
        self.limit = limit
        self._calls: OrderedDict[str, EndedCall] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def remember(self, call_id: str, agent: str, kiosk: str | None) -> None:
        self._calls.pop(call_id, None)
        self._calls[call_id] = EndedCall(agent, kiosk, time.monotonic())
        while len(self._calls) > self.limit:
            self._calls.popitem(last=False)

    def get(self, call_id: str) -> EndedCall | None:
        horizon = time.monotonic() - self.keep_s
        while self._calls:
            oldest = next(iter(self._calls.values()))
            if oldest.ended >= horizon:
                break
            self._calls.popitem(last=False)
        return self._calls.get(call_id)


def may_resume(owner_kiosk: str | None, kiosk: str | None) -> bool:
    """A kiosk resumes only its own calls; the shared token (or none) only calls made without a kiosk."""
    return owner_kiosk == kiosk
