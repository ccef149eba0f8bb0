"""Push-to-talk (``bridge run --ptt``): a key in the terminal starts and ends the user's turn.

Terminals report key presses, not releases, so the key toggles: the first press starts the turn (and
interrupts the assistant if it is speaking), the next press sends it. Space or Enter in a terminal (raw
keys, no echo); any line on a non-terminal stdin (so scripts and tests can drive it).

With ``turn_detection: null`` the client owns the turn (PROTOCOL.md 4.5):
- start: barge-in if the assistant is speaking (flush, cancel, truncate), ``input_audio_buffer.clear``, and
  over WebSocket the microphone starts flowing (it is held back between turns);
- end: ``input_audio_buffer.commit`` + ``response.create``; a turn under 100 ms is dropped instead
  (the server would answer ``input_audio_buffer_commit_empty``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

from bridge.link.ws import WebSocketLink
from bridge.session import Runtime

log = logging.getLogger(__name__)

MIN_TURN_S = 0.1
KEYS = (" ", "\n", "\r")


class PushToTalk:
    def __init__(self, runtime: Runtime, clock: Any = time.monotonic) -> None:
        self.runtime = runtime
        self.talking = False
        self._started = 0.0
        self._clock = clock
        if isinstance(runtime.link, WebSocketLink):
            runtime.link.uplink_paused = True

    def _uplink(self, on: bool) -> None:
        if isinstance(self.runtime.link, WebSocketLink):
            self.runtime.link.uplink_paused = not on

    async def toggle(self) -> None:
        if not self.talking:
            await self.start()
        else:
            await self.end()

    async def start(self) -> None:
        self.talking = True
        self._started = self._clock()
        await self.runtime.interrupt()
        await self.runtime.send({"type": "input_audio_buffer.clear"})
        self._uplink(True)
        self.runtime.console.line("ptt", "talking... press the key again to send")

    async def end(self) -> None:
        self.talking = False
        self._uplink(False)
        if self._clock() - self._started < MIN_TURN_S:
            await self.runtime.send({"type": "input_audio_buffer.clear"})
            self.runtime.console.line("ptt", "too short (hold the turn for at least 0.1 s); dropped")
            return
        await self.runtime.send({"type": "input_audio_buffer.commit"})
        await self.runtime.send({"type": "response.create"})

    async def run(self) -> None:
        """Read keys until cancelled."""
        self.runtime.console.line("ptt", "press space (or Enter) to talk, again to send")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue(64)
        fd = sys.stdin.fileno()
        tty_mode = sys.stdin.isatty()

        def readable() -> None:
            data = sys.stdin.read(1) if tty_mode else sys.stdin.readline()
            if not data:  # EOF: stop reading
                loop.remove_reader(fd)
                return
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(data)

        with _cbreak(fd, tty_mode):
            loop.add_reader(fd, readable)
            try:
                while True:
                    key = await queue.get()
                    if not tty_mode or key in KEYS:
                        await self.toggle()
            finally:
                loop.remove_reader(fd)


@contextlib.contextmanager
def _cbreak(fd: int, enabled: bool) -> Iterator[None]:
    """Keys arrive one by one without echo; the terminal is restored on exit, Ctrl-C included."""
    if not enabled:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
