"""Push-to-talk (``bridge run --ptt``): a key in the terminal starts and ends the user's turn.

Terminals report key presses, not releases, so the key toggles: the first press starts the turn (and
interrupts the assistant if it is speaking), the next press sends it. Space or Enter in a terminal (raw
keys, no echo); any line on a non-terminal stdin (so scripts and tests can drive it).

With ``turn_detection: null`` the client owns the turn (PROTOCOL.md 4.5):
- start: barge-in if the assistant is speaking (flush, cancel, truncate), ``input_audio_buffer.clear``, and
  the microphone starts flowing (between turns the uplink is paused: over WebSocket nothing is sent, over
  WebRTC silence keeps the RTP timeline going);
- end: ``input_audio_buffer.commit`` + ``response.create``; a turn under 100 ms is dropped instead
  (the server would answer ``input_audio_buffer_commit_empty``).

It runs for the whole call and acts on its current connection; a key pressed between connections is
ignored (said on the console).
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

from bridge.call.call import Call
from bridge.call.connection import Connection

log = logging.getLogger(__name__)

MIN_TURN_S = 0.1
KEYS = (" ", "\n", "\r")


class PushToTalk:
    def __init__(self, call: Call, clock: Any = time.monotonic) -> None:
        self.call = call
        self.console = call.record.console
        self.talking = False
        self._started = 0.0
        self._clock = clock
        self._paused: Connection | None = None

    def _connection(self) -> Connection | None:
        conn = self.call.connection
        if conn is not None and conn is not self._paused and not self.talking:
            conn.uplink.pause(True)  # a new connection starts between turns
            self._paused = conn
        return conn

    async def toggle(self) -> None:
        if not self.talking:
            await self.start()
        else:
            await self.end()

    async def start(self) -> None:
        conn = self._connection()
        if conn is None:
            self.console.line("ptt", "not connected; try again in a moment")
            return
        self.talking = True
        self._started = self._clock()
        await conn.runtime.interrupt()
        await conn.runtime.send({"type": "input_audio_buffer.clear"})
        conn.uplink.pause(False)
        self.console.line("ptt", "talking... press the key again to send")

    async def end(self) -> None:
        self.talking = False
        conn = self._connection()
        if conn is None:
            self.console.line("ptt", "the connection dropped; this turn is lost")
            return
        conn.uplink.pause(True)
        if self._clock() - self._started < MIN_TURN_S:
            await conn.runtime.send({"type": "input_audio_buffer.clear"})
            self.console.line("ptt", "too short (hold the turn for at least 0.1 s); dropped")
            return
        await conn.runtime.send({"type": "input_audio_buffer.commit"})
        await conn.runtime.send({"type": "response.create"})

    async def run(self) -> None:
        """Read keys until cancelled."""
        await self.call.connected.wait()
        self._connection()
        self.console.line("ptt", "press space (or Enter) to talk, again to send")
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
