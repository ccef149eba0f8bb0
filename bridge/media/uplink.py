"""How one connection takes the call's microphone: the :class:`Uplink` seam, and a bounded frame queue.

The microphone belongs to the station (:class:`bridge.media.mic.MicRouter`), which outlives connections;
each connection offers an :class:`Uplink` and the router hands it every frame while that connection is
the current one. Between connections frames are dropped and counted, never queued for later: a stale
utterance arriving after a reconnect confuses everyone.

An uplink that declares :attr:`Uplink.thread_safe` gets frames right in the capture thread (PortAudio's,
for a sound card): the WebRTC uplink encodes and sends there, so the event loop never wakes for it.
Otherwise the router hops each frame to the event loop first.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from bridge.media.base import FRAME_MS


class Uplink(abc.ABC):
    """One connection's way in for microphone frames (48 kHz mono int16, 20 ms)."""

    on_first_frame: Callable[[float], None] | None = None
    """Called on the event loop with the first-sample capture time of the first frame this uplink sent:
    the origin of the server's input-audio timeline for this connection."""

    @property
    def thread_safe(self) -> bool:
        """True when :meth:`send_frame` may be called in the capture thread (else only on the loop)."""
        return False

    @property
    def takes_bursts(self) -> bool:
        """True when held audio may be sent faster than real time, as one longer chunk to
        :meth:`send_frame` (WebSocket appends); False for paced media (WebRTC: one frame per 20 ms)."""
        return False

    @abc.abstractmethod
    def send_frame(self, pcm: np.ndarray, captured: float) -> None:
        """Take one frame (or, where :attr:`takes_bursts`, a longer chunk); ``captured`` is the monotonic time
        of its last sample. Never blocks or raises."""

    @abc.abstractmethod
    def pause(self, paused: bool) -> None:
        """Push-to-talk between turns: send nothing of the room (each uplink says what it sends instead)."""


T = TypeVar("T")


class FrameQueue(Generic[T]):
    """A bounded, drop-oldest queue of ``(pcm, tag)`` frames (the tag: a capture time, an index), filled and
    drained on the event loop."""

    def __init__(self, max_frames: int = 5) -> None:
        self.max_frames = max_frames
        self.dropped = 0
        self._items: deque[tuple[np.ndarray, T]] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, pcm: np.ndarray, tag: T) -> None:
        if self._closed:
            return
        if len(self._items) >= self.max_frames:
            self._items.popleft()
            self.dropped += 1
        self._items.append((pcm, tag))
        self._ready.set()

    async def get(self) -> tuple[np.ndarray, T]:
        """The oldest frame; raises :class:`EOFError` once closed and empty."""
        while not self._items:
            if self._closed:
                raise EOFError
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        return n

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __len__(self) -> int:
        return len(self._items)


def first_sample_time(captured: float) -> float:
    """A frame's first sample, from its last one's capture time."""
    return captured - FRAME_MS / 1000
