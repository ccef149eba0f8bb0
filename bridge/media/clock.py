"""The clock that paces file and null endpoints: real (the event loop's) or virtual (tests).

:class:`LoopClock` is ``time.monotonic`` with the running loop's timers. :class:`VirtualClock` is the same
interface over a time that moves only when a test calls :meth:`VirtualClock.advance`: sleepers and timers
then run in deadline order, each seeing ``now()`` equal to its own deadline, so pacing logic is tested
exactly and instantly instead of against the wall clock of a loaded machine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds, a sleep and a one-shot timer on the same time base."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer: ...


class LoopClock:
    """``time.monotonic`` and the running event loop's ``sleep`` / ``call_later`` (the loop uses the same clock)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, fn)


REAL_CLOCK = LoopClock()


_EPSILON = 1e-9  # deadlines computed by adding float steps land within this of the intended instant


class _VirtualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Time that moves only in :meth:`advance` (tests). Starts at ``start``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._seq = itertools.count()
        self._due: list[tuple[float, int, Callable[[], None], _VirtualTimer]] = []

    def now(self) -> float:
        return self.t

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        self.call_later(seconds, wake)
        await future

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        timer = _VirtualTimer()
        heapq.heappush(self._due, (self.t + max(0.0, delay), next(self._seq), fn, timer))
        return timer

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every sleeper and timer that falls due, in order, each
        at its own deadline (and letting woken tasks run before time moves on)."""
        end = self.t + seconds
        await _settle()
        while self._due and self._due[0][0] <= end + _EPSILON:
            due, _, fn, timer = heapq.heappop(self._due)
            if timer.cancelled:
                continue
            self.t = max(self.t, due)
            fn()
            await _settle()
        self.t = max(self.t, end)
        await _settle()

    async def advance_to(self, t: float) -> None:
        """Move time forward to ``t`` (see :meth:`advance`)."""
        await self.advance(max(0.0, t - self.t))


async def _settle(rounds: int = 5) -> None:
    """Let tasks woken by a timer run to their next await (a few loop turns)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
