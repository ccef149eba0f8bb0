"""Errors where nothing may raise: count them, log the first, surface the fatal ones to their owner.

A PortAudio callback, the capture thread's uplink send, a per-packet receive handler and a paced clock's
timer run where an exception has nowhere useful to go: raising kills the audio thread or the loop
callback, and logging each one floods the log at 50-200 per second. Each of those places owns one
:class:`Faults`:

- :meth:`Faults.record` counts an error and logs the first with its traceback; later ones are summed
  into one line at most every ``summary_every_s`` seconds. The count goes on the ``stats`` line.
- :meth:`Faults.fatal` says "this part is dead" (the uplink stopped sending, the speaker clock died). The
  owner of the lifetime (the connection for an uplink, the station for a device) awaits
  :meth:`Faults.wait_fatal` in its TaskGroup and ends with a typed reason, so a supervisor can act on it
  instead of the call carrying on with a dead microphone.

Both are safe to call from any thread. ``wait_fatal`` binds to the running event loop when first awaited;
a fatal error recorded before that is returned at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable


class Faults:
    """Count, log the first, surface fatal ones (see module docstring). ``what`` names the place in logs."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        summary_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.ERROR,
    ) -> None:
        self.what = what
        self._level = level
        self.count = 0
        self.last: str = ""
        """The most recent error, as one line (for health endpoints and the stats line)."""
        self._log = logger
        self._every = summary_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._unlogged = 0
        self._next_summary = 0.0
        self._fatal: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[BaseException] | None = None

    def record(self, exc: BaseException | None = None, message: str = "") -> None:
        """One non-fatal error: counted; the first is logged with its traceback, later ones summed."""
        text = message or (f"{type(exc).__name__}: {exc}" if exc is not None else "error")
        with self._lock:
            self.count += 1
            self.last = text
            first = self.count == 1
            now = self._clock()
            summary = 0
            if first:
                self._next_summary = now + self._every
            else:
                self._unlogged += 1
                if now >= self._next_summary:
                    summary, self._unlogged = self._unlogged, 0
                    self._next_summary = now + self._every
        if first:
            self._log.log(self._level, "%s: %s (later ones are counted)", self.what, text, exc_info=exc)
        elif summary:
            self._log.warning("%s: %d more (%d in all); last: %s", self.what, summary, self.count, text)

    def fatal(self, exc: BaseException) -> None:
        """This part is dead: record it, and wake whoever awaits :meth:`wait_fatal` (any thread)."""
        self.record(exc)
        with self._lock:
            if self._fatal is not None:
                return
            self._fatal = exc
            loop, waiter = self._loop, self._waiter
        if loop is not None and waiter is not None:
            try:
                loop.call_soon_threadsafe(_resolve, waiter, exc)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    @property
    def failed(self) -> BaseException | None:
        """The fatal error, once there is one."""
        return self._fatal

    async def wait_fatal(self) -> BaseException:
        """Return the fatal error as soon as there is one (cancel to stop waiting)."""
        with self._lock:
            if self._fatal is not None:
                return self._fatal
            if self._waiter is None or self._waiter.done():
                self._loop = asyncio.get_running_loop()
                self._waiter = self._loop.create_future()
            waiter = self._waiter
        return await asyncio.shield(waiter)


def _resolve(waiter: asyncio.Future[BaseException], exc: BaseException) -> None:
    if not waiter.done():
        waiter.set_result(exc)
