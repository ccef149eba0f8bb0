"""The call budget: a cap per call (``--max-call SECONDS``) and call minutes per sliding hour
(``--max-call-minutes-per-hour N``), so a kiosk cannot run up the bill (a stuck call, a noisy lobby).

Pure logic with an injected monotonic clock. The kiosk asks :meth:`CallBudget.may_wake` before opening a
call (and :meth:`CallBudget.refusal` for the one line to log and show on ``/healthz``), tells the budget
:meth:`~CallBudget.call_started` / :meth:`~CallBudget.call_ended`, and hangs up at
:meth:`~CallBudget.deadline`: the earlier of the per-call cap and the moment the sliding hour runs out.

Time used is the sum of the overlaps of call intervals with ``[now - window, now]``, the open call counting
up to now. That sum is piecewise linear in time, so the moment it reaches the limit is found exactly by
walking its breakpoints (where ``t - window`` crosses an old call's start or end).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import ConfigError


@dataclass(frozen=True)
class BudgetSettings:
    max_call_s: float = 900.0
    """``--max-call``: hard cap on one call (default 15 min)."""
    max_minutes_per_hour: float | None = None
    """``--max-call-minutes-per-hour``: call minutes allowed in any sliding hour (None: no limit)."""
    min_call_s: float = 20.0
    """Do not wake when less than this much call time is left in the window (a call that must hang up
    seconds after answering serves nobody)."""
    window_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_call_s <= 0:
            raise ConfigError("--max-call must be > 0 seconds")
        if self.max_minutes_per_hour is not None and not 0 < self.max_minutes_per_hour <= self.window_s / 60:
            raise ConfigError("--max-call-minutes-per-hour must be > 0 and at most 60")
        if self.min_call_s < 0:
            raise ConfigError("min_call_s must be >= 0")

    @property
    def limit_s(self) -> float | None:
        return None if self.max_minutes_per_hour is None else self.max_minutes_per_hour * 60


class CallBudget:
    """Tracks call time in a sliding window (see module docstring). One call at a time."""

    def __init__(self, settings: BudgetSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or BudgetSettings()
        self._clock = clock
        self._calls: deque[tuple[float, float]] = deque()  # ended calls (start, end), oldest first
        self._open: float | None = None

    @property
    def in_call(self) -> bool:
        return self._open is not None

    def call_started(self) -> None:
        if self._open is not None:
            raise RuntimeError("call_started twice without call_ended")
        self._open = self._clock()

    def call_ended(self) -> float:
        """Close the open call; returns its length in seconds (0 if none was open)."""
        if self._open is None:
            return 0.0
        now = self._clock()
        start, self._open = self._open, None
        if now > start:
            self._calls.append((start, now))
        self._prune(now)
        return now - start

    def used_s(self, at: float | None = None) -> float:
        """Call seconds in the window ending at ``at`` (default now); the open call counts up to ``at``."""
        now = self._clock() if at is None else at
        lo = now - self.settings.window_s
        used = sum(max(0.0, min(e, now) - max(s, lo)) for s, e in self._calls)
        if self._open is not None:
            used += max(0.0, now - max(self._open, lo))
        return used

    def remaining_s(self) -> float | None:
        """Call seconds left in the sliding window now (None: no hourly limit)."""
        limit = self.settings.limit_s
        return None if limit is None else max(0.0, limit - self.used_s())

    def may_wake(self) -> bool:
        return self.refusal() is None

    def refusal(self) -> str | None:
        """Why the kiosk may not open a call now, as one line; None when it may."""
        limit = self.settings.limit_s
        if limit is None or self._open is not None:
            return None if self._open is None else "a call is already open"
        if limit - self.used_s() >= self.settings.min_call_s:
            return None
        wait = self.wake_allowed_at() - self._clock()
        return (
            f"call budget spent: {self.used_s() / 60:.1f} of {limit / 60:g} call minutes used in the last "
            f"{self.settings.window_s / 60:g} min; next call possible in {wait:.0f} s"
        )

    def wake_allowed_at(self) -> float:
        """The earliest monotonic time at which :meth:`may_wake` will be true (now, if it is)."""
        now = self._clock()
        limit = self.settings.limit_s
        if limit is None:
            return now
        target = limit - self.settings.min_call_s
        if self.used_s(now) <= target:
            return now
        # no open call here (refusal() handles that): used_s only falls, linearly between breakpoints
        w = self.settings.window_s
        points = sorted({t + w for s, e in self._calls for t in (s, e) if t + w > now})
        prev_t, prev_u = now, self.used_s(now)
        for t in points:
            u = self.used_s(t)
            if u <= target:
                return prev_t + (prev_u - target) / (prev_u - u) * (t - prev_t) if prev_u != u else t
            prev_t, prev_u = t, u
        return prev_t

    def deadline(self) -> float | None:
        """Monotonic time by which the open call must end (per-call cap or sliding-hour budget, whichever
        comes first); None with no open call."""
        if self._open is None:
            return None
        cap = self._open + self.settings.max_call_s
        limit = self.settings.limit_s
        if limit is None:
            return cap
        now = self._clock()
        if self.used_s(now) >= limit:
            return now
        # used_s(t) for t >= now, the call going on: linear between breakpoints; find where it hits limit
        w = self.settings.window_s
        points = sorted({t + w for s, e in self._calls for t in (s, e) if t + w > now} | {self._open + w})
        prev_t, prev_u = now, self.used_s(now)
        for t in [*(p for p in points if p < cap), cap]:
            u = self.used_s(t)
            if u >= limit:
                hit = prev_t + (limit - prev_u) / (u - prev_u) * (t - prev_t) if u != prev_u else t
                return min(cap, hit)
            prev_t, prev_u = t, u
        return cap

    def _prune(self, now: float) -> None:
        lo = now - self.settings.window_s
        while self._calls and self._calls[0][1] <= lo:
            self._calls.popleft()
